#!/usr/bin/env python
"""Train a vision backbone, then ZTW and/or SDN exit heads on it (one run directory per seed)."""

from ee_rl.cli.train_vision import main

if __name__ == "__main__":
    main()
