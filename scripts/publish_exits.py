#!/usr/bin/env python
"""Publish a train_exits.py run's heads into an agent folder (heads file, training curves, README section):"""

from ee_rl.cli.publish_exits import main

if __name__ == "__main__":
    main()
