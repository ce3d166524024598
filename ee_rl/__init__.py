"""ee_rl: early-exit inference for trained policies and classifiers.

The shared early-exit machinery lives in :mod:`ee_rl.core`; :mod:`ee_rl.rl` applies it to Atari PPO
experts and :mod:`ee_rl.vision` to image classifiers.
"""

__version__ = "0.1.0"
