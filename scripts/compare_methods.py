#!/usr/bin/env python
"""Compare early-exit methods on one sweep: per method the cheapest setting within a tolerance of the expert, and
method A − method B at matched cost as paired per-game differences ± SE:
``python scripts/compare_methods.py --sweep agents/Qbert/sweep.json``.
"""

from __future__ import annotations

import argparse

from ee_rl.errors import UserError, cli_main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="agents/Pong/sweep.json",
                        help="sweep.json written by scripts/sweep.py (per-game returns; default %(default)s)")
    parser.add_argument("--a", default="ztw", help="method A (default %(default)s)")
    parser.add_argument("--b", default="sdn", help="method B (default %(default)s)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="tolerated return drop as a fraction of the expert's mean return (default %(default)s)")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    if not 0 <= args.tolerance < 1:
        raise UserError(f"--tolerance must be a fraction in [0, 1), got {args.tolerance}")
    from ee_rl.rl.compare import (
        cheapest_within_fraction,
        format_paired_table,
        paired_at_matched_cost,
        read_sweep_json,
        return_se,
    )
    from ee_rl.rl.sweep import expert_return

    rows = read_sweep_json(args.sweep)
    comparisons = paired_at_matched_cost(rows, args.a, args.b)
    reference = expert_return(rows)
    print(f"Cheapest setting with a mean return ≥ {100 * (1 - args.tolerance):g} % of the expert's ({reference:.1f}):")
    for method, row in cheapest_within_fraction(rows, args.tolerance).items():
        if row is None:
            print(f"- {method}: no setting")
            continue
        se = return_se(row)
        print(f"- {method}: {row.rule}, {100 * row.inference_time:.1f} % of the expert's FLOPs, return "
              f"{row.return_mean:.1f} ± {se if se is not None else float('nan'):.1f} (SE, {row.episodes} games)")
    print()
    print(format_paired_table(comparisons))


if __name__ == "__main__":
    main()
