"""The grid's table: per game and method, the cheapest setting within 5 % of the expert's return in each seed's
sweep, and its inference time as mean ± SE across seeds (ZTW Figure 6's quantity)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from ee_rl.core.metrics import mean_se
from ee_rl.io import atomic_write_json, atomic_write_text
from ee_rl.rl.games import display_name
from ee_rl.rl.grid.layout import GridLayout
from ee_rl.rl.stages import RETURN_TOLERANCE
from ee_rl.rl.summary import summarize_game
from ee_rl.rl.sweep import read_json

COLUMNS = ("game", "method", "seeds", "cost_mean", "cost_se", "return_mean", "expert_return_mean", "costs")


def summary_rows(layout: GridLayout, games: Sequence[str], methods: Sequence[str],
                 seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per game and method with at least one finished sweep among ``seeds``: per seed, Figure 6's cheapest
    setting within :data:`~ee_rl.rl.stages.RETURN_TOLERANCE` of the expert's return
    (:func:`ee_rl.rl.summary.summarize_game`; the full policy, cost 1, always qualifies), then its inference time's
    mean ± SE across seeds, the mean return there and each seed's cost."""
    rows = []
    for game in games:
        name = display_name(game)
        per_method: dict[str, list[tuple[int, Any]]] = {m: [] for m in methods}
        for seed in seeds:
            path = layout.sweep_json(game, seed)
            if path.is_file():
                for summary in summarize_game(name, read_json(path), fraction=RETURN_TOLERANCE):
                    if summary.method in per_method and summary.cost is not None:
                        per_method[summary.method].append((seed, summary))
        for method, chosen in per_method.items():
            if not chosen:
                continue
            cost, se = mean_se([s.cost for _, s in chosen])
            rows.append({
                "game": name,
                "method": method,
                "seeds": len(chosen),
                "cost_mean": round(float(cost), 6),
                "cost_se": None if se is None else round(float(se), 6),
                "return_mean": round(float(mean_se([s.return_at_cost for _, s in chosen])[0]), 6),
                "expert_return_mean": round(float(mean_se([s.expert_return for _, s in chosen])[0]), 6),
                "costs": " ".join(f"s{seed}:{100 * s.cost:.1f}%" for seed, s in chosen),
            })
    return rows


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The table as Markdown."""
    percent = f"{100 * RETURN_TOLERANCE:g} %"
    lines = [
        f"| game | method | seeds | cheapest within {percent} of the expert: inference time (mean ± SE) | "
        "return (mean) | expert's return | cost per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        se = "n/a" if r["cost_se"] is None else f"{100 * r['cost_se']:.1f}"
        lines.append(f"| {r['game']} | {r['method']} | {r['seeds']} | {100 * r['cost_mean']:.1f} % ± {se} | "
                     f"{r['return_mean']:.2f} | {r['expert_return_mean']:.2f} | {r['costs']} |")
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
