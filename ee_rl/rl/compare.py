"""Comparing early-exit methods on a sweep: standard errors, the cheapest setting within a relative tolerance of the
expert, and paired per-game differences between two methods at matched cost.

Every setting of a sweep plays the same game slots (same env seeds and quota, returns in slot order, see
:class:`ee_rl.rl.evaluate.EpisodeStats`), so two settings' returns can be differenced game by game; on games as
noisy as Q*bert's (per-game std ~2,000 points) only such paired differences can separate methods.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from ee_rl.core.metrics import mean_se, paired_difference, se_from_population_std
from ee_rl.errors import UserError
from ee_rl.rl.sweep import SweepRow, expert_return, select_by_max_drop


def return_se(row: SweepRow) -> float | None:
    """Standard error of the row's mean return: from its per-game returns if it has them, else from its std."""
    if row.returns:
        return mean_se(list(row.returns))[1]
    return se_from_population_std(row.return_std, row.episodes)


def cheapest_within_fraction(rows: Sequence[SweepRow], fraction: float = 0.05) -> dict[str, SweepRow | None]:
    """Per method, the cheapest setting whose mean return is ≥ (1 − ``fraction``) × the expert's mean return.

    The tolerance is relative to the expert's absolute return (5 % of 8,000 points on Q*bert, of 17 on Pong); for a
    game where the expert scores below zero it is ``fraction × |expert|`` below the expert all the same.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise UserError(f"the tolerated return drop must be a fraction in [0, 1) of the expert's return, got {fraction!r}")
    return select_by_max_drop(rows, fraction * abs(expert_return(rows)))


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Method ``a``'s setting against method ``b``'s setting of the closest inference time, on the same games."""

    a: SweepRow
    b: SweepRow
    diff_mean: float  # mean over games of return(a) - return(b)
    diff_se: float | None
    games: int

    @property
    def cost_gap(self) -> float:
        """Inference time of ``a`` minus that of ``b`` (fractions of the expert's FLOPs)."""
        return self.a.inference_time - self.b.inference_time


def paired_at_matched_cost(rows: Sequence[SweepRow], a: str = "ztw", b: str = "sdn") -> list[PairedComparison]:
    """For each early-exit setting of method ``a``, the paired per-game difference to ``b``'s setting whose
    inference time is closest (ties: the cheaper one), in order of ``a``'s inference time.

    Both rows need their per-game returns (``sweep.json``, not the CSV) from the same game slots.
    """
    mine = sorted((r for r in rows if r.method == a and not r.is_full), key=lambda r: (r.inference_time, r.threshold))
    theirs = [r for r in rows if r.method == b and not r.is_full]
    if not mine or not theirs:
        raise UserError(f"the sweep needs early-exit rows of both {a!r} and {b!r} to compare them")
    comparisons = []
    for row in mine:
        match = min(theirs, key=lambda r: (abs(r.inference_time - row.inference_time), r.inference_time))
        if not row.returns or len(row.returns) != len(match.returns):
            raise UserError(
                f"{row.rule} and {match.rule} need per-game returns of the same games: read a sweep.json (not the CSV) "
                "written with returns in game-slot order (re-run the sweep if it is older)"
            )
        mean, se = paired_difference(row.returns, match.returns)
        comparisons.append(PairedComparison(row, match, float(mean), se, len(row.returns)))
    return comparisons


def _fmt_se(value: float | None, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_paired_table(comparisons: Sequence[PairedComparison], digits: int = 1) -> str:
    """Markdown: one line per comparison, both settings' cost and return ± SE, then the paired difference ± SE."""
    if not comparisons:
        return ""
    a, b = comparisons[0].a.method.upper(), comparisons[0].b.method.upper()
    lines = [
        f"| {a} setting | cost | return ± SE | {b} setting | cost | return ± SE | {a} − {b} (paired) ± SE | games |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.a.rule} | {100 * c.a.inference_time:.1f} % | {c.a.return_mean:.{digits}f} ± "
            f"{_fmt_se(return_se(c.a), digits)} | {c.b.rule} | {100 * c.b.inference_time:.1f} % | "
            f"{c.b.return_mean:.{digits}f} ± {_fmt_se(return_se(c.b), digits)} | {c.diff_mean:+.{digits}f} ± "
            f"{_fmt_se(c.diff_se, digits)} | {c.games} |"
        )
    return "\n".join(lines)


def comparison_section(rows: Sequence[SweepRow], a: str = "ztw", b: str = "sdn", fraction: float = 0.05,
                       command: str | None = None) -> str:
    """Markdown for an agent card: each method's cheapest setting within ``fraction`` of the expert's mean return
    (with its cost and return ± SE), then ``a`` − ``b`` at matched cost as paired per-game differences."""
    reference = expert_return(rows)
    lines = ["## Methods compared on the same games", ""]
    if command:
        lines += [f"`{command}` (from `sweep.json`: the per-game returns of every setting, same game slots).", ""]
    lines.append(f"Cheapest setting with a mean return ≥ {100 * (1 - fraction):g} % of the expert's "
                 f"({reference:.1f} on these games):")
    lines.append("")
    for method, row in cheapest_within_fraction(rows, fraction).items():
        if row is None:
            lines.append(f"- **{method}**: no setting")
            continue
        lines.append(f"- **{method}**: {row.rule} — {100 * row.inference_time:.1f} % of the expert's FLOPs, return "
                     f"{row.return_mean:.1f} ± {_fmt_se(return_se(row), 1)} (SE, {row.episodes} games)")
    lines += ["", f"{a.upper()} − {b.upper()} at matched cost (each {a} setting against the {b} setting of the "
              "closest inference time), paired game by game:", "",
              format_paired_table(paired_at_matched_cost(rows, a, b))]
    return "\n".join(lines) + "\n"
