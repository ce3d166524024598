"""Latency vs batch size (SelfXit tables 5-6): the plain backbone vs the early-exit model with batch shrinking,
plus model size and the memory allocated during one call, in one run.

Timings are medians of interleaved calls (:func:`ee_rl.core.latency.median_call_us`), by the wall clock and, on a
CPU with one torch thread, also by the calling thread's CPU time: on a loaded machine a call that is preempted
waits for its next time slice, which inflates wall-clock times the longer a call is; CPU time is what the call
would take on an idle core. Memory on CPU comes from the PyTorch profiler's allocator events
(``profile_memory=True``): the peak of the running sum of allocated bytes during one call, and the total bytes
allocated (the paper's "LTMA"). On CUDA: ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ee_rl.core.exits import ExitRule, MaxProbExit
from ee_rl.core.latency import device_sync, median_call_us
from ee_rl.core.model import EarlyExitModel

NO_EXIT = MaxProbExit(2.0)


def model_size_bytes(*modules: nn.Module) -> int:
    """Bytes of the distinct parameters and buffers of ``modules`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for t in (*module.parameters(), *module.buffers()):
            key = t.data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    # Kineto writes "USDT ... profiler_start/stop" to the C-level stderr on every profile; keep the terminal clean.
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def allocated_bytes(fn: Callable[[], object], device: torch.device) -> tuple[int, int]:
    """``(peak, total)`` bytes allocated while ``fn()`` runs once (beyond what was allocated before)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_stats(device).get("allocated_bytes.all.allocated", 0)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        total = torch.cuda.memory_stats(device).get("allocated_bytes.all.allocated", 0) - before
        return int(peak), int(total)
    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as handle:
            events = json.load(handle)["traceEvents"]
    finally:
        os.unlink(path)
    changes = sorted(
        (e["ts"], int(e["args"]["Bytes"]))
        for e in events
        if e.get("name") == "[memory]" and "Bytes" in e.get("args", {})
    )
    running = peak = total = 0
    for _, delta in changes:
        running += delta
        peak = max(peak, running)
        total += max(delta, 0)
    return peak, total


def cpu_clock() -> Callable[[], int] | None:
    """The calling thread's CPU-time clock when it measures a whole call (CPU, one torch thread), else None."""
    return time.thread_time_ns if torch.get_num_threads() == 1 else None


def timed_ms(
    calls: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Median ms per call by the wall clock and (see :func:`cpu_clock`) by CPU time (None when not meaningful).

    On CUDA every call (warm-up included) is followed by a device sync inside its timed span: kernels run
    asynchronously, so otherwise a call would be timed by its kernel launches only (the plain backbone's ``infer``
    never waits for the GPU, the early-exit path does at each exit).
    """
    wall = median_call_us(calls, repeats, warmup, sync=device_sync(device))
    clock = cpu_clock() if device.type == "cpu" else None
    cpu = median_call_us(calls, repeats, 0, clock=clock) if clock is not None else None

    def to_ms(us: dict[str, float]) -> dict[str, float]:
        return {k: v / 1e3 for k, v in us.items()}

    return to_ms(wall), (to_ms(cpu) if cpu is not None else None)


@dataclass(frozen=True)
class BatchLatency:
    """One batch size: ms per call (median; wall clock, and CPU time where meaningful), memory allocated in one
    call, and the FLOPs fraction."""

    batch_size: int
    backbone_ms: float
    early_exit_ms: float
    backbone_cpu_ms: float | None
    early_exit_cpu_ms: float | None
    backbone_peak_bytes: int
    early_exit_peak_bytes: int
    backbone_allocated_bytes: int
    early_exit_allocated_bytes: int
    inference_time: float

    @property
    def reduction(self) -> float:
        """``1 − early_exit / backbone`` by the wall clock (the paper's "↓ratio"; negative = slower)."""
        return 1.0 - self.early_exit_ms / self.backbone_ms

    @property
    def cpu_reduction(self) -> float | None:
        """The same ratio by CPU time (None when CPU time is not measured)."""
        if self.backbone_cpu_ms is None or self.early_exit_cpu_ms is None:
            return None
        return 1.0 - self.early_exit_cpu_ms / self.backbone_cpu_ms


@dataclass(frozen=True)
class LatencyTable:
    """Latency vs batch size on one device, with the two models' sizes."""

    device: str
    threads: int
    repeats: int
    backbone_size_bytes: int
    early_exit_size_bytes: int
    rows: tuple[BatchLatency, ...]


def latency_vs_batch(
    model: EarlyExitModel,
    rule: ExitRule,
    inputs: torch.Tensor,
    batch_sizes: Sequence[int] = (1, 16, 32, 64, 128),
    *,
    repeats: int = 30,
    warmup: int = 3,
) -> LatencyTable:
    """Time the plain backbone (``infer`` with no exit: no head runs) and ``model.infer(x, rule)`` per batch size.

    Each batch is the first ``b`` rows of ``inputs`` (repeated cyclically if there are fewer), on ``inputs``'s
    device, where ``model`` must be too. Every call runs under ``torch.inference_mode``.
    """
    device = inputs.device
    rows = []
    for b in batch_sizes:
        idx = torch.arange(b, device=device) % inputs.shape[0]
        x = inputs.index_select(0, idx)

        def backbone(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model.infer(x, NO_EXIT)

        def early_exit(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model.infer(x, rule)

        calls = {"backbone": backbone, "early_exit": early_exit}
        wall, cpu = timed_ms(calls, repeats, warmup, device)  # syncs on CUDA; so does allocated_bytes
        bb_peak, bb_total = allocated_bytes(calls["backbone"], device)
        ee_peak, ee_total = allocated_bytes(calls["early_exit"], device)
        with torch.inference_mode():
            flops = int(model.infer(x, rule).flops.sum())
        fraction = flops / (b * model.exit_costs(x).backbone)
        rows.append(BatchLatency(
            b, wall["backbone"], wall["early_exit"], cpu["backbone"] if cpu else None,
            cpu["early_exit"] if cpu else None, bb_peak, ee_peak, bb_total, ee_total, fraction,
        ))
    backbone_size = model_size_bytes(model.backbone)
    return LatencyTable(
        device=str(device) if device.type == "cuda" else "cpu",
        threads=torch.get_num_threads(),
        repeats=repeats,
        backbone_size_bytes=backbone_size,
        early_exit_size_bytes=model_size_bytes(model) if not rule.never_exits_early else backbone_size,
        rows=tuple(rows),
    )
