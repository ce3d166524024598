"""SelfXit calibration and exit selection (TMLR 2024, sections 3.3-3.4), shared by vision and RL.

* temperature scaling of each exit (Guo et al. 2017), fitted label-free: the target is the backbone's own argmax;
* per-exit thresholds from a tolerated accuracy drop ``T`` (eq. 3): exit ``n`` (1-based) gets the lowest threshold
  whose estimated drop ``HR(θ) × (1 − CA(θ))`` on the validation split is ≤ ``T / 2ⁿ``;
* exit-subset selection (eq. 4): from one recorded pass, score every subset ``S`` of exits with
  ``K(S) = Σ_{Δ∈S} |H_Δ|·(C2_Δ − C1_Δ) − |M_Δ|·C1_Δ``, where later exits only see what earlier exits let through.

* risk-controlled selection (Learn then Test, as in "Fast yet Safe", Jazbec et al. 2024): an ordered path of exit
  configurations, conservative first — one confidence threshold ``λ`` shared by every exit, or SelfXit's per-exit
  thresholds and subset at a growing tolerance — tested with :mod:`ee_rl.core.risk_control`'s Hoeffding–Bentkus
  p-values in fixed sequence, so that the chosen configuration's risk is ≤ ε with probability ≥ 1 − δ over the
  draw of the calibration set.

``K(S)`` is exactly the FLOPs the early-exit model with the exits ``S`` saves over the plain backbone on the recorded
samples (a hit at Δ saves the rest of the backbone but paid every head up to Δ; a miss paid its head), so the best
subset is the one with the least mean FLOPs. Hits use the core's :class:`~ee_rl.core.exits.PerExitThresholds`
rule (``confidence > θ``), so the simulation answers what :meth:`EarlyExitModel.infer` does.

Exit indices here are 0-based (``m``); the paper's 1-based ``n`` is ``m + 1``. SelfXit heads are independent (no
cascade input, no ensembles): that is what lets any subset of them run on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn

from ee_rl.core.exits import PerExitThresholds
from ee_rl.core.flops import ExitCosts
from ee_rl.core.model import AllExits, EarlyExitModel
from ee_rl.core.risk_control import HB_BOUND, fixed_sequence_test, hb_p_value, hb_upper_bound

#: A threshold no confidence exceeds (log-probabilities are ≤ 0): the exit answers nothing, but its head still runs.
NEVER_HIT = 1.0
#: Above 1 every exit is off and ``infer`` runs the plain backbone without any head (see PerExitThresholds).
DISABLED = 2.0
#: Subset search is exhaustive up to this many candidate exits (2¹² = 4096 subsets), greedy above.
EXHAUSTIVE_LIMIT = 12
#: Per-sample losses risk control knows (see :meth:`ExitTable.losses`).
RISKS = ("consistency", "accuracy-gap")


# --------------------------------------------------------------------------------------------- temperature scaling
def _check_logits_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0] or logits.shape[0] == 0:
        raise ValueError(
            f"logits must be (N, K) and targets (N,) with N >= 1, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


def temperature_nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits / temperature)`` (float64)."""
    _check_logits_targets(logits, targets)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    z = logits.detach().double() / temperature
    return float(F.cross_entropy(z, targets.long()))


def fit_temperature(
    logits: torch.Tensor, targets: torch.Tensor, *, bounds: tuple[float, float] = (0.01, 100.0)
) -> float:
    """The temperature ``T`` in ``bounds`` that minimises the NLL of ``targets`` under ``softmax(logits / T)``.

    Label-free use: ``targets`` is the backbone's argmax on the validation split, so a calibrated confidence
    estimates the probability that the exit agrees with the backbone. The NLL is convex in the inverse temperature
    ``β = 1/T`` (log-sum-exp of a linear function of β minus a linear one), so a bounded scalar search over β finds
    the global minimum.
    """
    _check_logits_targets(logits, targets)
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    z = logits.detach().double()
    y = targets.long()

    def nll(beta: float) -> float:
        return float(F.cross_entropy(z * beta, y))

    result = minimize_scalar(nll, bounds=(1.0 / hi, 1.0 / lo), method="bounded", options={"xatol": 1e-7})
    return float(1.0 / result.x)


