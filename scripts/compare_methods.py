#!/usr/bin/env python
"""Compare early-exit methods on one sweep: per method the cheapest setting within a tolerance of the expert, and"""

from ee_rl.cli.compare_methods import main

if __name__ == "__main__":
    main()
