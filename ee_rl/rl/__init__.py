"""Atari environments, PPO experts and early-exit policies."""
