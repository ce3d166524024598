"""What the server serves: a core :class:`EarlyExitModel`, its wire input spec, an exit rule, and answer formatting.

The server knows nothing about Atari or vision: a :class:`ServedModel` is built by one small loader per kind
(:mod:`ee_rl.serve.loaders`) and from then on only the core model, the input spec and the rule matter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ee_rl.core import EarlyExitModel, ExitRule, MaxProbExit, PerExitThresholds, all_exits_batched
from ee_rl.core.calibrate import ExitTable, tolerance_thresholds
from ee_rl.core.runtime import ConditionalInference, make_runner
from ee_rl.errors import UserError
from ee_rl.serve.codecs import InputSpec


@dataclass(frozen=True)
class AnswerBlock:
    """Answers of one exit for some items of one client batch (what the batcher hands over per exit).

    Attributes:
        items: ``(n,)`` positions of the items in their client batch.
        labels: ``(n,)`` argmax (action or class) of the exit that answered.
        probs: ``(n, K)`` float32 probabilities of that exit.
        exit_index: 0-based exit (``num_ics`` = the backbone's own head).
        flops_fraction: FLOPs each item cost as a fraction of the plain backbone's.
    """

    items: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    exit_index: int
    flops_fraction: float


@dataclass
class ServedModel:
    """An early-exit model ready to answer wire batches.

    Attributes:
        name: shown by ``GET /health`` (e.g. ``Pong agent (ztw)``).
        model: the core early-exit model (eval mode).
        input_spec: shape and dtype of one item on the wire.
        rule: the exit rule every batch is answered with.
        label_name: the answer field holding the argmax: ``action`` or ``class``.
        to_model_input: maps a wire batch tensor to the model's input (identity by default).
        class_names: optional names of the K outputs.
        info: extra JSON-ready facts for ``GET /health`` (paths, method, threshold, ...).
        runner: what runs the conditional inference: None = ``model`` itself (eager torch), or an ONNX Runtime runner
            of it (see :meth:`use_runtime`).
    """

    name: str
    model: EarlyExitModel
    input_spec: InputSpec
    rule: ExitRule
    label_name: str = "class"
    to_model_input: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda x: x)
    class_names: Sequence[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    runner: ConditionalInference | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rule, ExitRule):
            raise ValueError(f"rule must be an ExitRule (e.g. MaxProbExit(0.9)), got {type(self.rule).__name__}")
        self.rule.check_num_ics(self.model.num_ics)
        self.model.eval()
        self._costs = self.model.exit_costs(self.model_input(self.example_batch(1)))
        self._fractions = tuple(c / self._costs.backbone for c in self._costs.cumulative)

    @property
    def runtime(self) -> str:
        """``torch`` or ``onnx``: what answers the batches."""
        return getattr(self.runner, "runtime", "torch")

    def use_runtime(self, runtime: str, *, threads: int = 1, cache_dir: str | Path | None = None) -> ServedModel:
        """A copy answering with ``runtime`` (``onnx``: the model's ONNX Runtime segments, exported on first use into
        ``cache_dir`` and run with ``threads`` threads; see :func:`ee_rl.core.runtime.make_runner`)."""
        runner = make_runner(self.model, runtime, sample=self.model_input(self.example_batch(1)), threads=threads,
                             cache_dir=cache_dir)
        return dataclasses.replace(self, runner=None if runtime == "torch" else runner,
                                   info={**self.info, "runtime": runtime})

    @property
    def _inference(self) -> ConditionalInference:
        return self.model if self.runner is None else self.runner

    @property
    def num_ics(self) -> int:
        """M; exit index M is the backbone's own head."""
        return self.model.num_ics

    @property
    def backbone_flops(self) -> int:
        """FLOPs of one plain backbone answer (the 100 % reference)."""
        return self._costs.backbone

    def example_batch(self, n: int) -> np.ndarray:
        """``n`` zero items in the wire format (for warm-up and FLOPs)."""
        return np.zeros((n, *self.input_spec.shape), dtype=self.input_spec.dtype)

    def model_input(self, wire: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The model's input tensor for a validated wire batch (no copy for numpy arrays)."""
        x = torch.from_numpy(wire) if isinstance(wire, np.ndarray) else wire
        return self.to_model_input(x)

    def answer_chunks(self, x: torch.Tensor) -> Iterator[AnswerBlock]:
        """Run batch-shrinking inference on model input ``x``; yield each exit's answers as soon as it fires.

        Blocks come in exit order; their ``items`` (indices into ``x``) partition ``0..len(x)-1``.
        """
        for chunk in self._inference.infer_iter(x, self.rule):
            probs = chunk.log_probs.float().exp().cpu().numpy()
            yield AnswerBlock(
                items=chunk.rows.cpu().numpy(),
                labels=probs.argmax(axis=1),
                probs=probs,
                exit_index=int(chunk.exit_index),
                flops_fraction=chunk.flops / self._costs.backbone,
            )

    def offline_answers(self, wire: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Answers of :meth:`EarlyExitModel.infer` for a whole wire batch (the reference the load test checks).

        Returns ``labels (N,)``, ``probs (N, K)``, ``exit_index (N,)`` and ``flops_fraction (N,)``.
        """
        parts = []
        for start in range(0, len(wire), batch_size):
            out = self._inference.infer(self.model_input(wire[start : start + batch_size]), self.rule)
            parts.append(
                (out.log_probs.float().exp().cpu().numpy(), out.exit_index.cpu().numpy(), out.flops.cpu().numpy())
            )
        probs = np.concatenate([p[0] for p in parts])
        return {
            "labels": probs.argmax(axis=1),
            "probs": probs,
            "exit_index": np.concatenate([p[1] for p in parts]),
            "flops_fraction": np.concatenate([p[2] for p in parts]) / self._costs.backbone,
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for ``GET /health``."""
        return {
            "name": self.name,
            "input": self.input_spec.to_dict(),
            "label": self.label_name,
            "num_outputs": int(self.model.heads[0].num_classes),
            "num_exits": self.num_ics + 1,
            "exit_flops_fraction": [round(f, 6) for f in self._fractions],
            "rule": repr(self.rule),
            **({"class_names": list(self.class_names)} if self.class_names is not None else {}),
            **self.info,
        }


def answer_fields(block: AnswerBlock, j: int, label_name: str) -> dict[str, Any]:
    """The JSON fields of the ``j``-th answer in ``block`` (without the item id)."""
    return {
        label_name: int(block.labels[j]),
        "probs": block.probs[j].tolist(),
        "exit": block.exit_index,
        "flops_fraction": block.flops_fraction,
    }


def serving_rule(
    model: EarlyExitModel,
    *,
    threshold: float | None = None,
    tolerance: float | None = None,
    calibration: torch.Tensor | None = None,
) -> ExitRule:
    """The serving rule: ``max_prob > threshold`` (ZTW), or SelfXit per-exit thresholds from a tolerance.

    Not the method-name factory (:func:`ee_rl.core.rule_for_method`): this one turns a server's flags into a rule
    for any served model, fitting SelfXit thresholds on calibration inputs when asked to.

    ``tolerance`` T (SelfXit eq. 3, label-free): each exit m gets the lowest threshold whose estimated drop in
    agreement with the backbone on the ``calibration`` inputs is at most ``T / 2^(m+1)``. Exactly one of the two.
    """
    if (threshold is None) == (tolerance is None):
        raise UserError("give exactly one of --threshold (max-probability rule) and --tolerance (SelfXit)")
    if threshold is not None:
        if not threshold >= 0:
            raise UserError(f"--threshold must be a probability >= 0 (above 1 disables early exits), got {threshold}")
        return MaxProbExit(float(threshold))
    if not 0.0 <= tolerance < 1.0:
        raise UserError(f"--tolerance must be a fraction in [0, 1), got {tolerance}")
    if calibration is None or calibration.shape[0] == 0:
        raise UserError("--tolerance needs calibration inputs (--calibration FILE.npy) to choose the thresholds")
    with torch.inference_mode():
        outputs = all_exits_batched(model, calibration)
        table = ExitTable.from_outputs(outputs, model.exit_costs(calibration))
    return PerExitThresholds(tolerance_thresholds(table, float(tolerance)))
