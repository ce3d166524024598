"""SelfXit exit heads (section 3.2): the architecture space, label-free training on a medial dataset, and an Optuna
search scored by agreement with the backbone and FLOPs.

A medial dataset (eq. 1) pairs a stage's output ``B_L(i)`` with the backbone's output distribution ``B(i)`` for
unlabeled inputs ``i``; heads learn it by minimising ``KL(B(i) || head(B_L(i)))`` while everything else is frozen.
Because the backbone is frozen, a stage's outputs are computed once and reused for every epoch and every trial.

Search space (the paper's): 0-2 conv layers (kernel and stride choices; channels kept; padding ``kernel // 2``;
ReLU), flatten, then 1-2 linear layers (the first's width a choice when there are two; ReLU between), ending in
``num_classes`` logits. Optuna's multi-objective TPE maximises agreement and minimises FLOPs; from the Pareto front
the cheapest head whose agreement is within ``agreement_slack`` of the best is kept: the paper's "minimal
architecture that ... predicts the backbone's output with acceptable accuracy".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
import torch
import torch.nn.functional as F
from torch import nn

from ee_rl.core.flops import count_flops


@dataclass(frozen=True)
class HeadSpec:
    """One exit-head architecture.

    Attributes:
        convs: ``(kernel, stride)`` of each conv layer (0-2 of them; channels are kept).
        hidden: widths of the hidden linear layers before the output layer (0-1 of them).
    """

    convs: tuple[tuple[int, int], ...] = ()
    hidden: tuple[int, ...] = ()

    def describe(self) -> str:
        """A short human-readable form, e.g. ``conv3/s2-fc64-out``."""
        parts = [f"conv{k}/s{s}" for k, s in self.convs] + [f"fc{w}" for w in self.hidden] + ["out"]
        return "-".join(parts)

    def to_dict(self) -> dict[str, list]:
        """JSON-friendly form (see :meth:`from_dict`)."""
        return {"convs": [list(c) for c in self.convs], "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: dict) -> HeadSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple((int(k), int(s)) for k, s in data.get("convs", ())), tuple(int(w) for w in data["hidden"]))


@dataclass(frozen=True)
class SearchSpace:
    """Choices of the head search (defaults follow the paper's description; widen them as the budget allows)."""

    max_convs: int = 2
    kernels: tuple[int, ...] = (1, 3, 5)
    strides: tuple[int, ...] = (1, 2)
    max_linears: int = 2
    widths: tuple[int, ...] = (32, 64, 128)

    def __post_init__(self) -> None:
        if not 0 <= self.max_convs <= 2 or not 1 <= self.max_linears <= 2:
            raise ValueError(f"max_convs must be 0-2 and max_linears 1-2, got {self.max_convs}, {self.max_linears}")
        for name in ("kernels", "strides", "widths"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {values!r}")


class ConvLinearHead(nn.Module):
    """An exit head built from a :class:`HeadSpec`: ``[conv k/s + ReLU] x n -> flatten -> [linear + ReLU] -> linear``.

    Follows the core's head interface (``forward(x, prev_logits=None)``, ``num_classes``, ``cascade_in = 0``).

    Args:
        in_shape: per-sample shape of the stage output it reads: ``(C, H, W)``, or ``(D,)`` (no convs then).
        num_classes: K.
        spec: the architecture.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, spec: HeadSpec) -> None:
        super().__init__()
        in_shape = tuple(int(d) for d in in_shape)
        if spec.convs and len(in_shape) != 3:
            raise ValueError(f"conv layers need a (C, H, W) stage output, got per-sample shape {in_shape}")
        self.num_classes = int(num_classes)
        self.cascade_in = 0
        self.spec = spec
        layers: list[nn.Module] = []
        if spec.convs:
            c, h, w = in_shape
            for k, s in spec.convs:
                layers += [nn.Conv2d(c, c, k, stride=s, padding=k // 2), nn.ReLU()]
                h, w = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
            flat = c * h * w
        else:
            flat = 1
            for d in in_shape:
                flat *= d
        layers.append(nn.Flatten())
        for width in spec.hidden:
            layers += [nn.Linear(flat, width), nn.ReLU()]
            flat = width
        layers.append(nn.Linear(flat, self.num_classes))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, prev_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_classes)``; ``prev_logits`` must be None (independent head)."""
        if prev_logits is not None:
            raise ValueError("ConvLinearHead has no cascade input: do not pass prev_logits")
        return self.body(x)


# ---------------------------------------------------------------------------------------------- label-free training
@dataclass(frozen=True)
class TrainSettings:
    """Training of one head on a medial dataset: Adam on ``KL(backbone || head)``, mini-batches, fixed epochs."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0


def train_head(
    head: nn.Module, features: torch.Tensor, target_log_probs: torch.Tensor, settings: TrainSettings
) -> list[float]:
    """Fit ``head`` so that ``log_softmax(head(features))`` matches the backbone's ``target_log_probs`` (KL).

    Only ``head``'s parameters change. Deterministic for a given ``settings.seed``. Returns the mean training KL
    of each epoch.
    """
    n = features.shape[0]
    if n == 0 or target_log_probs.shape[0] != n or target_log_probs.dim() != 2:
        raise ValueError(
            f"features (N, ...) and target_log_probs (N, K) must have the same N >= 1, got "
            f"{tuple(features.shape)} and {tuple(target_log_probs.shape)}"
        )
    features = features.detach()
    target_log_probs = target_log_probs.detach()
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    head.train()
    history = []
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, settings.batch_size):
            rows = order[start : start + settings.batch_size]
            log_q = torch.log_softmax(head(features[rows]), dim=-1)
            loss = F.kl_div(log_q, target_log_probs[rows], log_target=True, reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * rows.numel()
        history.append(total / n)
    head.eval()
    return history


@torch.no_grad()
def agreement(head: nn.Module, features: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of samples where the head's argmax equals ``reference`` (the backbone's argmax)."""
    return float((head(features).argmax(dim=-1) == reference).double().mean())


def head_flops(head: nn.Module, features: torch.Tensor) -> int:
    """FLOPs of one sample through ``head`` (core convention: a multiply-add is 2 FLOPs)."""
    return count_flops(head, features[:1])[0]


# --------------------------------------------------------------------------------------------------- the search
@dataclass(frozen=True)
class HeadTrial:
    """One evaluated architecture: validation agreement with the backbone and FLOPs per sample."""

    spec: HeadSpec
    agreement: float
    flops: int


@dataclass
class HeadSearchResult:
    """The kept head (trained), its trial, and every distinct trial in the order tried."""

    head: ConvLinearHead
    best: HeadTrial
    trials: list[HeadTrial] = field(default_factory=list)


def _suggest_spec(trial: optuna.Trial, space: SearchSpace, spatial: bool) -> HeadSpec:
    n_convs = trial.suggest_int("n_convs", 0, space.max_convs) if spatial and space.max_convs else 0
    convs = tuple(
        (trial.suggest_categorical(f"kernel{i}", space.kernels), trial.suggest_categorical(f"stride{i}", space.strides))
        for i in range(n_convs)
    )
    n_linears = trial.suggest_int("n_linears", 1, space.max_linears) if space.max_linears > 1 else 1
    hidden = (trial.suggest_categorical("width", space.widths),) if n_linears == 2 else ()
    return HeadSpec(convs, hidden)


def pick_head(trials: Sequence[HeadTrial], agreement_slack: float) -> HeadTrial:
    """The cheapest trial whose agreement is within ``agreement_slack`` of the best (ties: higher agreement)."""
    if not trials:
        raise ValueError("pick_head needs at least one trial")
    best_agreement = max(t.agreement for t in trials)
    ok = [t for t in trials if t.agreement >= best_agreement - agreement_slack]
    return min(ok, key=lambda t: (t.flops, -t.agreement))


def search_head(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    val_features: torch.Tensor,
    val_reference: torch.Tensor,
    num_classes: int,
    *,
    space: SearchSpace = SearchSpace(),
    n_trials: int = 12,
    agreement_slack: float = 0.01,
    settings: TrainSettings = TrainSettings(),
) -> HeadSearchResult:
    """Search the head for one exit with Optuna (multi-objective TPE, seeded by ``settings.seed``).

    Args:
        train_features: the stage's outputs on the training split (medial dataset inputs).
        train_targets: the backbone's log-probabilities on those samples (medial dataset targets).
        val_features: the stage's outputs on the validation split.
        val_reference: the backbone's argmax there (agreement is measured against it; no labels).
        num_classes: K.
        space: the architecture choices.
        n_trials: Optuna trials (repeated architectures are not retrained).
        agreement_slack: how much agreement the kept head may give up for fewer FLOPs.
        settings: training of each candidate (every candidate starts from the same seed).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    in_shape = tuple(train_features.shape[1:])
    spatial = len(in_shape) == 3
    done: dict[HeadSpec, tuple[HeadTrial, ConvLinearHead]] = {}

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        spec = _suggest_spec(trial, space, spatial)
        if spec not in done:
            torch.manual_seed(settings.seed)
            head = ConvLinearHead(in_shape, num_classes, spec)
            train_head(head, train_features, train_targets, settings)
            score = agreement(head, val_features, val_reference)
            done[spec] = (HeadTrial(spec, score, head_flops(head, val_features)), head)
        result = done[spec][0]
        return result.agreement, float(result.flops)

    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(n_trials, 6))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    trials = [t for t, _ in done.values()]
    best = pick_head(trials, agreement_slack)
    return HeadSearchResult(head=done[best.spec][1], best=best, trials=trials)
