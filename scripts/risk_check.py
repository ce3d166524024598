#!/usr/bin/env python
"""Does the tolerance hold? Violation frequency and cost of SelfXit's thresholds with and without a guarantee."""

from ee_rl.cli.risk_check import main

if __name__ == "__main__":
    main()
