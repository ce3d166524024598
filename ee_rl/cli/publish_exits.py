"""Publish a train_exits.py run's heads into an agent folder (heads file, training curves, README section):
``python scripts/publish_exits.py --run runs/exits/Pong_ztw_s0 --agent agents/Pong``."""

from __future__ import annotations

import argparse
import json

from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="the train_exits.py run directory (holds summary.json, tb/)")
    parser.add_argument("--agent", required=True, help="agent folder holding the expert.zip the heads were trained on")
    parser.add_argument("--out", default=None,
                        help="folder for the heads, curves and card section (default: the agent folder); e.g. "
                             "results/rl/<Game>/ablations for ZTW ablations")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.rl.publish_exits import publish_exits  # heavy imports after argument parsing

    print(json.dumps(publish_exits(args.run, args.agent, args.out)))


if __name__ == "__main__":
    main()