class TemperatureScaledHead(nn.Module):
    """An exit head whose logits are divided by a fixed temperature (a buffer, saved with the state dict).

    Drop-in for :class:`~ee_rl.core.model.EarlyExitModel`: same call signature, ``num_classes`` and
    ``cascade_in = 0``. The division is elementwise, so it adds 0 FLOPs under the core's counting convention.
    """

    def __init__(self, head: nn.Module, temperature: float) -> None:
        super().__init__()
        if getattr(head, "cascade_in", 0):
            raise ValueError("temperature scaling here is for independent heads; this head has a cascade input")
        if isinstance(temperature, bool) or not float(temperature) > 0 or not math.isfinite(float(temperature)):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        self.head = head
        self.cascade_in = 0
        if getattr(head, "num_classes", None) is not None:
            self.num_classes = head.num_classes
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor, prev_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The wrapped head's logits divided by the temperature."""
        return self.head(x, prev_logits) / self.temperature


def fit_temperatures(outputs: AllExits, targets: torch.Tensor | None = None) -> tuple[float, ...]:
    """One temperature per internal exit, fitted on the raw IC logits of an all-exits pass.

    ``targets=None`` uses the backbone's own argmax (label-free).
    """
    if outputs.ensemble_log_probs is not None:
        raise ValueError("fit_temperatures scales each IC's own logits; this model has ensembles on top of them")
    if targets is None:
        targets = outputs.final_logits.argmax(dim=-1)
    return tuple(fit_temperature(outputs.ic_logits[m], targets) for m in range(outputs.num_ics))


def scaled_outputs(outputs: AllExits, temperatures: Sequence[float]) -> AllExits:
    """``outputs`` as the heads wrapped by :func:`with_temperatures` would give them (IC logits divided by their
    temperature; the backbone's untouched), without running the model again."""
    if outputs.ensemble_log_probs is not None:
        raise ValueError("temperatures scale each IC's own logits; these outputs have ensembles on top of them")
    if len(temperatures) != outputs.num_ics:
        raise ValueError(f"got {len(temperatures)} temperatures for {outputs.num_ics} exits; give one per exit")
    logits = torch.stack([z / torch.tensor(float(t)) for z, t in zip(outputs.ic_logits, temperatures)])
    return AllExits(logits, torch.log_softmax(logits, dim=-1), None, outputs.final_logits, outputs.final_log_probs)


def take_samples(outputs: AllExits, index: torch.Tensor) -> AllExits:
    """The samples ``index`` of an all-exits pass (e.g. one part of a calibration split)."""
    ens = None if outputs.ensemble_log_probs is None else outputs.ensemble_log_probs[:, index]
    return AllExits(outputs.ic_logits[:, index], outputs.ic_log_probs[:, index], ens,
                    outputs.final_logits[index], outputs.final_log_probs[index])


def with_temperatures(heads: Sequence[nn.Module], temperatures: Sequence[float]) -> nn.ModuleList:
    """Wrap each head in a :class:`TemperatureScaledHead` (the heads themselves are shared, not copied)."""
    heads = list(heads)
    if len(heads) != len(temperatures):
        raise ValueError(f"got {len(temperatures)} temperatures for {len(heads)} heads; give one per head")
    return nn.ModuleList(TemperatureScaledHead(h, t) for h, t in zip(heads, temperatures))


