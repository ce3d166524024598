#!/usr/bin/env python
"""Train early exits (ICs) on a frozen PPO expert by behavioural cloning:"""

from ee_rl.cli.train_exits import main

if __name__ == "__main__":
    main()
