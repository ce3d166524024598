"""Metrics from one all-exits pass: hindsight improvability, score-vs-cost curves and the budget table; and the
statistics of repeated measurements (mean ± standard error, paired differences) that RL games and vision seeds share.

"Score" is generic: accuracy against labels for vision; agreement with the backbone's own argmax when there are no
labels (RL: ``targets=None``). "Cost" is mean FLOPs per sample as a fraction of the backbone's FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ee_rl.core.exits import ExitRule, MaxProbExit
from ee_rl.core.flops import ExitCosts
from ee_rl.core.model import AllExits, simulate_inference

DEFAULT_BUDGETS = (0.25, 0.5, 0.75, 1.0)


def mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and standard error (sample std with n - 1, over sqrt(n)); None where undefined (n = 0; SE for n = 1)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def se_from_population_std(std: float, n: int) -> float | None:
    """The standard error of a mean of ``n`` values whose *population* std (ddof 0, as SB3 reports) is ``std``.

    The sample variance is ``std² · n / (n - 1)``, so SE = ``std / sqrt(n - 1)``; None for n < 2.
    """
    if n < 2:
        return None
    return std / math.sqrt(n - 1)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean ± SE of the per-item differences ``a[i] - b[i]`` (the same seeds, games or splits at the same index).

    Pairing removes the item-to-item spread both share (a hard game is hard for both policies), so the SE is the
    spread of the differences, not of either series.
    """
    if len(a) != len(b):
        raise ValueError(f"paired series must have the same length, got {len(a)} and {len(b)}")
    return mean_se([x - y for x, y in zip(a, b)])


def hindsight_improvability(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ZTW section 4.2: for each IC m, the fraction of the samples it gets wrong that some earlier IC got right.

    Args:
        predictions: ``(M, N)`` predicted class of each IC (e.g. ``ic_log_probs.argmax(-1)``).
        targets: ``(N,)`` labels (or the backbone's argmax, for label-free evaluation).

    Returns:
        ``(M,)`` float64; entry 0 is 0 when IC 0 makes mistakes (no earlier IC), NaN where IC m makes none.
    """
    if predictions.dim() != 2 or targets.dim() != 1 or predictions.shape[1] != targets.shape[0]:
        raise ValueError(
            f"predictions must be (M, N) and targets (N,), got {tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    correct = predictions == targets.unsqueeze(0)
    # earlier_right[m]: some IC n < m was right (exclusive cumulative OR).
    earlier_right = torch.zeros_like(correct)
    earlier_right[1:] = correct[:-1].cumsum(dim=0).bool()
    wrong = ~correct
    n_wrong = wrong.sum(dim=1).double()
    n_improvable = (wrong & earlier_right).sum(dim=1).double()
    return torch.where(n_wrong > 0, n_improvable / n_wrong.clamp(min=1), torch.full_like(n_wrong, math.nan))


@dataclass(frozen=True)
class OperatingPoint:
    """One rule setting on the score-vs-cost curve.

    Attributes:
        threshold: the rule's parameter.
        cost: mean FLOPs per sample / backbone FLOPs (1.0 = the backbone alone).
        score: accuracy against the targets.
        exit_fractions: fraction of samples answered by each exit ``0..M``.
    """

    threshold: float
    cost: float
    score: float
    exit_fractions: tuple[float, ...]


def evaluate_rule(
    outputs: AllExits,
    costs: ExitCosts,
    rule: ExitRule,
    targets: torch.Tensor | None = None,
    threshold: float = math.nan,
) -> OperatingPoint:
    """Score and cost of ``rule`` on the batch in ``outputs`` (no re-run: uses :func:`simulate_inference`).

    ``targets=None`` scores agreement with the backbone's own argmax.
    """
    if targets is None:
        targets = outputs.final_log_probs.argmax(dim=-1)
    n = targets.shape[0]
    if n == 0 or outputs.final_log_probs.shape[0] != n:
        raise ValueError(f"targets must have one entry per sample ({outputs.final_log_probs.shape[0]}), got {n}")
    answer = simulate_inference(outputs, rule, costs)
    score = (answer.log_probs.argmax(dim=-1) == targets).double().mean().item()
    # Exact integer sum, so the no-early-exit setting costs exactly 1.0.
    cost = int(answer.flops.sum().item()) / (n * costs.backbone)
    counts = torch.bincount(answer.exit_index, minlength=outputs.num_ics + 1)
    return OperatingPoint(float(threshold), cost, score, tuple((counts.double() / n).tolist()))


def score_cost_curve(
    outputs: AllExits,
    costs: ExitCosts,
    thresholds: Sequence[float],
    targets: torch.Tensor | None = None,
    make_rule: Callable[[float], ExitRule] = MaxProbExit,
) -> list[OperatingPoint]:
    """Score-vs-cost points for every threshold, all from the one all-exits pass in ``outputs``.

    ``make_rule(threshold)`` builds the rule (default :class:`MaxProbExit`); include a threshold above 1 to get the
    plain backbone's point (cost exactly 1.0).
    """
    thresholds = list(thresholds)
    if not thresholds:
        raise ValueError("thresholds must be a non-empty sequence of numbers")
    return [evaluate_rule(outputs, costs, make_rule(t), targets, threshold=t) for t in thresholds]


def budget_table(
    points: Sequence[OperatingPoint], budgets: Sequence[float] = DEFAULT_BUDGETS
) -> dict[str, float | None]:
    """ZTW-style table: for each budget b, the score at the highest threshold whose cost ≤ b; plus "Max".

    Keys are ``"25%"``, ``"50%"``, ... (from ``budgets`` as fractions of the backbone) and ``"Max"`` (the best score
    over all points). A budget no point fits is None, not a number.
    """
    points = list(points)
    if not points:
        raise ValueError("budget_table needs at least one OperatingPoint")
    table: dict[str, float | None] = {}
    for b in budgets:
        chosen = select_within_budget(points, b)
        table[f"{100 * b:g}%"] = chosen.score if chosen is not None else None
    table["Max"] = max(p.score for p in points)
    return table


def select_within_budget(points: Sequence[OperatingPoint], budget: float) -> OperatingPoint | None:
    """The paper's budget rule: the point with the highest threshold whose cost ≤ ``budget`` (None if none fits).

    ``budget`` is a fraction of the backbone's cost (0.5 = 50 %).
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budgets must be positive fractions of the backbone cost (e.g. 0.25), got {budget!r}")
    feasible = [p for p in points if p.cost <= budget]
    return max(feasible, key=lambda p: p.threshold) if feasible else None


def select_cheapest_within_drop(
    points: Sequence[OperatingPoint], reference_score: float, max_drop: float
) -> OperatingPoint | None:
    """The cheapest point whose score is at least ``reference_score - max_drop`` (None if none is).

    Ties in cost go to the higher score, then the higher threshold. Use it with the backbone's own score as the
    reference: "the cheapest setting within ``max_drop`` of the full network". The bound is inclusive even after
    float rounding (a score exactly ``max_drop`` below the reference qualifies).
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise ValueError(f"max_drop must be a non-negative number, got {max_drop!r}")
    # Scores are often means of integer returns (k / n games), and ``reference - max_drop`` is rounded: in floats
    # 16.6 - 1 > 15.6, which would exclude a setting exactly 1 point below. A relative slack of 1e-9, far below
    # any real score difference, keeps the boundary inclusive.
    slack = 1e-9 * max(1.0, abs(reference_score), abs(max_drop))
    good = [p for p in points if p.score >= reference_score - max_drop - slack]
    return min(good, key=lambda p: (p.cost, -p.score, -p.threshold)) if good else None