# --------------------------------------------------------------------------------------- thresholds (eq. 3)
def _hits(log_confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    # The core's rule decides, so the estimate counts exactly the samples infer() would let out (a (N, 1) input's
    # max log-prob is its only entry).
    return PerExitThresholds((threshold,)).should_exit(0, log_confidence.unsqueeze(-1))


def tolerance_budgets(tolerance: float, num_exits: int) -> tuple[float, ...]:
    """SelfXit's split of the tolerated accuracy drop: ``T / 2ⁿ`` for exit ``n = 1..num_exits`` (sums to < T)."""
    if isinstance(tolerance, bool) or not 0 <= float(tolerance) <= 1:
        raise ValueError(f"tolerance must be a fraction in [0, 1] (0.02 = 2 %), got {tolerance!r}")
    if num_exits < 1:
        raise ValueError(f"num_exits must be >= 1, got {num_exits}")
    return tuple(float(tolerance) / 2 ** (m + 1) for m in range(num_exits))


def estimated_accuracy_drop(log_confidence: torch.Tensor, agrees: torch.Tensor, threshold: float) -> float:
    """Eq. 3's bound ``HR(θ) × (1 − CA(θ))``: the fraction of *all* samples that exit (confidence > θ) and
    disagree with the backbone.

    Args:
        log_confidence: ``(N,)`` the exit's max log-probability per sample.
        agrees: ``(N,)`` bool, the exit's argmax equals the backbone's.
        threshold: θ.
    """
    if log_confidence.shape != agrees.shape or log_confidence.dim() != 1 or log_confidence.numel() == 0:
        raise ValueError(
            f"log_confidence and agrees must be (N,) with N >= 1, got {tuple(log_confidence.shape)} "
            f"and {tuple(agrees.shape)}"
        )
    wrong_hits = _hits(log_confidence, threshold) & ~agrees.bool()
    return int(wrong_hits.sum()) / log_confidence.numel()


def threshold_for_budget(log_confidence: torch.Tensor, agrees: torch.Tensor, budget: float) -> float:
    """The lowest threshold θ whose :func:`estimated_accuracy_drop` is ≤ ``budget``.

    The drop only changes where θ crosses a sample's confidence, so the candidates are 0, each distinct confidence
    seen, and :data:`NEVER_HIT` (drop 0, always feasible). The drop never grows with θ, so the answer is the first
    candidate whose count of wrong hits is within the budget; the counts of all candidates come from one sorted
    array of the wrong samples' confidences, compared as the core's rule compares them.
    """
    if not budget >= 0:
        raise ValueError(f"budget must be a non-negative fraction, got {budget!r}")
    log_confidence = log_confidence.detach()
    n = log_confidence.numel()
    values = torch.unique(log_confidence).double().exp()  # ascending
    inner = values[(values > 0.0) & (values < NEVER_HIT)]
    candidates = torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), NEVER_HIT)])
    # PerExitThresholds tests log-confidence > log θ, with log θ a 0-d float64 tensor: the comparison runs in the
    # confidences' dtype, so round log θ to it, as that comparison does.
    log_thresholds = candidates.log().to(log_confidence.dtype)  # log 0 = -inf
    wrong = log_confidence[~agrees.bool()].sort().values
    wrong_hits = wrong.numel() - torch.searchsorted(wrong, log_thresholds, right=True)  # count of wrong > log θ
    # Compare counts, not fractions: "wrong / n <= budget" without float rounding of the fraction.
    feasible = wrong_hits <= budget * n * (1 + 1e-12)
    return float(candidates[int(feasible.nonzero()[0])])  # NEVER_HIT, the last candidate, is always feasible


