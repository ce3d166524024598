#!/usr/bin/env python
"""ZTW's Figure 3 from committed sweep tables: return vs inference time on Pong and Q*bert, ZTW / SDN / PBEE /"""

from ee_rl.cli.plot_figure3 import main

if __name__ == "__main__":
    main()
