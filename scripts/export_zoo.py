#!/usr/bin/env python
"""Export a shipped agent's expert for rl-baselines3-zoo: ``python scripts/export_zoo.py --agent agents/Pong --out DIR``,"""

from ee_rl.cli.export_zoo import main

if __name__ == "__main__":
    main()