# --------------------------------------------------------------------------------------- the recorded pass
@dataclass(frozen=True)
class ExitTable:
    """One recorded pass over a split: what SelfXit's threshold and subset steps need, and nothing else.

    Attributes:
        log_confidences: ``(M, N)`` each exit's max log-probability (of its calibrated output).
        predictions: ``(M, N)`` each exit's argmax.
        reference: ``(N,)`` the backbone's argmax (the label-free "truth").
        exit_flops: ``C1`` per exit: its head's FLOPs per sample.
        fallback_flops: ``C2`` per exit: FLOPs of the backbone after the stage the exit is attached to.
    """

    log_confidences: torch.Tensor
    predictions: torch.Tensor
    reference: torch.Tensor
    exit_flops: tuple[int, ...]
    fallback_flops: tuple[int, ...]

    def __post_init__(self) -> None:
        m, n = self.log_confidences.shape if self.log_confidences.dim() == 2 else (0, 0)
        if m == 0 or n == 0 or self.predictions.shape != (m, n) or self.reference.shape != (n,):
            raise ValueError(
                f"ExitTable needs log_confidences and predictions of shape (M, N), reference (N,) with M, N >= 1; got "
                f"{tuple(self.log_confidences.shape)}, {tuple(self.predictions.shape)}, {tuple(self.reference.shape)}"
            )
        if len(self.exit_flops) != m or len(self.fallback_flops) != m:
            raise ValueError(f"give one exit_flops (C1) and fallback_flops (C2) per exit ({m})")

    @classmethod
    def from_outputs(cls, outputs: AllExits, costs: ExitCosts) -> ExitTable:
        """Build the table from an all-exits pass of the (calibrated) model and its FLOPs."""
        if len(costs.ics) != outputs.num_ics:
            raise ValueError(f"costs describe {len(costs.ics)} exits but the outputs have {outputs.num_ics}")
        log_probs = outputs.exit_log_probs.detach()
        prefix = [costs.preprocess + sum(costs.stages[: s + 1]) for s in costs.attach_after]
        return cls(
            log_confidences=log_probs.amax(dim=-1),
            predictions=log_probs.argmax(dim=-1),
            reference=outputs.final_log_probs.detach().argmax(dim=-1),
            exit_flops=tuple(int(c + e) for c, e in zip(costs.ics, costs.ensembles)),
            fallback_flops=tuple(int(costs.backbone - p) for p in prefix),
        )

    @property
    def num_exits(self) -> int:
        """M, the number of candidate exits."""
        return self.log_confidences.shape[0]

    @property
    def num_samples(self) -> int:
        """N, the number of recorded samples."""
        return self.log_confidences.shape[1]

    @property
    def agrees(self) -> torch.Tensor:
        """``(M, N)`` bool: exit m's argmax equals the backbone's."""
        return self.predictions == self.reference.unsqueeze(0)

    def losses(self, risk: str = "consistency", labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(M, N)`` bool per-sample loss of answering at exit m instead of the backbone (whose own loss is 0).

        * ``consistency`` (label-free): the exit's answer differs from the backbone's;
        * ``accuracy-gap`` (needs ``labels``): the backbone is right and the exit is wrong. Its mean bounds the
          accuracy drop from above (``acc_backbone − acc_early`` is this mean minus the fraction where the exit
          alone is right), and it is a mean of a loss in {0, 1}, as risk control needs (RC-EENN's choice).
        """
        if risk == "consistency":
            return ~self.agrees
        if risk != "accuracy-gap":
            raise ValueError(f"unknown risk {risk!r}; accepted: {', '.join(RISKS)}")
        if labels is None or labels.shape != self.reference.shape:
            raise ValueError(f"the accuracy-gap risk needs labels of shape ({self.num_samples},)")
        return (self.reference == labels).unsqueeze(0) & (self.predictions != labels.unsqueeze(0))

    def take(self, index: torch.Tensor) -> ExitTable:
        """The table of the samples ``index`` only (same exits and FLOPs)."""
        return ExitTable(self.log_confidences[:, index], self.predictions[:, index], self.reference[index],
                         self.exit_flops, self.fallback_flops)

    def hits(self, thresholds: Sequence[float]) -> torch.Tensor:
        """``(M, N)`` bool: each exit on its own lets the sample out (confidence > its threshold)."""
        rule = PerExitThresholds(tuple(thresholds))
        rule.check_num_ics(self.num_exits)
        return torch.stack([rule.should_exit(m, lc.unsqueeze(-1)) for m, lc in enumerate(self.log_confidences)])


def tolerance_thresholds(
    table: ExitTable, tolerance: float, losses: torch.Tensor | None = None
) -> tuple[float, ...]:
    """Eq. 3 for every exit, each on the whole split: exit m gets the lowest threshold with drop ≤ ``T / 2^(m+1)``.

    Each exit alone stays within its budget, and in a cascade an exit sees a subset of the samples, so the
    estimated drop of any subset of exits is < T. ``losses`` (``(M, N)`` bool, see :meth:`ExitTable.losses`)
    replaces "disagrees with the backbone" as what the drop counts.
    """
    budgets = tolerance_budgets(tolerance, table.num_exits)
    ok = _ok(table, losses)
    return tuple(
        threshold_for_budget(table.log_confidences[m], ok[m], b) for m, b in enumerate(budgets)
    )


def _ok(table: ExitTable, losses: torch.Tensor | None) -> torch.Tensor:
    """``(M, N)`` bool: answering at exit m costs no loss (default: it agrees with the backbone)."""
    if losses is None:
        return table.agrees
    if losses.shape != table.predictions.shape:
        raise ValueError(f"losses must be (M, N) = {tuple(table.predictions.shape)}, got {tuple(losses.shape)}")
    return ~losses.bool()


# --------------------------------------------------------------------------------------- subsets (eq. 4)
@dataclass(frozen=True)
class SubsetOutcome:
    """What deploying the exits ``subset`` would do on the recorded samples (each exit sees only the samples no
    earlier exit of the subset let out).

    Attributes:
        subset: 0-based candidate exits, increasing.
        score: ``K(S)`` in FLOPs summed over the samples (= FLOPs saved over the plain backbone).
        hits: ``|H_Δ|`` per exit of the subset.
        misses: ``|M_Δ|`` per exit of the subset (samples it saw and let through).
        wrong_hits: hits whose answer disagrees with the backbone (or has a loss, when losses were given).
        exit_index: ``(N,)`` position in ``subset`` of the exit that answered, ``len(subset)`` = the backbone.
        num_samples: N.
    """

    subset: tuple[int, ...]
    score: int
    hits: tuple[int, ...]
    misses: tuple[int, ...]
    wrong_hits: tuple[int, ...]
    exit_index: torch.Tensor
    num_samples: int

    @property
    def flops_saved_per_sample(self) -> float:
        """``K(S) / N``: mean FLOPs saved per sample."""
        return self.score / self.num_samples

    @property
    def hit_rates(self) -> tuple[float, ...]:
        """Fraction of all samples answered at each exit of the subset."""
        return tuple(h / self.num_samples for h in self.hits)

    @property
    def agreements(self) -> tuple[float, ...]:
        """Agreement with the backbone among each exit's hits (NaN for an exit without hits)."""
        return tuple((h - w) / h if h else math.nan for h, w in zip(self.hits, self.wrong_hits))

    @property
    def estimated_accuracy_drop(self) -> float:
        """Eq. 3's bound for the whole subset: fraction of samples answered early and differently (the empirical
        risk of the deployed exits)."""
        return sum(self.wrong_hits) / self.num_samples

    def relative_cost(self, backbone_flops: int) -> float:
        """Mean FLOPs per sample as a fraction of the plain backbone's (1.0 = the backbone alone)."""
        return 1.0 - self.flops_saved_per_sample / backbone_flops


def _simulate(table: ExitTable, hits: torch.Tensor, agrees: torch.Tensor, subset: tuple[int, ...]) -> SubsetOutcome:
    n = table.num_samples
    exit_index = torch.full((n,), len(subset), dtype=torch.long)
    undecided = torch.ones(n, dtype=torch.bool)
    n_hits, n_misses, n_wrong = [], [], []
    score = 0
    for pos, m in enumerate(subset):
        hit = hits[m] & undecided
        h = int(hit.sum())
        miss = int(undecided.sum()) - h
        exit_index[hit] = pos
        undecided &= ~hit
        n_hits.append(h)
        n_misses.append(miss)
        n_wrong.append(int((hit & ~agrees[m]).sum()))
        c1, c2 = table.exit_flops[m], table.fallback_flops[m]
        score += h * (c2 - c1) - miss * c1
    return SubsetOutcome(tuple(subset), score, tuple(n_hits), tuple(n_misses), tuple(n_wrong), exit_index, n)


def simulate_subset(
    table: ExitTable, thresholds: Sequence[float], subset: Sequence[int], losses: torch.Tensor | None = None
) -> SubsetOutcome:
    """Score and per-exit counts of deploying the exits ``subset`` (0-based, increasing) with ``thresholds``
    (``wrong_hits`` count ``losses`` when given, else disagreements with the backbone)."""
    subset = tuple(subset)
    if any(not 0 <= m < table.num_exits for m in subset) or list(subset) != sorted(set(subset)):
        raise ValueError(f"subset must be increasing distinct exit indices in 0..{table.num_exits - 1}, got {subset}")
    return _simulate(table, table.hits(thresholds), _ok(table, losses), subset)


def _subsets_in_order(num_exits: int) -> list[tuple[int, ...]]:
    """Every subset of ``range(num_exits)``: by size, then lexicographically (the tie-break order)."""
    return [s for size in range(num_exits + 1) for s in itertools.combinations(range(num_exits), size)]


def _all_subset_scores(table: ExitTable, hits: torch.Tensor, subsets: list[tuple[int, ...]]) -> np.ndarray:
    """``K(S)`` of every subset at once (what :func:`_simulate` would score), from the samples' hit patterns.

    A sample with hit pattern ``h`` (bit m: exit m would let it out) leaves at the first exit of ``S`` in ``h``;
    samples sharing a pattern score alike, so ``K(S) = Σ_h count(h) · score(h, S)``.
    """
    m_all = table.num_exits
    weights = 1 << np.arange(m_all, dtype=np.int64)
    patterns, counts = np.unique(hits.numpy().T.astype(np.int64) @ weights, return_counts=True)
    masks = np.array([sum(1 << m for m in s) for s in subsets], dtype=np.int64)
    c1 = np.asarray(table.exit_flops, dtype=np.int64)
    c2 = np.asarray(table.fallback_flops, dtype=np.int64)
    in_subset = (masks[:, None] >> np.arange(m_all)) & 1  # (S, M)
    paid_before = np.cumsum(in_subset * c1, axis=1) - in_subset * c1  # heads of S before exit m
    both = patterns[:, None] & masks[None, :]  # (P, S): exits of S that would let the sample out
    first = np.log2(np.maximum(both & -both, 1)).astype(np.int64)  # lowest such exit (0 when none)
    cols = np.arange(len(subsets))[None, :]
    leaves = (c2 - c1)[first] - paid_before[cols, first]
    score = np.where(both > 0, leaves, -(in_subset @ c1)[None, :])
    return counts @ score


def select_exit_subset(
    table: ExitTable,
    thresholds: Sequence[float],
    *,
    exhaustive_limit: int = EXHAUSTIVE_LIMIT,
    losses: torch.Tensor | None = None,
) -> SubsetOutcome:
    """The subset of exits with the highest ``K(S)`` (eq. 4); the empty subset (plain backbone) scores 0.

    Exhaustive over all ``2^M`` subsets when ``M <= exhaustive_limit`` (scored at once from the samples' hit
    patterns); above, greedy forward selection (add the exit that raises K most until none does). Ties go to the
    smaller subset, then the lexicographically first. ``losses`` only change what ``wrong_hits`` counts.
    """
    hits, agrees = table.hits(thresholds), _ok(table, losses)
    m_all = table.num_exits
    if m_all <= exhaustive_limit:
        subsets = _subsets_in_order(m_all)
        best = int(np.argmax(_all_subset_scores(table, hits, subsets)))  # the first of the best, in tie order
        return _simulate(table, hits, agrees, subsets[best])
    best = _simulate(table, hits, agrees, ())
    while True:
        options = [tuple(sorted((*best.subset, m))) for m in range(m_all) if m not in best.subset]
        scored = [_simulate(table, hits, agrees, s) for s in options]
        top = max(scored, key=lambda o: o.score, default=None)
        if top is None or top.score <= best.score:
            return best
        best = top


def subset_model(model: EarlyExitModel, subset: Sequence[int]) -> EarlyExitModel:
    """The early-exit model keeping only the heads in ``subset`` (sharing the backbone and head modules).

    Needs independent heads (no cascade, no ensembles). For an empty subset use :func:`deploy_subset`.
    """
    subset = tuple(subset)
    if not subset:
        raise ValueError("subset is empty: the plain backbone answers everything (see deploy_subset)")
    if model.ensembles is not None or any(getattr(h, "cascade_in", 0) for h in model.heads):
        raise ValueError("subset_model needs independent heads: this model has ensembles or cascade inputs")
    if any(not 0 <= m < model.num_ics for m in subset) or list(subset) != sorted(set(subset)):
        raise ValueError(f"subset must be increasing distinct exit indices in 0..{model.num_ics - 1}, got {subset}")
    return EarlyExitModel(
        model.backbone, [model.heads[m] for m in subset], None, [model.attach_after[m] for m in subset]
    ).eval()


def deploy_subset(
    model: EarlyExitModel, subset: Sequence[int], thresholds: Sequence[float]
) -> tuple[EarlyExitModel, PerExitThresholds]:
    """The model with only the exits in ``subset`` and its per-exit rule (``thresholds`` are per candidate exit).

    For the empty subset: the model keeps its first head with a disabled threshold, so ``infer`` runs the plain
    backbone without any head (exactly the backbone's cost).
    """
    subset = tuple(subset)
    if len(thresholds) != model.num_ics:
        raise ValueError(f"got {len(thresholds)} thresholds for {model.num_ics} candidate exits; give one per exit")
    if not subset:
        return subset_model(model, (0,)), PerExitThresholds((DISABLED,))
    return subset_model(model, subset), PerExitThresholds(tuple(thresholds[m] for m in subset))


# --------------------------------------------------------------------------------------- risk control (LTT)
#: Shared thresholds λ tried by :func:`shared_threshold_path`, conservative (high) first: a 0.01 grid, refined
#: towards 1 where very confident exits (Pong's) put most of their samples.
SHARED_THRESHOLDS = tuple(sorted(
    {round(float(x), 6) for x in np.linspace(0.0, 0.99, 100)}
    | {round(1.0 - float(x), 9) for x in np.geomspace(1e-6, 1e-2, 25)},
    reverse=True,
))
#: Tolerances T tried by :func:`tolerance_path`, conservative (low) first.
PATH_TOLERANCES = (0.0, *(round(float(x), 8) for x in np.geomspace(1e-4, 1.0, 57)))


@dataclass(frozen=True)
class ExitConfiguration:
    """One point of a path of exit configurations.

    Attributes:
        parameter: what produced it (the shared λ, or the tolerance T of SelfXit's allocation); NaN for the
            backbone alone.
        thresholds: one confidence threshold per candidate exit.
        subset: the candidate exits deployed (increasing; empty = the backbone alone, no head runs).
        floor: on the on-ramp of :func:`tolerance_path`, the value the T thresholds were raised to (else 0).
    """

    parameter: float
    thresholds: tuple[float, ...]
    subset: tuple[int, ...]
    floor: float = 0.0

    @classmethod
    def backbone_alone(cls, num_exits: int) -> ExitConfiguration:
        """No exit at all: every sample gets the backbone's answer (risk 0) at exactly its cost."""
        return cls(math.nan, (DISABLED,) * num_exits, ())


def shared_threshold_path(num_exits: int, thresholds: Sequence[float] = SHARED_THRESHOLDS) -> list[ExitConfiguration]:
    """Fast yet Safe's family: every exit deployed, one threshold λ for all of them, from the highest λ down.

    The path does not depend on any data, so the whole calibration set can test it.
    """
    lambdas = sorted({float(t) for t in thresholds}, reverse=True)
    return [ExitConfiguration(lam, (lam,) * num_exits, tuple(range(num_exits))) for lam in lambdas]


def tolerance_path(
    table: ExitTable,
    tolerances: Sequence[float] = PATH_TOLERANCES,
    losses: torch.Tensor | None = None,
    floors: Sequence[float] = SHARED_THRESHOLDS,
) -> list[ExitConfiguration]:
    """SelfXit's per-exit thresholds (eq. 3, ``T / 2ⁿ`` each) and best subset (eq. 4) at each tolerance ``T``,
    from the lowest T up, after an on-ramp; consecutive duplicates are dropped.

    The on-ramp: the lowest T's thresholds raised to each of ``floors`` above them, from the highest down (each
    with its best subset). Even T = 0 lets out every sample more confident than the fit part's most confident
    wrong answer, which new samples break often enough to stop fixed-sequence testing at its first step on small
    calibration sets; the on-ramp starts from "almost nothing exits", as the shared λ path does.

    ``table`` must be independent of the calibration samples the path is then tested on (see
    :func:`risk_controlled_tolerance`): the path is built from data, and risk control needs it fixed in advance.
    """
    path: list[ExitConfiguration] = []

    def add(parameter: float, thresholds: tuple[float, ...], floor: float = 0.0) -> None:
        subset = select_exit_subset(table, thresholds, losses=losses).subset
        deployed = tuple(thresholds[m] for m in subset)
        if path and path[-1].subset == subset and tuple(path[-1].thresholds[m] for m in subset) == deployed:
            return
        path.append(ExitConfiguration(parameter, thresholds, subset, floor))

    tolerances = sorted(float(t) for t in tolerances)
    lowest = tolerance_thresholds(table, tolerances[0], losses)
    for floor in sorted((float(f) for f in floors if f > min(lowest)), reverse=True):
        add(tolerances[0], tuple(max(t, floor) for t in lowest), floor)
    for t in tolerances:
        add(t, tolerance_thresholds(table, t, losses))
    return path


@dataclass(frozen=True)
class RiskControl:
    """Learn-then-Test calibration of a path of exit configurations on one calibration set.

    Attributes:
        epsilon / delta: the risk level and the error probability: ``P(risk of chosen ≤ ε) ≥ 1 − δ``.
        bound: the concentration bound behind the p-values (:data:`~ee_rl.core.risk_control.HB_BOUND`).
        num_samples: ``n_cal``, the calibration samples the p-values come from.
        path: the configurations in test order (conservative first).
        risks: empirical risk of each on the calibration samples.
        p_values: its p-value for "risk > ε".
        flops_saved: mean FLOPs saved per sample over the backbone on the calibration samples.
        num_rejected: how many fixed-sequence testing certified (the leading ones).
        chosen_index: the certified configuration that saves the most FLOPs (−1: the backbone alone, when none is
            certified or none saves any).
        chosen: that configuration.
        upper_bound: its Hoeffding–Bentkus upper confidence bound at level δ (0 for the backbone alone).
    """

    epsilon: float
    delta: float
    bound: str
    num_samples: int
    path: tuple[ExitConfiguration, ...]
    risks: tuple[float, ...]
    p_values: tuple[float, ...]
    flops_saved: tuple[float, ...]
    num_rejected: int
    chosen_index: int
    chosen: ExitConfiguration
    upper_bound: float

    @property
    def empirical_risk(self) -> float:
        """The chosen configuration's risk on the calibration samples (0 for the backbone alone)."""
        return self.risks[self.chosen_index] if self.chosen_index >= 0 else 0.0


def control_risk(
    table: ExitTable,
    path: Sequence[ExitConfiguration],
    epsilon: float,
    delta: float,
    losses: torch.Tensor | None = None,
) -> RiskControl:
    """Test ``path`` on the calibration ``table`` in fixed sequence with Hoeffding–Bentkus p-values and pick the
    certified configuration that saves the most FLOPs.

    ``losses`` are the per-sample losses (:meth:`ExitTable.losses`; default: disagreement with the backbone).
    With probability ≥ 1 − ``delta`` over the draw of the (exchangeable) calibration samples, every certified
    configuration, hence the chosen one, has risk ≤ ``epsilon`` on new samples from the same distribution.
    """
    return control_risk_levels(table, path, (epsilon,), delta, losses)[0]


def control_risk_levels(
    table: ExitTable,
    path: Sequence[ExitConfiguration],
    epsilons: Sequence[float],
    delta: float,
    losses: torch.Tensor | None = None,
) -> list[RiskControl]:
    """:func:`control_risk` at several risk levels ε (each a guarantee of its own), simulating the path once."""
    if any(not 0.0 < float(e) < 1.0 for e in epsilons) or not 0.0 < float(delta) < 1.0:
        raise ValueError(f"epsilon and delta must be in (0, 1), got {list(epsilons)!r} and {delta!r}")
    if not path:
        raise ValueError("the path of configurations is empty")
    n = table.num_samples
    ok = _ok(table, losses)
    outcomes = [_simulate(table, table.hits(c.thresholds), ok, c.subset) for c in path]
    risks = tuple(o.estimated_accuracy_drop for o in outcomes)
    saved = tuple(o.flops_saved_per_sample for o in outcomes)
    results = []
    for epsilon in epsilons:
        p_values = tuple(float(p) for p in hb_p_value(np.array(risks), n, epsilon))
        num_rejected = fixed_sequence_test(p_values, delta)
        certified = [k for k in range(num_rejected) if saved[k] > 0]
        chosen_index = max(certified, key=lambda k: (saved[k], -k)) if certified else -1
        chosen = path[chosen_index] if chosen_index >= 0 else ExitConfiguration.backbone_alone(table.num_exits)
        upper = hb_upper_bound(risks[chosen_index], n, delta) if chosen_index >= 0 else 0.0
        results.append(RiskControl(float(epsilon), float(delta), HB_BOUND, n, tuple(path), risks, p_values, saved,
                                   num_rejected, chosen_index, chosen, upper))
    return results


@dataclass(frozen=True)
class RiskControlledTolerance:
    """SelfXit's per-exit thresholds with a guarantee: temperatures and the tolerance path fitted on one part of
    the calibration samples, tested on the other.

    Attributes:
        temperatures: one per exit, fitted on the fit part (label-free).
        fit_table / table: the temperature-scaled fit part and calibration (certifying) part.
        risk: the risk controlled (one of :data:`RISKS`).
        losses: ``(M, N_cal)`` its per-sample losses on ``table``.
        control: the risk-controlled choice on ``table``.
    """

    temperatures: tuple[float, ...]
    fit_table: ExitTable
    table: ExitTable
    risk: str
    losses: torch.Tensor
    control: RiskControl


def risk_controlled_tolerance(
    outputs: AllExits,
    costs: ExitCosts,
    fit: torch.Tensor,
    calibration: torch.Tensor,
    epsilon: float,
    delta: float,
    *,
    risk: str = "consistency",
    labels: torch.Tensor | None = None,
    tolerances: Sequence[float] = PATH_TOLERANCES,
    disjoint: bool = True,
) -> RiskControlledTolerance:
    """Per-exit thresholds whose risk is ≤ ``epsilon`` with probability ≥ 1 − ``delta``.

    On the samples ``fit`` of the raw all-exits pass ``outputs``: one temperature per exit (label-free), then
    SelfXit's thresholds and subset at every tolerance of ``tolerances`` (:func:`tolerance_path`). On the disjoint
    samples ``calibration``: fixed-sequence testing of that path (:func:`control_risk`). ``labels`` (all samples of
    ``outputs``) are needed for ``risk="accuracy-gap"`` only. ``disjoint=False`` lets an index appear in both parts,
    for indices that are independent draws with replacement from a pool (a repeat is a new draw, not a reuse).
    """
    if disjoint and set(fit.tolist()) & set(calibration.tolist()):
        raise ValueError("the fit and calibration samples must be disjoint: the path must not see the samples it is "
                         "tested on")
    temperatures = fit_temperatures(take_samples(outputs, fit))
    table = ExitTable.from_outputs(scaled_outputs(outputs, temperatures), costs)
    losses = table.losses(risk, labels)
    fit_table, cal_table = table.take(fit), table.take(calibration)
    path = tolerance_path(fit_table, tolerances, losses[:, fit])
    control = control_risk(cal_table, path, epsilon, delta, losses[:, calibration])
    return RiskControlledTolerance(temperatures, fit_table, cal_table, risk, losses[:, calibration], control)
