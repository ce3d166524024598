"""The label-free SelfXit pipeline on a frozen staged backbone (sections 3.2-3.4).

1. medial datasets (eq. 1): each candidate stage's outputs and the backbone's output distribution on unlabeled
   inference data, split 50/20/30 into train / validation / test;
2. one exit head per candidate stage, searched and trained on the train split (KL to the backbone);
3. temperature scaling of each exit on the validation split (target: the backbone's argmax);
4. per-exit thresholds from the tolerance ``T`` (eq. 3) and the exit subset with the best ``K(S)`` (eq. 4), both on
   the validation split; the deployed model keeps only that subset and runs the core's batch-shrinking ``infer``.
   With a :class:`Guarantee` (δ), step 3 and SelfXit's thresholds at every tolerance use one part of the validation
   split, and the other part certifies them by risk control, so that the risk is ≤ T with probability ≥ 1 − δ.

Nothing here takes a label (the functions receive inputs only), except the guarantee's optional ``accuracy-gap``
risk. Steps 3-4 (:func:`calibrate_and_select`) also serve RL, where the heads come from behavioural cloning of the
expert (the same thing as distillation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ee_rl.core.backbone import StagedBackbone
from ee_rl.core.batched import all_exits_batched
from ee_rl.core.calibrate import (
    RISKS,
    ExitTable,
    RiskControlledTolerance,
    SubsetOutcome,
    control_risk,
    deploy_subset,
    estimated_accuracy_drop,
    fit_temperatures,
    risk_controlled_tolerance,
    select_exit_subset,
    simulate_subset,
    tolerance_budgets,
    tolerance_thresholds,
    with_temperatures,
)
from ee_rl.core.exits import PerExitThresholds
from ee_rl.core.head_search import (
    ConvLinearHead,
    HeadSpec,
    HeadTrial,
    agreement,
    head_flops,
    search_head,
    train_head,
)
from ee_rl.core.model import AllExits, EarlyExitModel
from ee_rl.selfxit.settings import SelfXitSettings


def split_indices(n: int, fractions: Sequence[float], seed: int) -> tuple[torch.Tensor, ...]:
    """A seeded random split of ``range(n)`` into one sorted index tensor per fraction (e.g. 50/20/30 train /
    validation / test).

    Part ``i < last`` gets ``round(fractions[i] * n)`` samples (at least 1), the last part the rest (at least 1).
    """
    k = len(fractions)
    if k < 2 or n < k or any(not f > 0 for f in fractions):
        raise ValueError(f"need >= 2 positive fractions and at least one sample per part, got {list(fractions)}, n={n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for i, f in enumerate(fractions[:-1]):
        size = min(max(1, round(f * n)), n - start - (k - 1 - i))
        parts.append(order[start : start + size])
        start += size
    parts.append(order[start:])
    return tuple(p.sort().values for p in parts)


@torch.no_grad()
def medial_datasets(
    backbone: StagedBackbone, inputs: torch.Tensor, stages: Sequence[int], batch_size: int = 256
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Eq. 1: the outputs of the chosen ``stages`` and the backbone's log-probabilities for every input.

    Returns ``(features, log_probs)``: ``features[i]`` is ``(N, *stage_shape)`` for ``stages[i]``.
    """
    wanted = {s: i for i, s in enumerate(stages)}
    feats: list[list[torch.Tensor]] = [[] for _ in stages]
    log_probs = []
    for start in range(0, inputs.shape[0], batch_size):
        h = backbone.preprocess(inputs[start : start + batch_size])
        for s, stage in enumerate(backbone.stages):
            h = stage(h)
            if s in wanted:
                feats[wanted[s]].append(h.contiguous())
        log_probs.append(torch.log_softmax(backbone.head(h), dim=-1))
    return [torch.cat(f) for f in feats], torch.cat(log_probs)


# ------------------------------------------------------------------------------------------------- heads
@dataclass
class TrainedHeads:
    """The exit heads trained label-free on the train split, one per candidate stage.

    Attributes:
        heads: the trained heads, in stage order.
        attach_after: their stage indices.
        trials: per head, every architecture tried (one entry when the search is off).
        chosen: per head, the kept architecture's trial (validation agreement and FLOPs).
    """

    heads: list[nn.Module]
    attach_after: tuple[int, ...]
    trials: list[list[HeadTrial]]
    chosen: list[HeadTrial]


