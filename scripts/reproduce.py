#!/usr/bin/env python
"""Run (or continue) a game's whole pipeline: ``python scripts/reproduce.py --env Seaquest``."""

from ee_rl.cli.reproduce import main

if __name__ == "__main__":
    main()
