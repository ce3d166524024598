"""ZTW's Figure 6 and the across-games summary from the committed per-game sweep tables: return vs inference time for
the eight games (ZTW / SDN / PBEE, the expert and the human score as lines, error bars = SE), and ``summary.csv``
(per game and method, the cheapest setting within 5 % of the expert's return):
``python scripts/plot_figure6.py --out-dir results/rl``.

A game without ``<agents>/<Game>/sweep.csv`` yet gets an empty panel marked "no sweep yet" and no summary rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main


def parse_args() -> argparse.Namespace:
    from ee_rl.rl.games import PAPER_GAMES

    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents-dir", default="agents", help="folder of the per-game agents (default %(default)s)")
    parser.add_argument("--games", nargs="+", default=list(PAPER_GAMES),
                        help="games in panel order (default: the paper's eight)")
    parser.add_argument("--methods", default="ztw,sdn,pbee", help="comma-separated methods (default %(default)s)")
    parser.add_argument("--out-dir", default="runs/figures",
                        help="where figure6.png and summary.csv go (default %(default)s; the committed ones are in "
                             "results/rl)")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.io import ensure_writable_dir
    from ee_rl.rl.figures import GamePanel, plot_return_vs_cost
    from ee_rl.rl.games import HUMAN_SCORES, display_name, rom_id
    from ee_rl.rl.summary import summarize_game, summary_markdown, write_summary_csv
    from ee_rl.rl.sweep import read_csv

    agents = Path(args.agents_dir)
    if not agents.is_dir():
        raise UserError(f"--agents-dir {args.agents_dir!r} is not a folder")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods needs at least one method, e.g. ztw,sdn,pbee")
    roms = list(dict.fromkeys(rom_id(game) for game in args.games))
    panels, summaries = [], []
    for rom in roms:
        name = display_name(rom)
        path = agents / name / "sweep.csv"
        rows = [r for r in read_csv(path) if r.is_full or r.method in methods] if path.is_file() else []
        panels.append(GamePanel(name, rows, HUMAN_SCORES.get(rom)))
        if rows:
            summaries.extend(summarize_game(name, rows, HUMAN_SCORES.get(rom)))
    if not summaries:
        raise UserError(f"none of {', '.join(display_name(r) for r in roms)} has a sweep.csv under {agents}/")
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir)
    figure = plot_return_vs_cost(panels, out_dir / "figure6.png", methods, columns=4)
    table = write_summary_csv(summaries, out_dir / "summary.csv")
    print(summary_markdown(summaries), end="")
    print(f"wrote {figure} and {table} ({sum(bool(p.rows) for p in panels)} of {len(panels)} games have sweeps)")


if __name__ == "__main__":
    main()
