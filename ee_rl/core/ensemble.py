"""Ensembles over ICs 1..m, in log space (ZTW eq. 2 geometric; appendix C.2 eq. 4 additive)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ee_rl.core.param_cache import DerivedConstant

ENSEMBLE_INITS = ("uniform", "last")
ENSEMBLE_KINDS = ("geometric", "additive")


def _exp_column(log_w: torch.Tensor) -> torch.Tensor:
    return log_w.exp().unsqueeze(-1)


class Ensemble(nn.Module):
    """Base of the ensembles: m members, K classes.

    Member weights ``w_j = exp(log_w_j) > 0`` and class priors ``b_i = exp(log_b_i) > 0``.

    The exp parametrisation keeps both strictly positive and makes optimiser steps relative (scale-free).
    """

    def __init__(self, num_members: int, num_classes: int, init: str, last_weight_others: float) -> None:
        super().__init__()
        for name, v in (("num_members", num_members), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if init not in ENSEMBLE_INITS:
            raise ValueError(f"init must be one of {ENSEMBLE_INITS}, got {init!r}")
        self.num_members = num_members
        self.num_classes = num_classes
        if init == "uniform":
            log_w = torch.full((num_members,), math.log(1.0 / num_members))
        else:
            log_w = torch.full((num_members,), math.log(last_weight_others))
            log_w[-1] = 0.0
        self.log_w = nn.Parameter(log_w)
        self.log_b = nn.Parameter(torch.zeros(num_classes))
        self._weight_column_constant: DerivedConstant[torch.Tensor] = DerivedConstant(_exp_column)
        self._for_export = False

    def prepare_for_export(self) -> None:
        """Combine the members with ops an ONNX graph runs well (see the subclasses' ``forward``); called by
        :func:`ee_rl.core.onnx_export.export_segments` on the copy it traces."""
        self._for_export = True

    @property
    def weights(self) -> torch.Tensor:
        """Member weights ``w_j > 0``, shape ``(num_members,)``."""
        return self.log_w.exp()

    @property
    def class_priors(self) -> torch.Tensor:
        """Class priors ``b_i > 0``, shape ``(num_classes,)``."""
        return self.log_b.exp()

    def _weight_column(self) -> torch.Tensor:
        """``exp(log_w)`` as an ``(m, 1)`` column: differentiable in training, else cached until ``log_w`` changes.

        Reads the parameter from ``_parameters`` (an nn.Module attribute lookup costs µs on the batch-1 hot path).
        """
        p = self._parameters["log_w"]
        if torch.is_grad_enabled() and p.requires_grad:
            return _exp_column(p)
        return self._weight_column_constant.get(p)

    def _check_members(self, log_probs: Sequence[torch.Tensor]) -> None:
        if len(log_probs) != self.num_members:
            raise ValueError(
                f"{type(self).__name__} combines {self.num_members} members, got {len(log_probs)} log-prob tensors"
            )

    def _stack(self, log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        self._check_members(log_probs)
        return torch.stack(tuple(log_probs), dim=-1)  # (B, K, m)


class GeometricEnsemble(Ensemble):
    """ZTW eq. 2: ``q_i ∝ b_i * prod_j p_ij ** w_j``, computed as ``log_softmax(sum_j w_j log p_ij + log b_i)``.

    Input: the m members' log-probabilities (log-softmax of IC logits), each ``(B, K)``.
    Output: a proper log-distribution ``(B, K)`` (logsumexp over classes is 0).

    Init ``"uniform"`` (default): ``w_j = 1/m``, ``b = 1`` -- the normalised geometric mean of the members. ICs are
    strongly correlated, so the plain product (w = 1) would count the same evidence m times and be over-confident;
    the mean keeps the scale of one member and gives every member the same, non-vanishing gradient.
    Init ``"last"``: ``w_m = 1`` and the other weights 0.01 -- starts as "IC m alone" (never worse than IC m).
    """

    def __init__(self, num_members: int, num_classes: int, init: str = "uniform") -> None:
        super().__init__(num_members, num_classes, init, last_weight_others=0.01)

    def forward(self, log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Combine ``num_members`` log-prob tensors ``(B, K)`` into the ensemble's log-probs ``(B, K)``."""
        if self._for_export:
            # Scaled members summed: no stack / matmul / squeeze nodes in an exported graph (same values up to
            # float rounding).
            self._check_members(log_probs)
            scores = self._parameters["log_b"]
            for w, lp in zip(self.weights.unbind(0), log_probs):
                scores = scores + w * lp
            return torch.log_softmax(scores, dim=-1)
        stacked = self._stack(log_probs)
        # A matmul (not an elementwise sum) so FlopCounterMode charges the weighted sum to the ensemble.
        scores = (stacked @ self._weight_column()).squeeze(-1) + self._parameters["log_b"]
        return torch.log_softmax(scores, dim=-1)


class AdditiveEnsemble(Ensemble):
    """ZTW appendix C.2 eq. 4 (ablation): ``q_i ∝ sum_j w_j p_ij + b_i``, in log space via logsumexp.

    Init ``"uniform"`` (default): ``w_j = 1/m`` and small priors ``b_i = 1e-3`` -- close to the arithmetic mean of
    the members. Init ``"last"``: ``w_m = 1``, other weights and priors 1e-3 -- close to "IC m alone".
    """

    def __init__(self, num_members: int, num_classes: int, init: str = "uniform") -> None:
        super().__init__(num_members, num_classes, init, last_weight_others=1e-3)
        # Priors are additive here: b = 1 would swamp the members' probabilities.
        with torch.no_grad():
            self.log_b.fill_(math.log(1e-3))

    def forward(self, log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Combine ``num_members`` log-prob tensors ``(B, K)`` into the ensemble's log-probs ``(B, K)``."""
        stacked = self._stack(log_probs) + self.log_w  # log(w_j p_ij), (B, K, m)
        log_b = self.log_b.expand(stacked.shape[:-1]).unsqueeze(-1)
        unnormalised = torch.logsumexp(torch.cat((stacked, log_b), dim=-1), dim=-1)
        return torch.log_softmax(unnormalised, dim=-1)


def make_ensembles(num_ics: int, num_classes: int, kind: str = "geometric", init: str = "uniform") -> nn.ModuleList:
    """One ensemble per IC: ensemble m (0-based) combines ICs ``0..m``, so it has ``m + 1`` members."""
    if kind not in ENSEMBLE_KINDS:
        raise ValueError(f"kind must be one of {ENSEMBLE_KINDS}, got {kind!r}")
    if isinstance(num_ics, bool) or not isinstance(num_ics, int) or num_ics < 1:
        raise ValueError(f"num_ics must be a positive integer, got {num_ics!r}")
    cls = GeometricEnsemble if kind == "geometric" else AdditiveEnsemble
    return nn.ModuleList(cls(m + 1, num_classes, init=init) for m in range(num_ics))
