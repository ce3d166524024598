"""The across-games summary of ZTW's Figure 6: per game and method, the cheapest setting whose mean return stays
within 5 % of the expert's, from each game's committed ``sweep.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ee_rl.errors import UserError
from ee_rl.io import atomic_path
from ee_rl.rl.compare import cheapest_within_fraction, return_se
from ee_rl.rl.sweep import SweepRow

#: Columns of ``summary.csv``, in order.
SUMMARY_COLUMNS = (
    "game", "expert_return", "expert_se", "human", "method", "cheapest_cost_within_5pct", "return_at_that_cost",
    "episodes",
)


@dataclasses.dataclass(frozen=True)
class GameMethodSummary:
    """One method on one game: the expert's mean return (± SE) on the sweep's games, the human score (None: no
    cited value), and the cheapest setting within the tolerance (``cost``/``return_at_cost`` None: no setting
    of the method keeps the return). ``episodes``: games per setting of that method.
    """

    game: str
    expert_return: float
    expert_se: float | None
    human: float | None
    method: str
    cost: float | None
    return_at_cost: float | None
    episodes: int

    def as_csv_row(self) -> dict[str, str]:
        """The row as written to ``summary.csv`` (empty cells for missing values)."""
        def cell(value: float | None, digits: int) -> str:
            return "" if value is None else f"{value:.{digits}f}"

        return {
            "game": self.game,
            "expert_return": cell(self.expert_return, 2),
            "expert_se": cell(self.expert_se, 2),
            "human": cell(self.human, 1),
            "method": self.method,
            "cheapest_cost_within_5pct": cell(self.cost, 4),
            "return_at_that_cost": cell(self.return_at_cost, 2),
            "episodes": str(self.episodes),
        }


def summarize_game(
    game: str, rows: Sequence[SweepRow], human: float | None = None, fraction: float = 0.05
) -> list[GameMethodSummary]:
    """One :class:`GameMethodSummary` per early-exit method of ``rows`` (in order of appearance), the cheapest
    setting whose mean return is ≥ (1 − ``fraction``) × the expert's mean return on the same games.
    """
    full = next((r for r in rows if r.is_full), None)
    if full is None:
        raise UserError(f"{game}'s sweep has no full-policy row (threshold inf) to compare returns with")
    chosen = cheapest_within_fraction(rows, fraction)
    summaries = []
    for method in dict.fromkeys(r.method for r in rows if not r.is_full):
        row = chosen.get(method)
        episodes = min(r.episodes for r in rows if r.method == method and not r.is_full)
        summaries.append(GameMethodSummary(
            game=game, expert_return=full.return_mean, expert_se=return_se(full), human=human, method=method,
            cost=None if row is None else row.inference_time,
            return_at_cost=None if row is None else row.return_mean, episodes=episodes,
        ))
    return summaries


def write_summary_csv(summaries: Sequence[GameMethodSummary], path: str | Path) -> Path:
    """Write ``summary.csv`` (:data:`SUMMARY_COLUMNS`) atomically; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for summary in summaries:
            writer.writerow(summary.as_csv_row())
    return Path(path)


def summary_markdown(summaries: Sequence[GameMethodSummary]) -> str:
    """The summary as a Markdown table (costs in % of the expert's FLOPs) for the README."""
    lines = [
        "| game | expert return (± SE) | human | method | cheapest cost within 5 % | return there | games |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        expert = f"{s.expert_return:,.1f}" + ("" if s.expert_se is None else f" ± {s.expert_se:,.1f}")
        human = "–" if s.human is None else f"{s.human:,.1f}"
        cost = "none" if s.cost is None else f"{100 * s.cost:.1f} %"
        ret = "–" if s.return_at_cost is None else f"{s.return_at_cost:,.1f}"
        lines.append(f"| {s.game} | {expert} | {human} | {s.method.upper()} | {cost} | {ret} | {s.episodes} |")
    return "\n".join(lines) + "\n"
