#!/usr/bin/env python
"""Load-test a running early-exit server: N concurrent WebSocket clients, each answer checked against the offline model."""

from ee_rl.cli.load_test import main

if __name__ == "__main__":
    main()
