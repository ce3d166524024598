"""Exit rules, vectorised over a batch, and the pure function that applies a rule to all-exits outputs.

Exits are indexed 0..M-1 for the M internal classifiers (or their ensembles); index M is the backbone's own head,
which answers every sample no rule let out earlier. A rule looks at the *exit output* of IC m: the ensemble's
log-probs when the model has ensembles, otherwise the IC's own log-probs.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value)):
        raise ValueError(f"{name} must be a real number (not NaN), got {value!r}")
    return float(value)


def _log_threshold(tau: float) -> torch.Tensor:
    # max_i q_i > tau  <=>  max_i log q_i > log tau: one op less on the hot path (no exp). A 0-d float64 tensor
    # compares ~3x faster than a Python float (no scalar wrapping) and, being 0-d, never changes the compute dtype.
    return _scalar_tensor(math.log(tau) if tau > 0 else -math.inf)


def _float32(value: float) -> float:
    # A threshold rounded as torch and numpy round it to compare with float32 log-probs, so a Python comparison of
    # float32 values (exact as Python floats) decides exactly as theirs.
    return float(np.float32(value))


def _first_argmax(values: Sequence[float]) -> int:
    # The first maximum, as torch's and numpy's argmax.
    return values.index(max(values))


def _scalar_tensor(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


class ExitRule(ABC):
    """Decides which samples of a batch leave at internal exit ``m``.

    Subclasses implement :meth:`should_exit`; it must decide each row from that row alone (so batch shrinking and
    the all-exits simulation agree).
    """

    #: True if :meth:`should_exit` needs the argmax history of the previous exits.
    needs_history: bool = False

    @property
    @abstractmethod
    def never_exits_early(self) -> bool:
        """True if no sample can ever leave at an internal exit, so inference may skip all heads."""

    def check_num_ics(self, num_ics: int) -> None:
        """Raise ``ValueError`` if the rule cannot be used with ``num_ics`` internal classifiers."""

    @abstractmethod
    def should_exit(self, m: int, log_probs: torch.Tensor, argmax_history: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean mask ``(B,)``: which rows exit at internal exit ``m``.

        Args:
            m: 0-based internal exit index.
            log_probs: that exit's log-probabilities ``(B, K)``.
            argmax_history: ``(B, m)`` argmax of exits ``0..m-1`` for the same rows (only if ``needs_history``).
        """

    def should_exit_numpy(
        self, m: int, log_probs: np.ndarray, argmax_history: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`should_exit` on numpy arrays (for runtimes that hand back numpy, e.g. ONNX Runtime).

        The same decisions; this default goes through :meth:`should_exit` on torch views of the arrays, and rules
        whose test is a comparison or an argmax answer in numpy directly (no eager-torch dispatch per exit).
        """
        history = None if argmax_history is None else torch.from_numpy(argmax_history)
        return self.should_exit(m, torch.from_numpy(log_probs), history).numpy()

    def should_exit_row(self, m: int, log_probs: Sequence[float], argmax_history: Sequence[int] = ()) -> bool:
        """:meth:`should_exit` for one sample given as Python numbers: the float32 log-probabilities of exit ``m``
        (e.g. ``array[0].tolist()``) and the argmax of exits ``0..m-1`` (only read if ``needs_history``).

        The same decision as the batched methods. A compiled runtime answering batch 1 uses it: after a call into
        ONNX Runtime every numpy reduction costs 5-20 µs (cold caches), plain Python on six numbers ~1 µs. This
        default goes through :meth:`should_exit_numpy`; threshold and argmax rules answer in plain Python.
        """
        history = np.array([argmax_history], dtype=np.int64).reshape(1, len(argmax_history))
        rows = np.array([log_probs], dtype=np.float32)
        return bool(self.should_exit_numpy(m, rows, history if self.needs_history else None)[0])


@dataclass(frozen=True)
class MaxProbExit(ExitRule):
    """ZTW / SDN confidence rule: exit when ``max_i q_i > tau``. ``tau > 1`` never exits early; ``tau < 1/K`` always.

    Compared in log space (``max_i log q_i > log tau``), which equals the rule up to float rounding at a tie.
    """

    tau: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", _real("MaxProbExit tau", self.tau))
        object.__setattr__(self, "_log_tau", _log_threshold(self.tau))
        object.__setattr__(self, "_log_tau_float", float(self._log_tau))
        object.__setattr__(self, "_log_tau_float32", _float32(self._log_tau_float))

    @property
    def never_exits_early(self) -> bool:
        return self.tau > 1.0

    def should_exit(self, m: int, log_probs: torch.Tensor, argmax_history: torch.Tensor | None = None) -> torch.Tensor:
        return log_probs.amax(dim=-1) > self._log_tau

    def should_exit_numpy(
        self, m: int, log_probs: np.ndarray, argmax_history: np.ndarray | None = None
    ) -> np.ndarray:
        # In the log-probs' own dtype, as torch compares with a 0-d threshold.
        return log_probs.max(axis=-1) > log_probs.dtype.type(self._log_tau_float)

    def should_exit_row(self, m: int, log_probs: Sequence[float], argmax_history: Sequence[int] = ()) -> bool:
        return max(log_probs) > self._log_tau_float32


@dataclass(frozen=True)
class PerExitThresholds(ExitRule):
    """SelfXit-style confidence rule with one threshold per internal exit: exit at m when ``max_i q_i > taus[m]``.

    A threshold above 1 disables that exit. Needs exactly one threshold per IC.
    """

    taus: tuple[float, ...]

    def __post_init__(self) -> None:
        if isinstance(self.taus, (str, bytes)) or not isinstance(self.taus, Sequence) or len(self.taus) == 0:
            raise ValueError(f"taus must be a non-empty sequence of real thresholds, one per IC, got {self.taus!r}")
        object.__setattr__(self, "taus", tuple(_real(f"taus[{i}]", t) for i, t in enumerate(self.taus)))
        object.__setattr__(self, "_log_taus", tuple(_log_threshold(t) for t in self.taus))
        object.__setattr__(self, "_log_taus_float", tuple(float(t) for t in self._log_taus))
        object.__setattr__(self, "_log_taus_float32", tuple(_float32(t) for t in self._log_taus_float))
        object.__setattr__(self, "_never_exits_early", all(t > 1.0 for t in self.taus))  # read on every call

    @property
    def never_exits_early(self) -> bool:
        return self._never_exits_early

    def check_num_ics(self, num_ics: int) -> None:
        if len(self.taus) != num_ics:
            raise ValueError(
                f"PerExitThresholds has {len(self.taus)} thresholds but the model has {num_ics} ICs; give one per IC"
            )

    def should_exit(self, m: int, log_probs: torch.Tensor, argmax_history: torch.Tensor | None = None) -> torch.Tensor:
        return log_probs.amax(dim=-1) > self._log_taus[m]

    def should_exit_numpy(
        self, m: int, log_probs: np.ndarray, argmax_history: np.ndarray | None = None
    ) -> np.ndarray:
        return log_probs.max(axis=-1) > log_probs.dtype.type(self._log_taus_float[m])

    def should_exit_row(self, m: int, log_probs: Sequence[float], argmax_history: Sequence[int] = ()) -> bool:
        return max(log_probs) > self._log_taus_float32[m]


@dataclass(frozen=True)
class EntropyExit(ExitRule):
    """BranchyNet rule: exit when the entropy (nats) of the exit's distribution is ``< threshold``.

    ``threshold <= 0`` never exits early (entropy is non-negative).
    """

    threshold: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _real("EntropyExit threshold", self.threshold))
        object.__setattr__(self, "_threshold", _scalar_tensor(self.threshold))

    @property
    def never_exits_early(self) -> bool:
        return self.threshold <= 0.0

    def should_exit(self, m: int, log_probs: torch.Tensor, argmax_history: torch.Tensor | None = None) -> torch.Tensor:
        # entr(p) = -p log p with entr(0) = 0, so a zero probability cannot produce 0 * -inf = NaN.
        return torch.special.entr(log_probs.exp()).sum(dim=-1) < self._threshold


@dataclass(frozen=True)
class PatienceExit(ExitRule):
    """PBEE rule: exit at m when the argmax of exit m equals the argmax of each of the previous ``patience`` exits.

    ``patience=0`` exits at the first IC. With ``patience >= M`` no sample exits early, but the heads still run
    (the rule cannot know M), so :attr:`never_exits_early` is False.
    """

    patience: int

    needs_history = True

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"PatienceExit patience must be a non-negative integer, got {self.patience!r}")

    @property
    def never_exits_early(self) -> bool:
        return False

    def should_exit(self, m: int, log_probs: torch.Tensor, argmax_history: torch.Tensor | None = None) -> torch.Tensor:
        p = self.patience
        if m < p:
            return torch.zeros(log_probs.shape[0], dtype=torch.bool, device=log_probs.device)
        if p == 0:
            return torch.ones(log_probs.shape[0], dtype=torch.bool, device=log_probs.device)
        if argmax_history is None or argmax_history.shape[1] != m:
            raise ValueError(f"PatienceExit at exit {m} needs argmax_history of shape (B, {m})")
        current = log_probs.argmax(dim=-1, keepdim=True)
        return (argmax_history[:, m - p :] == current).all(dim=1)

    def should_exit_numpy(
        self, m: int, log_probs: np.ndarray, argmax_history: np.ndarray | None = None
    ) -> np.ndarray:
        p = self.patience
        if m < p:
            return np.zeros(log_probs.shape[0], dtype=bool)
        if p == 0:
            return np.ones(log_probs.shape[0], dtype=bool)
        if argmax_history is None or argmax_history.shape[1] != m:
            raise ValueError(f"PatienceExit at exit {m} needs argmax_history of shape (B, {m})")
        current = log_probs.argmax(axis=-1)[:, None]  # the first maximum, as torch's argmax
        return (argmax_history[:, m - p :] == current).all(axis=1)

    def should_exit_row(self, m: int, log_probs: Sequence[float], argmax_history: Sequence[int] = ()) -> bool:
        p = self.patience
        if m < p:
            return False
        if p == 0:
            return True
        if len(argmax_history) != m:
            raise ValueError(f"PatienceExit at exit {m} needs an argmax history of {m} exits, got {len(argmax_history)}")
        current = _first_argmax(log_probs)
        return all(previous == current for previous in argmax_history[m - p :])


def assign_exits(exit_log_probs: torch.Tensor | Sequence[torch.Tensor], rule: ExitRule) -> torch.Tensor:
    """Pure function: the exit each sample takes under ``rule``, from every internal exit's outputs.

    Args:
        exit_log_probs: internal exits' log-probs, ``(M, B, K)`` or a sequence of M tensors ``(B, K)`` (the
            final head is not needed: it is the fallback).
        rule: the exit rule.

    Returns:
        Long tensor ``(B,)`` with values in ``0..M`` (M = answered by the backbone's head). Matches
        :meth:`ee_rl.core.model.EarlyExitModel.infer` because both call ``rule.should_exit`` on the same rows.
    """
    if isinstance(exit_log_probs, torch.Tensor):
        if exit_log_probs.dim() != 3:
            raise ValueError(f"exit_log_probs must be (M, B, K), got shape {tuple(exit_log_probs.shape)}")
        exits = list(exit_log_probs.unbind(0))
    else:
        exits = list(exit_log_probs)
    if not exits:
        raise ValueError("exit_log_probs must hold at least one internal exit")
    num_ics = len(exits)
    rule.check_num_ics(num_ics)
    batch = exits[0].shape[0]
    device = exits[0].device
    exit_index = torch.full((batch,), num_ics, dtype=torch.long, device=device)
    if rule.never_exits_early:
        return exit_index
    undecided = torch.ones(batch, dtype=torch.bool, device=device)
    history = torch.empty((batch, 0), dtype=torch.long, device=device)
    for m, log_probs in enumerate(exits):
        leave = rule.should_exit(m, log_probs, history if rule.needs_history else None) & undecided
        exit_index[leave] = m
        undecided &= ~leave
        if rule.needs_history:
            history = torch.cat((history, log_probs.argmax(dim=-1, keepdim=True)), dim=1)
    return exit_index
