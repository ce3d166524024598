#!/usr/bin/env python
"""Threshold-vs-return sweep of an early-exit agent on full games: ``python scripts/sweep.py --env Pong``."""

from ee_rl.cli.sweep import main

if __name__ == "__main__":
    main()
