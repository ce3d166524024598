"""Compare early-exit methods on one sweep: per method the cheapest setting within a tolerance of the expert, and
method A − method B at matched cost as paired per-game differences ± SE:
``python scripts/compare_methods.py --sweep agents/Qbert/sweep.json``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="agents/Pong/sweep.json",
                        help="sweep.json written by scripts/sweep.py (per-game returns; default %(default)s)")
    parser.add_argument("--a", default="ztw", help="method A (default %(default)s)")
    parser.add_argument("--b", default="sdn", help="method B (default %(default)s)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="tolerated return drop as a fraction of the expert's mean return (default %(default)s)")
    parser.add_argument("--card", default=None, metavar="AGENT_DIR",
                        help="also write the comparison as a section of AGENT_DIR/README.md")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    if not 0 <= args.tolerance < 1:
        raise UserError(f"--tolerance must be a fraction in [0, 1), got {args.tolerance}")
    if args.card is not None and not (Path(args.card) / "README.md").is_file():
        raise UserError(f"--card must be an agent folder with a README.md, got {args.card!r}")
    from ee_rl.rl.compare import comparison_section
    from ee_rl.rl.sweep import read_json

    command = shlex.join(["python", "scripts/compare_methods.py", *sys.argv[1:]])
    text = comparison_section(read_json(args.sweep), args.a, args.b, args.tolerance, command)
    print(text)
    if args.card is not None:
        from ee_rl.io import atomic_write_text
        from ee_rl.rl.agent_card import upsert_section

        card = Path(args.card) / "README.md"
        atomic_write_text(card, upsert_section(card.read_text(), "comparison", text))
        print(f"wrote the comparison section of {card}")


if __name__ == "__main__":
    main()
