"""The grid's table: per game and method, the cheapest setting within 5 % of the expert's return in each seed's
sweep, and its inference time as mean ± SE across seeds (ZTW Figure 6's quantity)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from ee_rl.core.metrics import mean_se
from ee_rl.io import atomic_write_json, atomic_write_text
from ee_rl.rl.compare import cheapest_within_fraction
from ee_rl.rl.games import display_name
from ee_rl.rl.grid.layout import GridLayout
from ee_rl.rl.stages import RETURN_TOLERANCE
from ee_rl.rl.sweep import read_json

COLUMNS = ("game", "method", "seeds", "cost_mean", "cost_se", "return_mean", "expert_return_mean", "settings")


def summary_rows(layout: GridLayout, games: Sequence[str], methods: Sequence[str],
                 seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per game and method with at least one finished sweep among ``seeds``: the cheapest setting within
    :data:`~ee_rl.rl.stages.RETURN_TOLERANCE` of the expert's return per seed (the full policy, cost 1, always
    qualifies), its inference time's mean ± SE across seeds, the mean return of those settings and their rules."""
    rows = []
    for game in games:
        chosen: dict[str, list[tuple[int, Any]]] = {m: [] for m in methods}
        experts = []
        for seed in seeds:
            path = layout.sweep_json(game, seed)
            if not path.is_file():
                continue
            sweep_rows = read_json(path)
            experts.append(next(r for r in sweep_rows if r.is_full).return_mean)
            picked = cheapest_within_fraction(sweep_rows, RETURN_TOLERANCE)
            for method in methods:
                if picked.get(method) is not None:
                    chosen[method].append((seed, picked[method]))
        for method in methods:
            if not chosen[method]:
                continue
            cost, se = mean_se([r.inference_time for _, r in chosen[method]])
            rows.append({
                "game": display_name(game),
                "method": method,
                "seeds": len(chosen[method]),
                "cost_mean": round(float(cost), 6),
                "cost_se": None if se is None else round(float(se), 6),
                "return_mean": round(float(mean_se([r.return_mean for _, r in chosen[method]])[0]), 6),
                "expert_return_mean": round(float(mean_se(experts)[0]), 6),
                "settings": " ".join(f"s{seed}:{r.rule}" for seed, r in chosen[method]),
            })
    return rows


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The table as Markdown."""
    percent = f"{100 * RETURN_TOLERANCE:g} %"
    lines = [
        f"| game | method | seeds | cheapest within {percent} of the expert: inference time (mean ± SE) | "
        "return (mean) | expert's return | setting per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        se = "n/a" if r["cost_se"] is None else f"{100 * r['cost_se']:.1f}"
        lines.append(f"| {r['game']} | {r['method']} | {r['seeds']} | {100 * r['cost_mean']:.1f} % ± {se} | "
                     f"{r['return_mean']:.2f} | {r['expert_return_mean']:.2f} | {r['settings']} |")
    return "\n".join(lines) + "\n"


def write_summary(layout: GridLayout, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Write ``summary.csv``, ``summary.md`` and ``summary.json`` atomically; their paths."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return [
        atomic_write_text(layout.summary("csv"), buffer.getvalue()),
        atomic_write_text(layout.summary("md"), format_summary(rows)),
        atomic_write_json(layout.summary("json"), {"tolerance": RETURN_TOLERANCE, "rows": list(rows)}),
    ]
