"""ZTW's Figure 3 from committed sweep tables: return vs inference time on Pong and Q*bert, ZTW / SDN / PBEE /
SelfXit, the expert and the average human score as lines, error bars = standard errors:
``python scripts/plot_figure3.py --out results/rl/figure3.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main

DEFAULT_SWEEPS = ("Pong=agents/Pong/sweep.csv", "Qbert=agents/Qbert/sweep.csv")


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="append", default=None, metavar="GAME=PATH",
                        help=f"a game's sweep.csv, repeatable (default: {' '.join(DEFAULT_SWEEPS)})")
    parser.add_argument("--methods", default="ztw,sdn,pbee,selfxit", help="comma-separated methods to draw")
    parser.add_argument("--out", default="runs/figures/figure3.png", help="PNG path (default %(default)s)")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.io import ensure_writable_dir
    from ee_rl.rl.figures import GamePanel, plot_return_vs_cost
    from ee_rl.rl.games import HUMAN_SCORES, display_name, rom_id
    from ee_rl.rl.sweep import read_csv

    specs = []
    for spec in args.sweep or DEFAULT_SWEEPS:
        game, sep, path = spec.partition("=")
        if not sep or not game or not path:
            raise UserError(f"--sweep must be GAME=PATH (e.g. Qbert=agents/Qbert/sweep.csv), got {spec!r}")
        specs.append((rom_id(game), path))
    methods = [m for m in args.methods.split(",") if m.strip()]
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png path, got {args.out!r}")
    panels = [GamePanel(display_name(rom), read_csv(path), HUMAN_SCORES.get(rom)) for rom, path in specs]
    ensure_writable_dir(out.parent)
    print(f"wrote {plot_return_vs_cost(panels, out, methods)}")


if __name__ == "__main__":
    main()
