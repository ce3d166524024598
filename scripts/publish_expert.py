#!/usr/bin/env python
"""Evaluate a trained PPO checkpoint and publish it as an agent folder (expert.zip, expert_eval.json,"""

from ee_rl.cli.publish_expert import main

if __name__ == "__main__":
    main()
