"""Which runtime answers early-exit decisions: eager PyTorch (the model itself) or ONNX Runtime segments.

Both sides offer the same calls (:class:`ConditionalInference`), so a policy, a server or an evaluation switches
runtime with one argument (``--runtime {torch,onnx}`` on the command line).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ee_rl.core.exits import ExitRule
from ee_rl.core.flops import ExitCosts
from ee_rl.core.model import EarlyExitModel, EarlyExitOutput, ExitChunk
from ee_rl.errors import UserError

#: The runtimes a model can be run with.
RUNTIMES = ("torch", "onnx")


@runtime_checkable
class ConditionalInference(Protocol):
    """What runs conditional inference: :class:`EarlyExitModel` itself or
    :class:`ee_rl.core.onnx_runner.OnnxEarlyExitRunner`."""

    @property
    def num_ics(self) -> int: ...

    def exit_costs(self, x: torch.Tensor) -> ExitCosts: ...

    def infer(self, x: torch.Tensor, rule: ExitRule) -> EarlyExitOutput: ...

    def infer_iter(self, x: torch.Tensor, rule: ExitRule) -> Iterator[ExitChunk]: ...


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is known and usable here, else a one-line :class:`UserError` (before any work starts)."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime '{runtime}': choose one of {', '.join(RUNTIMES)}")
    if runtime == "onnx":
        from ee_rl.core.onnx_runner import require_onnxruntime

        require_onnxruntime()
        from ee_rl.core.onnx_export import require_exporter

        require_exporter()
    return runtime


def make_runner(
    model: EarlyExitModel,
    runtime: str,
    *,
    sample: torch.Tensor,
    threads: int = 1,
    cache_dir: str | Path | None = None,
) -> ConditionalInference:
    """The model itself (``torch``) or an ONNX Runtime runner of its segments (``onnx``), exported on first use.

    Args:
        model: the early-exit model (eval mode).
        runtime: ``torch`` or ``onnx``.
        sample: a raw input batch (one row is enough) fixing the per-sample shape and dtype of the exported graphs.
        threads: ORT intra-op threads (torch's own thread count is the caller's business).
        cache_dir: where exported graphs are cached (see :func:`ee_rl.core.onnx_export.load_or_export_segments`).
    """
    check_runtime(runtime)
    if runtime == "torch":
        return model
    from ee_rl.core.onnx_export import load_or_export_segments
    from ee_rl.core.onnx_runner import OnnxEarlyExitRunner

    directory = load_or_export_segments(model, sample, cache_dir)
    try:
        return OnnxEarlyExitRunner(model, directory, threads=threads)
    except UserError:
        # A file ONNX Runtime cannot load (e.g. written by an older exporter) is exported again, never used.
        directory = load_or_export_segments(model, sample, cache_dir, force=True)
        return OnnxEarlyExitRunner(model, directory, threads=threads)
