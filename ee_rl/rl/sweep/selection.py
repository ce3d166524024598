"""Choosing a sweep's operating point per method: within a FLOPs budget, or the cheapest within a return drop.

Both apply the core's selection rules (:mod:`ee_rl.core.metrics`) to the rows seen as operating points (cost =
inference time, score = mean return).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ee_rl.core import OperatingPoint, select_cheapest_within_drop, select_within_budget
from ee_rl.errors import UserError
from ee_rl.rl.sweep.rows import SweepRow, rows_by_method


def _choose(
    rows: Iterable[SweepRow], select: Callable[[list[OperatingPoint]], OperatingPoint | None]
) -> SweepRow | None:
    """Apply a core selection rule to rows seen as operating points (cost = inference time, score = return)."""
    pairs = [(OperatingPoint(r.threshold, r.inference_time, r.return_mean, r.exit_rates), r) for r in rows]
    point = select([p for p, _ in pairs])
    return next((r for p, r in pairs if p is point), None)


def select_by_budget(rows: Sequence[SweepRow], budget: float) -> dict[str, SweepRow | None]:
    """Per method, the paper's rule: the highest threshold whose measured inference time ≤ ``budget``.

    ``budget`` is a fraction of the expert's FLOPs (0.5 = 50 %). None for a method no setting fits.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise UserError(f"--budget must be a positive fraction of the expert's FLOPs (e.g. 0.5), got {budget!r}")
    return {
        method: _choose(group, lambda points: select_within_budget(points, float(budget)))
        for method, group in rows_by_method(rows).items()
    }


def expert_return(rows: Sequence[SweepRow], method: str | None = None) -> float:
    """Mean return of the full policy (the expert) in ``rows``: ``method``'s own full row, if given and present.

    Rows appended by other tools (``selfxit.py`` adds one ``selfxit`` row) have no full row of their own; the
    expert is the same for every method, so they are compared with the sweep's.
    """
    full = [r for r in rows if r.is_full and (method is None or r.method == method)]
    full = full or [r for r in rows if r.is_full]
    if not full:
        raise UserError("the sweep has no full-policy row (threshold inf) to compare returns with")
    return full[0].return_mean


def select_by_max_drop(rows: Sequence[SweepRow], max_drop: float) -> dict[str, SweepRow | None]:
    """Per method, the cheapest setting whose mean return is within ``max_drop`` points of the expert's.

    The expert's return is the method's full-policy row (so the full policy itself always qualifies).
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise UserError(f"--max-drop must be a non-negative number of points (e.g. 1.0), got {max_drop!r}")
    chosen: dict[str, SweepRow | None] = {}
    for method, group in rows_by_method(rows).items():
        reference = expert_return(rows, method)
        chosen[method] = _choose(group, lambda points: select_cheapest_within_drop(points, reference, float(max_drop)))
    return chosen


def selection_summary(
    rows: Sequence[SweepRow], budget: float | None = None, max_drop: float | None = None
) -> dict[str, Any]:
    """JSON-ready budget selections: per method the chosen row (or None) for ``budget`` and ``max_drop``."""
    out: dict[str, Any] = {}
    if budget is not None:
        out["budget"] = {
            "budget": budget,
            "selected": {m: (r.to_dict() if r else None) for m, r in select_by_budget(rows, budget).items()},
        }
    if max_drop is not None:
        out["max_drop"] = {
            "max_drop": max_drop,
            "expert_return": expert_return(rows),
            "selected": {m: (r.to_dict() if r else None) for m, r in select_by_max_drop(rows, max_drop).items()},
        }
    return out


def format_selection(rows: Sequence[SweepRow], budget: float | None, max_drop: float | None) -> str:
    """One line per method and selection, for the terminal."""
    lines = []
    if budget is not None:
        for method, r in select_by_budget(rows, budget).items():
            what = (
                f"{r.rule}: return {r.return_mean:+.2f} ± {r.return_std:.2f} at {100 * r.inference_time:.1f}% FLOPs"
                if r
                else "no setting fits"
            )
            lines.append(f"budget {100 * budget:g}% · {method}: {what}")
    if max_drop is not None:
        reference = expert_return(rows)
        for method, r in select_by_max_drop(rows, max_drop).items():
            what = (
                f"{r.rule}: return {r.return_mean:+.2f} (expert {reference:+.2f}) "
                f"at {100 * r.inference_time:.1f}% FLOPs"
                if r
                else "none"
            )
            lines.append(f"max drop {max_drop:g} · {method}: {what}")
    return "\n".join(lines)