def train_heads(
    backbone: StagedBackbone,
    train_inputs: torch.Tensor,
    val_inputs: torch.Tensor,
    candidates: Sequence[int],
    settings: SelfXitSettings,
    default_spec: HeadSpec = HeadSpec(),
) -> TrainedHeads:
    """Search (``settings.search_trials > 0``) or just train (``default_spec``) one head per candidate stage.

    Label-free: the targets are the frozen backbone's log-probabilities on ``train_inputs``; the search scores
    agreement with its argmax on ``val_inputs``.
    """
    train_feats, train_targets = medial_datasets(backbone, train_inputs, candidates, settings.batch_size)
    val_feats, val_log_probs = medial_datasets(backbone, val_inputs, candidates, settings.batch_size)
    val_reference = val_log_probs.argmax(dim=-1)
    num_classes = train_targets.shape[1]
    heads, trials, chosen = [], [], []
    for i in range(len(candidates)):
        if settings.search_trials > 0:
            result = search_head(
                train_feats[i], train_targets, val_feats[i], val_reference, num_classes,
                space=settings.space, n_trials=settings.search_trials, agreement_slack=settings.agreement_slack,
                settings=settings.train,
            )
            heads.append(result.head)
            trials.append(result.trials)
            chosen.append(result.best)
        else:
            torch.manual_seed(settings.seed)
            head = ConvLinearHead(tuple(train_feats[i].shape[1:]), num_classes, default_spec)
            train_head(head, train_feats[i], train_targets, settings.train)
            score = agreement(head, val_feats[i], val_reference)
            trial = HeadTrial(default_spec, score, head_flops(head, val_feats[i]))
            heads.append(head)
            trials.append([trial])
            chosen.append(trial)
    return TrainedHeads(heads, tuple(candidates), trials, chosen)


# ------------------------------------------------------------------------------------- calibrate and select
@dataclass
class ExitSummary:
    """One candidate exit after calibration, on the validation split (each exit alone, eq. 3's quantities).

    Attributes:
        stage: the stage it is attached after.
        temperature, threshold: its calibration.
        budget: its share of the tolerance, ``T / 2ⁿ``.
        agreement: its argmax agrees with the backbone's, over all validation samples.
        hit_rate: fraction of validation samples above its threshold.
        hit_agreement: agreement among those (NaN without hits).
        estimated_drop: ``hit_rate × (1 − hit_agreement)``.
        exit_flops / fallback_flops: C1 and C2 of eq. 4.
    """

    stage: int
    temperature: float
    threshold: float
    budget: float
    agreement: float
    hit_rate: float
    hit_agreement: float
    estimated_drop: float
    exit_flops: int
    fallback_flops: int


@dataclass(frozen=True)
class Guarantee:
    """Risk control for SelfXit's thresholds: the deployed exits' risk is ≤ the tolerance T with probability
    ≥ 1 − ``delta`` over the draw of the validation split (instead of T being the target of a point estimate).

    Attributes:
        delta: the error probability δ.
        risk: ``consistency`` (label-free: disagreement with the backbone) or ``accuracy-gap`` (the backbone is
            right and the early answer wrong; needs the validation labels).
        fit_fraction: share of the validation split that fits the temperatures and the tolerance path; the rest
            certifies it (the path must not see the samples it is tested on).
        seed: the seed of that split.
    """

    delta: float
    risk: str = "consistency"
    fit_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0 or not 0.0 < self.fit_fraction < 1.0:
            raise ValueError(f"delta and fit_fraction must be in (0, 1), got {self.delta!r}, {self.fit_fraction!r}")
        if self.risk not in RISKS:
            raise ValueError(f"unknown risk {self.risk!r}; accepted: {', '.join(RISKS)}")


@dataclass
class Calibration:
    """Calibrated candidates, their thresholds, the chosen subset and the deployed model.

    Attributes:
        candidates: every candidate exit with calibrated (temperature-scaled) heads.
        temperatures / thresholds: one per candidate exit.
        exits: per-candidate summaries on the validation split (with a guarantee: on its certifying part).
        subset: the chosen subset's simulation on the validation split (positions are candidate indices).
        deployed: the early-exit model with only the chosen exits (see :func:`ee_rl.core.calibrate.deploy_subset`).
        rule: its per-exit threshold rule.
        tolerance: ``T`` (with a guarantee: the risk level ε).
        backbone_flops: FLOPs of one plain backbone pass.
        table: the calibrated candidates' validation pass (for :func:`select_for_tolerance` with another T).
        guarantee: with a guarantee, the risk-controlled choice (fit / certifying parts, path, p-values).
    """

    candidates: EarlyExitModel
    temperatures: tuple[float, ...]
    thresholds: tuple[float, ...]
    exits: list[ExitSummary]
    subset: SubsetOutcome
    deployed: EarlyExitModel
    rule: PerExitThresholds
    tolerance: float
    backbone_flops: int
    table: ExitTable
    guarantee: RiskControlledTolerance | None = None


def _check_independent(model: EarlyExitModel) -> None:
    if model.ensembles is not None or any(getattr(h, "cascade_in", 0) for h in model.heads):
        raise ValueError("SelfXit calibrates independent heads: this model has ensembles or cascade inputs")


