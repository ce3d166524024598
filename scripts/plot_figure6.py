#!/usr/bin/env python
"""ZTW's Figure 6 and summary.csv from the committed per-game sweep tables (see ee_rl.cli.plot_figure6)."""

from ee_rl.cli.plot_figure6 import main

if __name__ == "__main__":
    main()
