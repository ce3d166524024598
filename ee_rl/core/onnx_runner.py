"""Conditional inference in ONNX Runtime: the exported segments run one after another, and only the rows that did
not exit go on, so an early exit really skips the rest of the network.

:class:`OnnxEarlyExitRunner` keeps :meth:`EarlyExitModel.infer`'s contract (the same :class:`ExitRule` objects,
batch shrinking, per-row exit index and FLOPs, :class:`ExitChunk` streaming). The loop itself runs in numpy
(:meth:`ExitRule.should_exit_numpy`): at batch 1 each eager-torch op costs microseconds, more after ONNX Runtime
has run, so the acting path (:meth:`OnnxEarlyExitRunner.infer_arrays`) runs none. At batch 1 it runs no numpy
reduction either: the rule reads the exit's one row as Python floats (:meth:`ExitRule.should_exit_row`), which took
the decision's overhead beyond the ORT call from ~60 to ~15 µs on the shipped Pong agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ee_rl.core.exits import ExitRule
from ee_rl.core.flops import ExitCosts
from ee_rl.core.model import AllExits, EarlyExitModel, EarlyExitOutput, ExitChunk
from ee_rl.core.onnx_export import segment_specs
from ee_rl.errors import UserError

#: What to install when onnxruntime is missing.
ONNX_EXTRA_HINT = "pip install 'ee_rl[onnx]'"


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a one-line :class:`UserError` naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"--runtime onnx needs onnxruntime (and onnx, onnxscript to export): {ONNX_EXTRA_HINT}") from None
    return onnxruntime


def session_options(threads: int) -> Any:
    """ORT options for small sequential graphs: ``threads`` intra-op threads, no spinning, sequential execution.

    Spinning threads would burn the cores between the segments' calls (and between decisions), and parallel
    execution of a chain of small nodes only adds scheduling overhead (onnxruntime issues 17011, 22778).
    """
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxEarlyExitRunner:
    """An :class:`EarlyExitModel`'s conditional inference in ONNX Runtime, from its exported segments.

    Args:
        model: the torch model the segments were exported from (used for the FLOPs table and argument checks; its
            weights are not read at inference).
        directory: the folder :func:`ee_rl.core.onnx_export.load_or_export_segments` returned for it.
        threads: ORT intra-op threads per session.

    Inputs are CPU tensors (or, for :meth:`infer_arrays`, numpy arrays) of the dtype and per-sample shape the
    segments were exported for.
    """

    runtime = "onnx"

    def __init__(self, model: EarlyExitModel, directory: str | Path, *, threads: int = 1) -> None:
        ort = require_onnxruntime()
        directory = Path(directory)
        self.model = model
        self.threads = int(threads)
        self.directory = directory
        options = session_options(self.threads)
        specs = segment_specs(model)
        try:
            self._sessions = [
                ort.InferenceSession(str(directory / f"{spec.name}.onnx"), options, providers=["CPUExecutionProvider"])
                for spec in specs
            ]
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise UserError(f"cannot load the ONNX segments in {directory}: {exc}") from None
        for spec, session in zip(specs, self._sessions):
            inputs = tuple(i.name for i in session.get_inputs())
            outputs = tuple(o.name for o in session.get_outputs())
            if inputs != spec.inputs or outputs != spec.outputs:  # e.g. written by an older export format
                raise UserError(f"{directory / spec.name}.onnx has inputs {inputs} and outputs {outputs}, expected "
                                f"{spec.inputs} and {spec.outputs}")
        self._backbone = self._sessions[-1]
        self._final = self._sessions[-2]
        self._exit_sessions = self._sessions[:-2]
        self._num_ics = model.num_ics
        self._cascade = tuple(bool(getattr(h, "cascade_in", 0)) for h in model.heads)
        self._ensembles = model.ensembles is not None
        self._input_names = [spec.inputs for spec in specs]
        # Outputs each exit segment must hand back: features; logits only if the next IC cascades on them; the
        # IC's log-probs only for later ensembles; the exit's log-probs (the ensemble's, or the IC's) always.
        self._next_cascades = tuple(m + 1 < self._num_ics and self._cascade[m + 1] for m in range(self._num_ics))
        self._wanted: list[list[str]] = []
        for m in range(self._num_ics):
            wanted = ["features"] + (["logits"] if self._next_cascades[m] else [])
            wanted += ["log_probs", "exit_log_probs"] if self._ensembles else ["log_probs"]
            self._wanted.append(wanted)
        self._cost_cache: dict[tuple, tuple[tuple[int, ...], np.ndarray, int]] = {}
        self._checked_rule: ExitRule | None = None
        # Batch 1 decides in plain Python on the exit's float32 row (ExitRule.should_exit_row).
        self._float32_exits = all(
            {o.name: o.type for o in session.get_outputs()}.get("exit_log_probs" if self._ensembles else "log_probs")
            == "tensor(float)"
            for session in self._exit_sessions
        )

    @property
    def num_ics(self) -> int:
        """M, the number of internal exits; exit index M is the backbone's head."""
        return self._num_ics

    def exit_costs(self, x: torch.Tensor) -> ExitCosts:
        """FLOPs of every part for inputs like ``x`` (the torch model's table: the graphs compute the same ops)."""
        return self.model.exit_costs(x)

    def backbone_log_probs(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(B, K)`` log-softmax of the whole backbone (the one-graph network, no heads)."""
        return torch.from_numpy(self._backbone.run(["log_probs"], {"x": self._as_numpy(x)})[0])

    def all_exits(self, x: torch.Tensor) -> AllExits:
        """Every exit's output for the batch, every segment run on every row (what
        :meth:`EarlyExitModel.all_exits` answers, computed by the exported graphs: for evaluations and sweeps)."""
        if x.shape[0] == 0:
            raise ValueError("all_exits needs a batch with at least one sample, got an empty batch")
        h = self._as_numpy(x)
        logits: list[np.ndarray] = []
        log_probs: list[np.ndarray] = []
        exit_log_probs: list[np.ndarray] = []
        for m in range(self._num_ics):
            feed = self._feed(m, h, logits[-1] if logits else None, log_probs if self._ensembles else [])
            wanted = ["features", "logits", "log_probs"] + (["exit_log_probs"] if self._ensembles else [])
            outputs = self._exit_sessions[m].run(wanted, feed)
            h = outputs[0]
            logits.append(outputs[1])
            log_probs.append(outputs[2])
            if self._ensembles:
                exit_log_probs.append(outputs[3])
        final_logits, final_log_probs = self._final.run(["logits", "log_probs"], {"features_in": h})

        def stack(arrays: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack(arrays))

        return AllExits(
            ic_logits=stack(logits),
            ic_log_probs=stack(log_probs),
            ensemble_log_probs=stack(exit_log_probs) if self._ensembles else None,
            final_logits=torch.from_numpy(final_logits),
            final_log_probs=torch.from_numpy(final_log_probs),
        )

    def infer(self, x: torch.Tensor, rule: ExitRule) -> EarlyExitOutput:
        """Conditional inference with batch shrinking; the same answers as :meth:`EarlyExitModel.infer`."""
        self._check_input(x)
        log_probs, exit_index, flops = self.infer_arrays(self._as_numpy(x), rule)
        return EarlyExitOutput(torch.from_numpy(log_probs), torch.from_numpy(exit_index), torch.from_numpy(flops))

    def infer_arrays(self, x: np.ndarray, rule: ExitRule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`infer` on a numpy batch, answered in numpy: ``log_probs (B, K)``, ``exit_index (B,)`` and
        ``flops (B,)`` (int64). No eager-torch op runs: the acting hot path of a compiled deployment.

        ``x`` must already have the exported dtype and per-sample shape and hold at least one row (see :meth:`infer`
        for those checks); ``rule`` is checked here.
        """
        if rule is not self._checked_rule:  # rules are frozen: one check per rule object, not per decision
            self._check_rule(rule)
            self._checked_rule = rule
        n = x.shape[0]
        if n == 1 and self._float32_exits:
            return self._infer_one(x, rule)
        chunks = self._chunks(x, rule)
        m, rows, log_probs, flops = next(chunks)
        if rows is None:  # everyone left together (always the case at batch 1)
            return log_probs, np.full(n, m, dtype=np.int64), np.full(n, flops, dtype=np.int64)
        out = np.empty((n, log_probs.shape[1]), dtype=log_probs.dtype)
        exit_index = np.empty(n, dtype=np.int64)
        out[rows] = log_probs
        exit_index[rows] = m
        for m, rows, log_probs, _ in chunks:
            out[rows] = log_probs
            exit_index[rows] = m
        return out, exit_index, self._costs(x)[1][exit_index]

    def infer_iter(self, x: torch.Tensor, rule: ExitRule) -> Iterator[ExitChunk]:
        """Each exit's answers as soon as that exit has run, as :meth:`EarlyExitModel.infer_iter` hands them."""
        self._check_rule(rule)
        self._check_input(x)
        x_np = self._as_numpy(x)
        n = x_np.shape[0]

        def chunks() -> Iterator[ExitChunk]:
            for m, rows, log_probs, flops in self._chunks(x_np, rule):
                ids = torch.arange(n) if rows is None else torch.from_numpy(rows)
                yield ExitChunk(m, ids, torch.from_numpy(log_probs), flops)

        return chunks()

    def backbone_flops(self, x: np.ndarray) -> int:
        """FLOPs of one plain backbone answer for inputs like ``x`` (the 100 % reference)."""
        return self._costs(x)[2]

    def _costs(self, x: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, int]:
        """``(cumulative FLOPs per exit, the same as an int64 array, backbone FLOPs)`` for inputs like ``x``."""
        key = (x.shape[1:], x.dtype)
        entry = self._cost_cache.get(key)
        if entry is None:
            costs = self.model.exit_costs(torch.from_numpy(np.ascontiguousarray(x[:1])))
            cumulative = tuple(costs.cumulative)
            entry = self._cost_cache[key] = (cumulative, np.array(cumulative, dtype=np.int64), costs.backbone)
        return entry

    def _check_rule(self, rule: ExitRule) -> None:
        if not isinstance(rule, ExitRule):
            raise ValueError(f"rule must be an ExitRule (e.g. MaxProbExit(0.9)), got {type(rule).__name__}")
        rule.check_num_ics(self._num_ics)

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            raise ValueError("infer needs a batch with at least one sample, got an empty batch")
        if isinstance(x, torch.Tensor) and x.device.type != "cpu":
            raise ValueError(f"the ONNX runtime runs on the CPU; got inputs on {x.device}")

    @staticmethod
    def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.detach().numpy() if isinstance(x, torch.Tensor) else x)

    def _feed(
        self, m: int, h: np.ndarray, prev_logits: np.ndarray | None, members: list[np.ndarray]
    ) -> dict[str, np.ndarray]:
        feed = {self._input_names[m][0]: h}
        if self._cascade[m]:
            feed["prev_logits"] = prev_logits
        for j, member in enumerate(members):
            feed[f"member{j}"] = member
        return feed

    def _infer_one(self, x: np.ndarray, rule: ExitRule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`infer_arrays` for one sample: the same segments and decisions as :meth:`_chunks`, with no numpy
        reduction between the ORT calls (each costs 5-20 µs on cold caches; the rule reads the row as Python floats).
        """
        num_ics = self._num_ics
        cumulative, _, backbone_flops = self._costs(x)
        if rule.never_exits_early:
            log_probs = self._backbone.run(["log_probs"], {"x": x})[0]
            return log_probs, np.array([num_ics], dtype=np.int64), np.array([backbone_flops], dtype=np.int64)
        history: list[int] = []
        needs_history = rule.needs_history
        members: list[np.ndarray] = []
        prev_logits: np.ndarray | None = None
        h = x
        for m in range(num_ics):
            outputs = self._exit_sessions[m].run(self._wanted[m], self._feed(m, h, prev_logits, members))
            exit_log_probs = outputs[-1]
            row = exit_log_probs[0].tolist()
            if rule.should_exit_row(m, row, history):
                return exit_log_probs, np.array([m], dtype=np.int64), np.array([cumulative[m]], dtype=np.int64)
            if needs_history:
                history.append(row.index(max(row)))  # the first maximum, as numpy's argmax
            h = outputs[0]
            prev_logits = outputs[1] if self._next_cascades[m] else None
            if self._ensembles:
                members.append(outputs[-2])
        log_probs = self._final.run(["log_probs"], {"features_in": h})[0]
        return log_probs, np.array([num_ics], dtype=np.int64), np.array([cumulative[num_ics]], dtype=np.int64)

    def _chunks(self, x: np.ndarray, rule: ExitRule) -> Iterator[tuple[int, np.ndarray | None, np.ndarray, int]]:
        """The batch-shrinking loop, in numpy: ``(exit, original rows or None = all rows, log_probs, FLOPs per row)``
        per exit that answered some rows, in exit order (as :meth:`EarlyExitModel.infer_iter`)."""
        num_ics, n = self._num_ics, x.shape[0]
        cumulative, _, backbone_flops = self._costs(x)
        if rule.never_exits_early:  # no head runs: the one-graph backbone
            yield num_ics, None, self._backbone.run(["log_probs"], {"x": x})[0], backbone_flops
            return
        needs_history = rule.needs_history
        history = np.empty((n, 0), dtype=np.int64) if needs_history else None
        members: list[np.ndarray] = []
        prev_logits: np.ndarray | None = None
        active: np.ndarray | None = None  # original row ids still running; None = all rows, in order
        h = x
        for m in range(num_ics):
            # Outputs in self._wanted[m]'s order: features, [logits], log_probs, [exit_log_probs].
            outputs = self._exit_sessions[m].run(self._wanted[m], self._feed(m, h, prev_logits, members))
            exit_log_probs = outputs[-1]
            leave = rule.should_exit_numpy(m, exit_log_probs, history)
            if needs_history:
                history = np.concatenate((history, exit_log_probs.argmax(axis=-1)[:, None]), axis=1)
            h = outputs[0]
            prev_logits = outputs[1] if self._next_cascades[m] else None
            if self._ensembles:
                members.append(outputs[-2])
            if leave.all():
                yield m, active, exit_log_probs, cumulative[m]
                return
            if leave.any():
                yield m, leave.nonzero()[0] if active is None else active[leave], exit_log_probs[leave], cumulative[m]
                keep = ~leave
                active = keep.nonzero()[0] if active is None else active[keep]
                h = h[keep]
                if prev_logits is not None:
                    prev_logits = prev_logits[keep]
                members = [t[keep] for t in members]
                if history is not None:
                    history = history[keep]
        yield num_ics, active, self._final.run(["log_probs"], {"features_in": h})[0], cumulative[num_ics]
