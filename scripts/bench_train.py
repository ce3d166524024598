#!/usr/bin/env python
"""Print PPO training speed (env steps/s) of stock SB3 vs ee_rl's setup, measured in one run."""

from ee_rl.cli.bench_train import main

if __name__ == "__main__":
    main()
