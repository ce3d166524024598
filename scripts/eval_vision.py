#!/usr/bin/env python
"""Evaluate SDN, PBEE and ZTW over one or more seeds and write the report (budget table CSV/Markdown, paired"""

from ee_rl.cli.eval_vision import main

if __name__ == "__main__":
    main()
