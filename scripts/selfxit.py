#!/usr/bin/env python
"""SelfXit: label-free exits, calibrated per-exit thresholds from a tolerance, exit-subset selection."""

from ee_rl.cli.selfxit import main

if __name__ == "__main__":
    main()
