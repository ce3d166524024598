"""Export a shipped agent's expert for rl-baselines3-zoo: ``python scripts/export_zoo.py --agent agents/Pong --out DIR``,
then ``python -m rl_zoo3.enjoy --algo ppo --env PongNoFrameskip-v4 -f DIR --exp-id 1 --no-render --deterministic``."""

from __future__ import annotations

import argparse

from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="agents/Pong", help="agent folder with expert.zip (default %(default)s)")
    parser.add_argument("--out", required=True, help="the zoo's log folder to write (rl_zoo3's -f)")
    parser.add_argument("--exp-id", type=int, default=1, help="experiment id of the exported run (default 1)")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.rl.zoo import export_zoo  # after argument parsing

    run = export_zoo(args.agent, args.out, args.exp_id)
    print(f"wrote {run}; play it with: python -m rl_zoo3.enjoy --algo ppo --env {run.name.rsplit('_', 1)[0]} "
          f"-f {args.out} --exp-id {args.exp_id} --no-render --deterministic")


if __name__ == "__main__":
    main()
