#!/usr/bin/env python
"""Train (or resume) the PPO expert on an Atari game: ``python scripts/train_policy.py --env Pong``."""

from ee_rl.cli.train_policy import main

if __name__ == "__main__":
    main()