def calibrate_and_select(
    model: EarlyExitModel,
    val_inputs: torch.Tensor,
    tolerance: float,
    batch_size: int = 256,
    *,
    guarantee: Guarantee | None = None,
    val_labels: torch.Tensor | None = None,
) -> Calibration:
    """Temperatures, eq. 3 thresholds and the eq. 4 subset for ``model``'s independent heads, on ``val_inputs``.

    ``model`` must have independent heads (no cascade, no ensembles). Label-free: the backbone's argmax is the target.
    With a ``guarantee`` the thresholds come from :func:`ee_rl.core.calibrate.risk_controlled_tolerance` instead,
    with ε = ``tolerance``; ``val_labels`` are read only for its ``accuracy-gap`` risk.
    """
    _check_independent(model)
    model.eval()
    outputs = all_exits_batched(model, val_inputs, batch_size)
    if guarantee is not None:
        return _calibrate_with_guarantee(model, val_inputs, outputs, tolerance, guarantee, val_labels)
    temperatures = fit_temperatures(outputs)
    calibrated = EarlyExitModel(
        model.backbone, with_temperatures(model.heads, temperatures), None, model.attach_after
    ).eval()
    outputs = all_exits_batched(calibrated, val_inputs, batch_size)
    costs = calibrated.exit_costs(val_inputs[:1])
    table = ExitTable.from_outputs(outputs, costs)
    return select_for_tolerance(calibrated, temperatures, table, tolerance, costs.backbone)


def _calibrate_with_guarantee(
    model: EarlyExitModel,
    val_inputs: torch.Tensor,
    outputs: AllExits,
    tolerance: float,
    guarantee: Guarantee,
    val_labels: torch.Tensor | None,
) -> Calibration:
    if guarantee.risk == "accuracy-gap" and val_labels is None:
        raise ValueError("the accuracy-gap risk needs the validation labels")
    n = val_inputs.shape[0]
    fit, cal = split_indices(n, [guarantee.fit_fraction, 1.0 - guarantee.fit_fraction], guarantee.seed)
    costs = model.exit_costs(val_inputs[:1])  # temperature scaling adds no FLOPs
    result = risk_controlled_tolerance(
        outputs, costs, fit, cal, tolerance, guarantee.delta, risk=guarantee.risk,
        labels=val_labels if guarantee.risk == "accuracy-gap" else None,
    )
    calibrated = EarlyExitModel(
        model.backbone, with_temperatures(model.heads, result.temperatures), None, model.attach_after
    ).eval()
    return select_with_guarantee(calibrated, result, tolerance, costs.backbone)


def select_with_guarantee(
    calibrated: EarlyExitModel, result: RiskControlledTolerance, epsilon: float, backbone_flops: int
) -> Calibration:
    """The certified configuration of ``result``'s path at risk level ``epsilon`` (the same δ, path and
    certifying part; cheap: use it to try several ε on the same heads)."""
    if epsilon != result.control.epsilon:
        control = control_risk(result.table, result.control.path, epsilon, result.control.delta, result.losses)
        result = dataclasses.replace(result, control=control)
    chosen = result.control.chosen
    budgets = (
        tolerance_budgets(chosen.parameter, result.table.num_exits) if chosen.subset
        else (math.nan,) * result.table.num_exits
    )
    outcome = simulate_subset(result.table, chosen.thresholds, chosen.subset, result.losses)
    return _calibration(calibrated, result.temperatures, result.table, epsilon, backbone_flops,
                        chosen.thresholds, budgets, outcome, result)


def select_for_tolerance(
    calibrated: EarlyExitModel,
    temperatures: Sequence[float],
    table: ExitTable,
    tolerance: float,
    backbone_flops: int,
) -> Calibration:
    """Eq. 3 thresholds and the eq. 4 subset for tolerance ``T`` from the calibrated candidates' validation table
    (cheap: use it to try several tolerances on the same heads)."""
    thresholds = tolerance_thresholds(table, tolerance)
    budgets = tolerance_budgets(tolerance, table.num_exits)
    subset = select_exit_subset(table, thresholds)
    return _calibration(calibrated, temperatures, table, tolerance, backbone_flops, thresholds, budgets, subset)


def _calibration(
    calibrated: EarlyExitModel,
    temperatures: Sequence[float],
    table: ExitTable,
    tolerance: float,
    backbone_flops: int,
    thresholds: tuple[float, ...],
    budgets: Sequence[float],
    subset: SubsetOutcome,
    guarantee: RiskControlledTolerance | None = None,
) -> Calibration:
    agrees = table.agrees
    hits = table.hits(thresholds)
    exits = []
    for m in range(table.num_exits):
        n_hits = int(hits[m].sum())
        exits.append(ExitSummary(
            stage=calibrated.attach_after[m],
            temperature=temperatures[m],
            threshold=thresholds[m],
            budget=budgets[m],
            agreement=float(agrees[m].double().mean()),
            hit_rate=n_hits / table.num_samples,
            hit_agreement=float((hits[m] & agrees[m]).sum()) / n_hits if n_hits else math.nan,
            estimated_drop=estimated_accuracy_drop(table.log_confidences[m], agrees[m], thresholds[m]),
            exit_flops=table.exit_flops[m],
            fallback_flops=table.fallback_flops[m],
        ))
    deployed, rule = deploy_subset(calibrated, subset.subset, thresholds)
    return Calibration(
        calibrated, tuple(temperatures), thresholds, exits, subset, deployed, rule, tolerance, backbone_flops, table,
        guarantee,
    )
