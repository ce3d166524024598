"""Repeated calibration / test splits of one :class:`~ee_rl.risk.record.ExitRecord`: how often each way of
choosing the exit thresholds breaks its tolerance ε on held-out samples, and what it costs.

Per split, the pool is permuted; the first ``n_cal`` samples calibrate and the rest is the test split (with
``n_test`` set, only its first ``n_test`` samples are, and all non-calibration samples stand in for the population).
Each split also draws ``n_cal`` samples i.i.d. with replacement from the pool and measures the choice on the whole
pool: there the pool is the population, so the guarantee's statement is checked exactly. Methods, all at risk level ε:

* ``point-estimate``: SelfXit as published — temperatures, per-exit thresholds at ``T = ε`` (``T / 2ⁿ`` each) and
  the best exit subset, all on the calibration samples; ε is the target of an estimate, not a bound;
* ``shared-ucb``: Fast yet Safe — every exit, one raw-confidence threshold λ shared by all, certified by
  Hoeffding–Bentkus p-values in fixed sequence from λ = 1 down, on all calibration samples;
* ``per-exit-ucb``: SelfXit's per-exit thresholds and subset along the tolerance path, fitted (with the
  temperatures) on ``fit_fraction`` of the calibration samples and certified on the rest
  (:func:`ee_rl.core.calibrate.risk_controlled_tolerance`);
* ``per-exit-ucb-no-split`` (diagnostic): the same, but path and certificate on the same samples — not valid in
  theory (the path peeks at the data it is tested on); measured to see whether it matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# SelfXit's steps, then risk control's.
from ee_rl.core.calibrate import ExitTable, fit_temperatures, scaled_outputs, select_exit_subset, simulate_subset
from ee_rl.core.calibrate import take_samples, tolerance_path, tolerance_thresholds
from ee_rl.core.calibrate import RISKS, ExitConfiguration, control_risk_levels, risk_controlled_tolerance
from ee_rl.core.calibrate import shared_threshold_path
from ee_rl.core.flops import ExitCosts
from ee_rl.core.model import AllExits
from ee_rl.core.risk_control import binomial_interval
from ee_rl.errors import UserError
from ee_rl.risk.record import ExitRecord

METHODS = ("point-estimate", "shared-ucb", "per-exit-ucb", "per-exit-ucb-no-split")
#: Methods that come with a guarantee (the diagnostic one does not).
GUARANTEED = ("shared-ucb", "per-exit-ucb")


@dataclass(frozen=True)
class RiskCheckSettings:
    """One risk check.

    Attributes:
        risks: the risks to control (``consistency``; ``accuracy-gap`` needs labels).
        epsilons: risk levels ε.
        delta: error probability δ of the guaranteed methods.
        n_splits: random calibration / test splits.
        n_cal / n_test: samples in the calibration and the test part of each split; ``n_test = None`` tests on
            every non-calibration sample (the least noisy measure of the chosen thresholds' risk).
        fit_fraction: share of the calibration samples that fits ``per-exit-ucb``'s path.
        methods: which of :data:`METHODS` to run.
        seed: seed of the splits.
    """

    risks: tuple[str, ...]
    epsilons: tuple[float, ...]
    n_cal: int
    n_test: int | None = None
    delta: float = 0.1
    n_splits: int = 200
    fit_fraction: float = 0.5
    methods: tuple[str, ...] = METHODS
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.risks or any(r not in RISKS for r in self.risks):
            raise UserError(f"risks must be some of {', '.join(RISKS)}, got {self.risks!r}")
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise UserError(f"methods must be some of {', '.join(METHODS)}, got {self.methods!r}")
        if not self.epsilons or any(not 0 < e < 1 for e in self.epsilons) or not 0 < self.delta < 1:
            raise UserError(f"epsilons and delta must be in (0, 1), got {self.epsilons!r} and {self.delta!r}")
        if self.n_splits < 1 or (self.n_test is not None and self.n_test < 1):
            raise UserError(f"n_splits and n_test must be >= 1, got {self.n_splits} and {self.n_test}")
        if not 1 <= round(self.fit_fraction * self.n_cal) < self.n_cal:
            raise UserError(f"fit_fraction {self.fit_fraction} of n_cal = {self.n_cal} leaves an empty fit or "
                            "certifying part")


#: Per dataset: the risks, risk levels and split sizes of its check (see ``results/risk/README.md``).
DATASET_DEFAULTS: dict[str, dict] = {
    # 1078 images: half calibrate (SelfXit's 20 % validation part would be 144), the other half is the test split.
    # A smaller test split adds binomial noise of its own: a threshold whose true risk is just under ε then shows
    # a test risk above ε in many splits (see results/risk/README.md).
    "digits-noisy": dict(risks=RISKS, epsilons=(0.02, 0.05, 0.1, 0.15, 0.2), n_cal=540, n_test=None),
    # 20,000 states: SelfXit's Pong run calibrates on 1,600; all 18,400 others test.
    "Pong": dict(risks=("consistency",), epsilons=(0.01, 0.02, 0.05, 0.1, 0.2), n_cal=1600, n_test=None),
}


def default_settings(dataset: str, **overrides: object) -> RiskCheckSettings:
    """The settings of ``dataset``'s check, with the ``overrides`` that are not None."""
    if dataset not in DATASET_DEFAULTS:
        raise UserError(f"unknown dataset {dataset!r}; accepted: {', '.join(DATASET_DEFAULTS)}")
    values = {**DATASET_DEFAULTS[dataset], **{k: v for k, v in overrides.items() if v is not None}}
    return RiskCheckSettings(**values)


#: How a draw's calibration samples come from the pool: ``split`` — a random split without replacement, measured
#: on its test part and on all non-calibration samples; ``iid`` — i.i.d. with replacement, measured on the whole
#: pool, which then *is* the population (its risk is exact: no test noise, no dependence between the parts).
SAMPLINGS = ("split", "iid")


@dataclass(frozen=True)
class SplitOutcome:
    """One method's choice on one draw of calibration samples, and how it does on held-out samples.

    Attributes:
        method, risk, epsilon, split: what was run (``split``: the draw's number).
        sampling: one of :data:`SAMPLINGS`.
        test_risk / population_risk: the chosen exits' risk on the test split / on all non-calibration samples
            (``iid``: both on the whole pool).
        test_cost / population_cost: their mean FLOPs as a fraction of the backbone's, on the same samples.
        backbone_alone: nothing was chosen but the backbone (no certified configuration saves FLOPs).
    """

    method: str
    risk: str
    epsilon: float
    split: int
    sampling: str
    test_risk: float
    population_risk: float
    test_cost: float
    population_cost: float
    backbone_alone: bool


@dataclass(frozen=True)
class Pool:
    """A record ready for splits under one risk: its outputs, raw (untempered) table and per-sample losses."""

    outputs: AllExits
    costs: ExitCosts
    raw: ExitTable
    risk: str
    losses: torch.Tensor
    labels: torch.Tensor | None

    @classmethod
    def from_record(cls, record: ExitRecord, risk: str) -> Pool:
        """The pool of ``record`` under ``risk``."""
        outputs = record.outputs()
        raw = ExitTable.from_outputs(outputs, record.costs)
        return cls(outputs, record.costs, raw, risk, raw.losses(risk, record.labels), record.labels)

    def table(self, temperatures: Sequence[float]) -> ExitTable:
        """The whole pool's table with the exits scaled by ``temperatures``."""
        return ExitTable.from_outputs(scaled_outputs(self.outputs, temperatures), self.costs)


def _measure(pool: Pool, table: ExitTable, config: ExitConfiguration, index: torch.Tensor) -> tuple[float, float]:
    outcome = simulate_subset(table.take(index), config.thresholds, config.subset, pool.losses[:, index])
    return outcome.estimated_accuracy_drop, outcome.relative_cost(pool.costs.backbone)


Choice = tuple[ExitTable, list[ExitConfiguration]]


def _point_estimates(pool: Pool, cal: torch.Tensor, epsilons: Sequence[float]) -> Choice:
    table = pool.table(fit_temperatures(take_samples(pool.outputs, cal)))
    cal_table, cal_losses = table.take(cal), pool.losses[:, cal]
    configs = []
    for eps in epsilons:
        thresholds = tolerance_thresholds(cal_table, eps, cal_losses)
        configs.append(ExitConfiguration(eps, thresholds, select_exit_subset(cal_table, thresholds).subset))
    return table, configs


def _shared(pool: Pool, cal: torch.Tensor, epsilons: Sequence[float], delta: float) -> Choice:
    path = shared_threshold_path(pool.raw.num_exits)
    controls = control_risk_levels(pool.raw.take(cal), path, epsilons, delta, pool.losses[:, cal])
    return pool.raw, [c.chosen for c in controls]


def _per_exit(pool: Pool, fit: torch.Tensor, certify: torch.Tensor, epsilons: Sequence[float], delta: float,
              disjoint: bool) -> Choice:
    result = risk_controlled_tolerance(pool.outputs, pool.costs, fit, certify, epsilons[0], delta, risk=pool.risk,
                                       labels=pool.labels, disjoint=disjoint)
    # The same path and certifying part at every ε (only the level of the test changes).
    controls = control_risk_levels(result.table, result.control.path, epsilons, delta, result.losses)
    return pool.table(result.temperatures), [c.chosen for c in controls]


def _per_exit_no_split(pool: Pool, cal: torch.Tensor, epsilons: Sequence[float], delta: float) -> Choice:
    table = pool.table(fit_temperatures(take_samples(pool.outputs, cal)))
    cal_table, cal_losses = table.take(cal), pool.losses[:, cal]
    path = tolerance_path(cal_table, losses=cal_losses)  # built on the very samples that then certify it
    return table, [c.chosen for c in control_risk_levels(cal_table, path, epsilons, delta, cal_losses)]


def run_draw(pool: Pool, cal: torch.Tensor, test: torch.Tensor, rest: torch.Tensor, split: int, sampling: str,
             settings: RiskCheckSettings) -> list[SplitOutcome]:
    """Every method of ``settings`` calibrated on the pool's samples ``cal``, measured on ``test`` and ``rest``."""
    n_fit = round(settings.fit_fraction * settings.n_cal)
    eps = settings.epsilons
    disjoint = sampling == "split"
    choose: dict[str, Callable[[], Choice]] = {
        "point-estimate": lambda: _point_estimates(pool, cal, eps),
        "shared-ucb": lambda: _shared(pool, cal, eps, settings.delta),
        "per-exit-ucb": lambda: _per_exit(pool, cal[:n_fit], cal[n_fit:], eps, settings.delta, disjoint),
        "per-exit-ucb-no-split": lambda: _per_exit_no_split(pool, cal, eps, settings.delta),
    }
    outcomes = []
    for method in settings.methods:
        table, configs = choose[method]()
        for e, config in zip(eps, configs):
            test_risk, test_cost = _measure(pool, table, config, test)
            pop_risk, pop_cost = (test_risk, test_cost) if rest is test else _measure(pool, table, config, rest)
            outcomes.append(SplitOutcome(method, pool.risk, e, split, sampling, test_risk, pop_risk, test_cost,
                                         pop_cost, not config.subset))
    return outcomes


def run_risk_check(
    record: ExitRecord, settings: RiskCheckSettings, progress: Callable[[int], None] | None = None
) -> list[SplitOutcome]:
    """``settings.n_splits`` seeded random splits of ``record``'s pool, every risk and method on each.

    ``progress(k)`` is called after split ``k`` (0-based).
    """
    if settings.n_cal + (settings.n_test or 1) > record.num_samples:
        raise ValueError(f"n_cal + n_test = {settings.n_cal + (settings.n_test or 1)} exceeds the pool "
                         f"({record.num_samples} samples)")
    pools = [Pool.from_record(record, risk) for risk in settings.risks]
    generator = torch.Generator().manual_seed(settings.seed)
    n = record.num_samples
    everything = torch.arange(n)
    outcomes = []
    for split in range(settings.n_splits):
        order = torch.randperm(n, generator=generator)
        cal, rest = order[: settings.n_cal], order[settings.n_cal :]
        iid = torch.randint(n, (settings.n_cal,), generator=generator)
        for pool in pools:
            test = rest if settings.n_test is None else rest[: settings.n_test]
            outcomes += run_draw(pool, cal, test, rest, split, "split", settings)
            outcomes += run_draw(pool, iid, everything, everything, split, "iid", settings)
        if progress is not None:
            progress(split)
    return outcomes


def _rate(flags: Sequence[bool]) -> tuple[float, list[float]]:
    k, n = int(sum(flags)), len(flags)
    return k / n, list(binomial_interval(k, n))


def summarize(outcomes: Sequence[SplitOutcome], settings: RiskCheckSettings) -> list[dict]:
    """One row per (risk, method, ε): the violation frequency (risk > ε) with its exact 95 % interval and the mean
    cost, on the test splits (``violation_rate``, ``mean_cost``), on all non-calibration samples
    (``population_*``; the same as the test split's when ``n_test`` is None) and for i.i.d. calibration draws
    measured on the whole pool (``iid_*``)."""
    rows = []
    for risk in settings.risks:
        for method in settings.methods:
            for eps in settings.epsilons:
                key = (risk, method, eps)
                split = [o for o in outcomes if (o.risk, o.method, o.epsilon) == key and o.sampling == "split"]
                iid = [o for o in outcomes if (o.risk, o.method, o.epsilon) == key and o.sampling == "iid"]
                violation, ci = _rate([o.test_risk > eps for o in split])
                population, population_ci = _rate([o.population_risk > eps for o in split])
                iid_violation, iid_ci = _rate([o.population_risk > eps for o in iid])
                rows.append({
                    "method": method,
                    "risk": risk,
                    "epsilon": eps,
                    "delta": settings.delta if method != "point-estimate" else None,
                    "n_splits": len(split),
                    "n_cal": settings.n_cal,
                    "n_test": settings.n_test,
                    "violation_rate": violation,
                    "violation_ci": ci,
                    "mean_cost": float(np.mean([o.test_cost for o in split])),
                    "mean_test_risk": float(np.mean([o.test_risk for o in split])),
                    "population_violation_rate": population,
                    "population_violation_ci": population_ci,
                    "mean_population_risk": float(np.mean([o.population_risk for o in split])),
                    "iid_violation_rate": iid_violation,
                    "iid_violation_ci": iid_ci,
                    "iid_mean_risk": float(np.mean([o.population_risk for o in iid])),
                    "iid_mean_cost": float(np.mean([o.population_cost for o in iid])),
                    "backbone_alone_rate": float(np.mean([o.backbone_alone for o in split])),
                    "guaranteed": method in GUARANTEED,
                })
    return rows
