"""The ``sweep`` section of an agent folder's README: the sweep's plot, its table and the budget selections.

``scripts/sweep.py --out agents/<Game>`` writes ``sweep.csv`` / ``sweep.json`` / ``sweep.png`` there and, because
the folder is an agent's (it holds ``expert.zip``), rewrites this section of its ``README.md`` so the card shows the
numbers of the files beside it (other sections are kept, see :mod:`ee_rl.rl.agent_card`).
"""

from __future__ import annotations

from pathlib import Path

from ee_rl.io import atomic_write_text
from ee_rl.rl.agent_card import upsert_section
from ee_rl.rl.games import display_name
from ee_rl.rl.sweep.rows import SweepResult, SweepRow
from ee_rl.rl.sweep.selection import expert_return, select_by_budget, select_by_max_drop

SECTION = "sweep"


def _row_cells(r: SweepRow) -> str:
    rates = " / ".join(f"{100 * x:.1f}" for x in r.exit_rates)
    return (
        f"| {r.method} | {r.rule} | {r.return_mean:+.2f} ± {r.return_std:.2f} | {100 * r.inference_time:.1f} % "
        f"| {100 * r.agreement:.1f} % | {r.us_per_decision:.0f} | {rates} |"
    )


def _chosen(method: str, r: SweepRow | None, none: str) -> str:
    if r is None:
        return f"- **{method}**: {none}"
    return (
        f"- **{method}**: {r.rule}, return {r.return_mean:+.2f} ± {r.return_std:.2f} at "
        f"{100 * r.inference_time:.1f} % of the expert's FLOPs ({r.us_per_decision:.0f} µs per decision)"
    )


def _selection_lines(rows: list[SweepRow], budget: float | None, max_drop: float | None) -> list[str]:
    lines = []
    if max_drop is not None:
        reference = expert_return(rows)
        lines.append(f"Cheapest setting within {max_drop:g} point(s) of the expert's return ({reference:+.2f}):")
        lines += [_chosen(m, r, "no setting") for m, r in select_by_max_drop(rows, max_drop).items()] + [""]
    if budget is not None:
        lines.append(f"Highest threshold costing at most {100 * budget:g} % of the expert's FLOPs:")
        lines += [_chosen(m, r, "no setting fits") for m, r in select_by_budget(rows, budget).items()] + [""]
    return lines


def sweep_section(result: SweepResult, command: str, budget: float | None = None, max_drop: float | None = None) -> str:
    """Markdown of the sweep: plot, how it was run, the selections asked for, and one table row per setting."""
    s = result.settings
    rows = list(result.rows)
    num_ics = len(rows[0].exit_rates) - 1 if rows else 0
    exits = " / ".join([f"IC {m + 1}" for m in range(num_ics)] + ["expert head"])
    seeds = f"{s.seed}…{s.seed + min(s.n_envs, s.episodes) - 1}"
    lines = [
        "## Return vs compute (sweep)",
        "",
        "![return vs inference time](sweep.png)",
        "",
        f"`{command}` — {s.episodes} full games per setting, sticky actions p = {s.sticky_prob:g}, argmax actions, "
        f"env seeds {seeds} (the same games for every setting), {s.torch_threads} torch thread(s), "
        f"{s.workers} setting(s) at a time, {result.wall_time_s / 60:.0f} min. Inference time = mean FLOPs per "
        "decision / the expert's, from the exits really taken; agreement = decisions whose action equals the "
        "expert's on the same state; µs = wall-clock of one batched decision of the "
        f"{min(s.n_envs, s.episodes)} envs"
        + (" (measured while other settings ran on the other cores)" if s.workers > 1 else "")
        + ". Files: `sweep.csv`, `sweep.json`.",
        "",
        *_selection_lines(rows, budget, max_drop),
        f"| method | rule | return | inference time | agreement | µs / decision | exit rates % ({exits}) |",
        "|---|---|---|---|---|---|---|",
        *[_row_cells(r) for r in rows],
    ]
    return "\n".join(lines) + "\n"


def write_sweep_section(
    agent_dir: str | Path, result: SweepResult, command: str, budget: float | None = None,
    max_drop: float | None = None,
) -> Path:
    """Add (or replace) the ``sweep`` section of ``agent_dir/README.md``, atomically; returns the README's path."""
    path = Path(agent_dir) / "README.md"
    text = path.read_text() if path.is_file() else f"# {display_name(result.game)} agent\n"
    return atomic_write_text(path, upsert_section(text, SECTION, sweep_section(result, command, budget, max_drop)))
