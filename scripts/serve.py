#!/usr/bin/env python
"""Serve an early-exit model over HTTP and WebSocket; each item's answer is streamed as soon as its exit fires."""

from ee_rl.cli.serve import main

if __name__ == "__main__":
    main()
