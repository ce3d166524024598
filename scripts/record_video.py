#!/usr/bin/env python
"""Record one full game of the early-exit agent with an exit overlay:"""

from ee_rl.cli.record_video import main

if __name__ == "__main__":
    main()
