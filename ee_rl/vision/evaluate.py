"""Evaluation from one all-exits pass over a split: score-vs-cost curves and budget tables for SDN, PBEE and ZTW, and
Hindsight Improvability — all with the core's exit rules, FLOPs and metrics.

Cost convention (the core's, the same for RL): a sample answered at IC m paid for the stages up to IC m and every IC
(and ensemble) 0..m; a sample answered by the final head paid for the whole backbone and every IC; only the
no-early-exit setting (τ > 1: no head runs) costs exactly 100 %. Budget tables use thresholds τ ∈ [0, 1] (heads
always run), so a method's 100 % cell is what it reaches within the backbone's cost *with* its ICs running; the
plain backbone (τ > 1) is reported separately as ``backbone_accuracy``. PBEE's thresholds are its patience
1..M, so its earliest exit is IC 2 and a 25 % cell can be empty (None).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ee_rl.core import (
    AllExits,
    EarlyExitModel,
    ExitCosts,
    MaxProbExit,
    OperatingPoint,
    budget_table,
    concat_all_exits,
    evaluate_rule,
    hindsight_improvability,
    is_patience_method,
    rule_for_method,
    score_cost_curve,
)
from ee_rl.core.runtime import make_runner
from ee_rl.errors import UserError
from ee_rl.vision.data import ImageSplit

if TYPE_CHECKING:
    from ee_rl.core.onnx_runner import OnnxEarlyExitRunner

BUDGETS = (0.25, 0.5, 0.75, 1.0)
#: Budget-table keys of the core's ``budget_table`` → the ``budget`` column of the CSV files.
BUDGET_LABELS = {"25%": "0.25", "50%": "0.5", "75%": "0.75", "100%": "1.0", "Max": "max"}
NO_EARLY_EXIT_TAU = 2.0  # any τ > 1: no IC can be confident enough, no head runs, cost exactly 1.0


@torch.no_grad()
def collect_all_exits(
    model: EarlyExitModel,
    split: ImageSplit,
    batch_size: int,
    device: str | torch.device = "cpu",
    runner: OnnxEarlyExitRunner | None = None,
) -> tuple[AllExits, torch.Tensor]:
    """Run every exit on the whole split (no augmentation, split order); return the outputs on CPU and the labels.

    ``runner`` (an ONNX Runtime runner of ``model``) computes the outputs with the exported graphs instead.
    """
    parts: list[AllExits] = []
    targets: list[torch.Tensor] = []
    model.eval()
    for x, y in split.batches(batch_size, device=device):
        out = model.all_exits(x) if runner is None else runner.all_exits(x)
        parts.append(
            AllExits(
                ic_logits=out.ic_logits.float().cpu(),
                ic_log_probs=out.ic_log_probs.float().cpu(),
                ensemble_log_probs=None if out.ensemble_log_probs is None else out.ensemble_log_probs.float().cpu(),
                final_logits=out.final_logits.float().cpu(),
                final_log_probs=out.final_log_probs.float().cpu(),
            )
        )
        targets.append(y.cpu())
    if not parts:
        raise UserError("the evaluation split is empty")
    return concat_all_exits(parts), torch.cat(targets)


def confidence_thresholds(exit_log_probs: torch.Tensor, num_quantiles: int = 200) -> list[float]:
    """Thresholds τ ∈ [0, 1] for the max-probability rule: quantiles of the exits' confidences (so the operating
    points spread evenly over the samples) plus an even grid, 0 (everyone leaves at IC 1) and 1 (no one leaves)."""
    confidences = exit_log_probs.amax(dim=-1).exp().flatten().double()
    qs = torch.linspace(0, 1, num_quantiles + 1, dtype=torch.float64)
    quantiles = torch.quantile(confidences, qs) if confidences.numel() <= 16_000_000 else qs
    grid = torch.linspace(0, 1, 51, dtype=torch.float64)
    values = torch.cat((quantiles, grid)).clamp(0.0, 1.0)
    return sorted(set(values.tolist()))


@dataclass
class MethodResult:
    """One method on one seed.

    Attributes:
        method: ``sdn``, ``pbee``, ``ztw`` or an ablation name.
        points: operating points (τ ∈ [0, 1], or patience 1..M for PBEE).
        table: budget table (keys ``25%``, ``50%``, ``75%``, ``100%``, ``Max``), accuracy in percent or None.
        hindsight: HI per internal exit (None for PBEE, whose exits are SDN's).
        exit_accuracy: test accuracy (percent) of each internal exit's answer.
        relative_costs: cost of answering at each exit 0..M as a fraction of the backbone.
    """

    method: str
    points: list[OperatingPoint]
    table: dict[str, float | None]
    hindsight: list[float] | None
    exit_accuracy: list[float]
    relative_costs: list[float]


@dataclass
class SeedEvaluation:
    """All methods on one seed (one split, one frozen backbone)."""

    seed: int
    backbone_accuracy: float
    methods: dict[str, MethodResult] = field(default_factory=dict)


def _percent_table(table: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else 100.0 * v) for k, v in table.items()}


def evaluate_method(
    method: str, outputs: AllExits, costs: ExitCosts, targets: torch.Tensor
) -> MethodResult:
    """Curve, budget table, HI and per-exit accuracy of ``method`` from the all-exits outputs of its model.

    ``pbee`` reads ``outputs`` (the SDN model's) with the patience rule p = 1..M; every other method uses the
    max-probability rule on its exit outputs (ensembles when the model has them).
    """
    num_ics = outputs.num_ics
    method_rule = functools.partial(rule_for_method, method)
    if is_patience_method(method):
        points = score_cost_curve(outputs, costs, list(range(1, num_ics + 1)), targets, make_rule=method_rule)
        hindsight = None
    else:
        points = score_cost_curve(
            outputs, costs, confidence_thresholds(outputs.exit_log_probs), targets, make_rule=method_rule
        )
        hi = hindsight_improvability(outputs.exit_log_probs.argmax(dim=-1), targets)
        hindsight = [float(v) for v in hi.tolist()]
    table = _percent_table(budget_table(points, BUDGETS))
    exit_accuracy = (outputs.exit_log_probs.argmax(dim=-1) == targets).double().mean(dim=1).mul(100).tolist()
    return MethodResult(method, points, table, hindsight, exit_accuracy, list(costs.relative))


def backbone_accuracy(outputs: AllExits, costs: ExitCosts, targets: torch.Tensor) -> float:
    """Accuracy (percent) of the plain backbone: the τ > 1 operating point, whose cost is exactly 1.0."""
    point = evaluate_rule(outputs, costs, MaxProbExit(NO_EARLY_EXIT_TAU), targets)
    if point.cost != 1.0:
        raise AssertionError(f"the no-early-exit setting must cost exactly 1.0, got {point.cost}")
    return 100.0 * point.score


def evaluate_seed(
    seed: int,
    models: Mapping[str, EarlyExitModel],
    split: ImageSplit,
    methods: Sequence[str],
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    runtime: str = "torch",
) -> SeedEvaluation:
    """Evaluate ``methods`` on one seed from one all-exits pass per trained variant in ``models``.

    ``models`` maps variant names (``sdn``, ``ztw``, ablations) to models on that seed's frozen backbone; ``pbee``
    uses ``models["sdn"]``. ``runtime`` ``onnx`` computes the passes with the models' ONNX Runtime segments (the
    graphs a deployment runs, exported into the user's cache; CPU only).
    """
    cache: dict[str, tuple[AllExits, ExitCosts, torch.Tensor]] = {}
    result: SeedEvaluation | None = None
    for method in methods:
        source = "sdn" if method == "pbee" else method
        if source not in models:
            raise UserError(f"method {method!r} needs the trained '{source}' exits for seed {seed}")
        if source not in cache:
            model = models[source]
            sample = next(split.batches(1))[0]
            runner = None
            if runtime != "torch":
                if torch.device(device).type != "cpu":
                    raise UserError(f"--runtime {runtime} runs on the CPU: use --device cpu")
                runner = make_runner(model, runtime, sample=sample, threads=torch.get_num_threads())
            outputs, targets = collect_all_exits(model, split, batch_size, device, runner)
            costs = model.to("cpu").exit_costs(sample)
            model.to(device)
            cache[source] = (outputs, costs, targets)
        outputs, costs, targets = cache[source]
        if result is None:
            result = SeedEvaluation(seed, backbone_accuracy(outputs, costs, targets))
        result.methods[method] = evaluate_method(method, outputs, costs, targets)
    if result is None:
        raise UserError("no methods to evaluate")
    return result


def budget_accuracy(points: Sequence[OperatingPoint], budget: float) -> float | None:
    """Accuracy (percent) under the budget rule (highest threshold with cost ≤ ``budget``), or None."""
    value = budget_table(points, [budget])[f"{100 * budget:g}%"]
    return None if value is None else 100.0 * value


def points_to_json(points: Sequence[OperatingPoint]) -> list[dict[str, float]]:
    """Operating points as compact dicts, dropping consecutive duplicates (same cost and accuracy)."""
    out: list[dict[str, float]] = []
    for p in points:
        row = {"threshold": p.threshold, "cost": round(p.cost, 7), "accuracy": round(100.0 * p.score, 5)}
        if out and out[-1]["cost"] == row["cost"] and out[-1]["accuracy"] == row["accuracy"]:
            out[-1] = row  # keep the highest threshold of a run of identical points (what the budget rule picks)
            continue
        out.append(row)
    return out


def points_from_json(rows: Sequence[Mapping[str, float]]) -> list[OperatingPoint]:
    """Inverse of :func:`points_to_json` (exit fractions are not stored)."""
    return [OperatingPoint(r["threshold"], r["cost"], r["accuracy"] / 100.0, ()) for r in rows]


def seed_to_json(result: SeedEvaluation) -> dict:
    """A JSON-serialisable record of one seed's evaluation."""
    return {
        "seed": result.seed,
        "backbone_accuracy": result.backbone_accuracy,
        "methods": {
            name: {
                "table": m.table,
                "hindsight": None if m.hindsight is None else [finite_or_none(v) for v in m.hindsight],
                "exit_accuracy": m.exit_accuracy,
                "relative_costs": m.relative_costs,
                "points": points_to_json(m.points),
            }
            for name, m in result.methods.items()
        },
    }


def seed_from_json(data: Mapping) -> SeedEvaluation:
    """Inverse of :func:`seed_to_json`."""
    result = SeedEvaluation(int(data["seed"]), float(data["backbone_accuracy"]))
    for name, m in data["methods"].items():
        hindsight = None if m["hindsight"] is None else [float("nan") if v is None else v for v in m["hindsight"]]
        result.methods[name] = MethodResult(
            name, points_from_json(m["points"]), dict(m["table"]), hindsight,
            list(m["exit_accuracy"]), list(m["relative_costs"]),
        )
    return result


def finite_or_none(value: float) -> float | None:
    """``value`` or None for NaN (JSON has no NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value
