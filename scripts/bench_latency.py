#!/usr/bin/env python
"""Latency of one early-exit decision on SB3's NatureCNN (Atari, 4x84x84 uint8): full network vs answering at IC 1/2."""

from ee_rl.cli.bench_latency import main

if __name__ == "__main__":
    main()
