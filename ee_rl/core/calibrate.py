"""SelfXit calibration and exit selection (TMLR 2024, sections 3.3-3.4), shared by vision and RL.

* temperature scaling of each exit (Guo et al. 2017), fitted label-free: the target is the backbone's own argmax;
* per-exit thresholds from a tolerated accuracy drop ``T`` (eq. 3): exit ``n`` (1-based) gets the lowest threshold
  whose estimated drop ``HR(θ) × (1 − CA(θ))`` on the validation split is ≤ ``T / 2ⁿ``;
* exit-subset selection (eq. 4): from one recorded pass, score every subset ``S`` of exits with
  ``K(S) = Σ_{Δ∈S} |H_Δ|·(C2_Δ − C1_Δ) − |M_Δ|·C1_Δ``, where later exits only see what earlier exits let through.

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

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn

from ee_rl.core.exits import PerExitThresholds
from ee_rl.core.flops import ExitCosts
from ee_rl.core.model import AllExits, EarlyExitModel

#: A threshold no confidence exceeds (log-probabilities are ≤ 0): the exit answers nothing, but its head still runs.
NEVER_HIT = 1.0
#: Above 1 every exit is off and ``infer`` runs the plain backbone without any head (see PerExitThresholds).
DISABLED = 2.0
#: Subset search is exhaustive up to this many candidate exits (2¹² = 4096 subsets), greedy above.
EXHAUSTIVE_LIMIT = 12


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
    seen, and :data:`NEVER_HIT` (drop 0, always feasible). The drop never grows with θ: a binary search finds the
    lowest feasible candidate.
    """
    if not budget >= 0:
        raise ValueError(f"budget must be a non-negative fraction, got {budget!r}")
    n = log_confidence.numel()
    values = torch.unique(log_confidence.detach()).double().exp().tolist()  # ascending
    candidates = [0.0, *(v for v in values if 0.0 < v < NEVER_HIT), NEVER_HIT]
    # Compare counts, not fractions: "wrong / n <= budget" without float rounding of the fraction.
    limit = budget * n * (1 + 1e-12)

    def feasible(theta: float) -> bool:
        return int((_hits(log_confidence, theta) & ~agrees.bool()).sum()) <= limit

    lo, hi = 0, len(candidates) - 1  # candidates[hi] is always feasible
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


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

    def hits(self, thresholds: Sequence[float]) -> torch.Tensor:
        """``(M, N)`` bool: each exit on its own lets the sample out (confidence > its threshold)."""
        rule = PerExitThresholds(tuple(thresholds))
        rule.check_num_ics(self.num_exits)
        return torch.stack([rule.should_exit(m, lc.unsqueeze(-1)) for m, lc in enumerate(self.log_confidences)])


def tolerance_thresholds(table: ExitTable, tolerance: float) -> tuple[float, ...]:
    """Eq. 3 for every exit, each on the whole split: exit m gets the lowest threshold with drop ≤ ``T / 2^(m+1)``.

    Each exit alone stays within its budget, and in a cascade an exit sees a subset of the samples, so the
    estimated drop of any subset of exits is < T.
    """
    budgets = tolerance_budgets(tolerance, table.num_exits)
    agrees = table.agrees
    return tuple(
        threshold_for_budget(table.log_confidences[m], agrees[m], b) for m, b in enumerate(budgets)
    )


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
        wrong_hits: hits whose answer disagrees with the backbone.
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
        """Eq. 3's bound for the whole subset: fraction of samples answered early and differently."""
        return sum(self.wrong_hits) / self.num_samples


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


def simulate_subset(table: ExitTable, thresholds: Sequence[float], subset: Sequence[int]) -> SubsetOutcome:
    """Score and per-exit counts of deploying the exits ``subset`` (0-based, increasing) with ``thresholds``."""
    subset = tuple(subset)
    if any(not 0 <= m < table.num_exits for m in subset) or list(subset) != sorted(set(subset)):
        raise ValueError(f"subset must be increasing distinct exit indices in 0..{table.num_exits - 1}, got {subset}")
    return _simulate(table, table.hits(thresholds), table.agrees, subset)


def select_exit_subset(
    table: ExitTable, thresholds: Sequence[float], *, exhaustive_limit: int = EXHAUSTIVE_LIMIT
) -> SubsetOutcome:
    """The subset of exits with the highest ``K(S)`` (eq. 4); the empty subset (plain backbone) scores 0.

    Exhaustive over all ``2^M`` subsets when ``M <= exhaustive_limit``; above, greedy forward selection (add the
    exit that raises K most until none does). Ties go to the smaller subset, then the lexicographically first.
    """
    hits, agrees = table.hits(thresholds), table.agrees
    m_all = table.num_exits
    best = _simulate(table, hits, agrees, ())
    if m_all <= exhaustive_limit:
        for size in range(1, m_all + 1):
            for subset in itertools.combinations(range(m_all), size):
                outcome = _simulate(table, hits, agrees, subset)
                if outcome.score > best.score:
                    best = outcome
        return best
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
