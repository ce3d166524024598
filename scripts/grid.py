#!/usr/bin/env python
"""Games × methods × seeds on one machine or a Ray cluster: ``python scripts/grid.py --games Pong --seeds 0 1``."""

from ee_rl.cli.grid import main

if __name__ == "__main__":
    main()
