"""Wall-clock latency of answering at each exit of an EarlyExitModel (medians of interleaved timed calls)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ee_rl.core.exits import ExitRule, MaxProbExit, PerExitThresholds
from ee_rl.core.model import EarlyExitModel


def forced_exit_rule(num_ics: int, m: int) -> ExitRule:
    """A rule under which every sample leaves at internal exit ``m`` (earlier exits disabled with tau > 1)."""
    if not 0 <= m < num_ics:
        raise ValueError(f"exit index m must be in 0..{num_ics - 1}, got {m}")
    return PerExitThresholds([2.0] * m + [0.0] + [2.0] * (num_ics - m - 1))


def device_sync(device: torch.device) -> Callable[[], None] | None:
    """What :func:`timed_rounds` should call after each timed call on ``device``: a CUDA sync (kernels run
    asynchronously, so without one a call is timed by its kernel launches only), or None where calls are
    synchronous (the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def timed_rounds(
    calls: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    *,
    block: int = 1,
    clock: Callable[[], int] = time.perf_counter_ns,
    sync: Callable[[], object] | None = None,
) -> dict[str, list[list[int]]]:
    """Time each function ``repeats`` times: per function, a list of rounds, each a list of ``clock`` deltas (ns).

    After ``warmup`` untimed calls each, the functions take turns in rounds of ``block`` consecutive timed calls
    each (the last round may be shorter). The rounds spread background load over all functions alike, and
    ``block > 1`` times each function in its own steady state (caches holding its weights, as in a loop that keeps
    taking the same path; ``timeit`` style) rather than right after a different network evicted them.
    ``clock=time.thread_time_ns`` measures the CPU time of the calling thread instead: with one torch thread, the
    latency on an idle core, unaffected by preemption on a loaded machine.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after each call inside the timed span, so work an accelerator
    still has queued counts towards the call that queued it.
    """
    if repeats < 1 or warmup < 0 or block < 1:
        raise ValueError(
            f"repeats and block must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}, block={block}"
        )
    for fn in calls.values():
        for _ in range(warmup):
            fn()
            if sync is not None:  # so no warm-up work is still queued when the timing starts
                sync()
    rounds: dict[str, list[list[int]]] = {name: [] for name in calls}
    done = 0
    while done < repeats:
        n = min(block, repeats - done)
        for name, fn in calls.items():
            timed: list[int] = []
            for _ in range(n):
                t0 = clock()
                fn()
                if sync is not None:
                    sync()
                timed.append(clock() - t0)
            rounds[name].append(timed)
        done += n
    return rounds


def median_us(rounds: list[list[int]]) -> float:
    """Median µs of all the calls of one function's :func:`timed_rounds`."""
    return statistics.median(t for r in rounds for t in r) / 1e3


def paired_ratio(reference: list[list[int]], other: list[list[int]]) -> float:
    """Median over rounds of ``median(reference round) / median(other round)``, two functions' :func:`timed_rounds`.

    Both were timed in the same round, seconds apart at most, so a machine whose speed drifts during the run
    (a shared VM, frequency scaling) scales both alike and the ratio stays put, unlike a ratio of overall medians.
    """
    if len(reference) != len(other) or not reference:
        raise ValueError(f"need the same non-zero number of rounds, got {len(reference)} and {len(other)}")
    return statistics.median(statistics.median(a) / statistics.median(b) for a, b in zip(reference, other))


def median_call_us(
    calls: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    *,
    block: int = 1,
    clock: Callable[[], int] = time.perf_counter_ns,
    sync: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Median µs per call of each function, timed by :func:`timed_rounds` (same arguments)."""
    rounds = timed_rounds(calls, repeats, warmup, block=block, clock=clock, sync=sync)
    return {name: median_us(r) for name, r in rounds.items()}


@dataclass(frozen=True)
class ExitLatency:
    """Latency (µs per call) and FLOPs per sample of answering at each exit.

    Attributes:
        full_us: the no-early-exit path (plain backbone, no heads).
        exit_us: every sample answered at internal exit m, for m = 0..M-1.
        flops: FLOPs per sample at each internal exit, then the backbone alone.
        speedup: wall-clock speed-up of answering at each internal exit over the full network: the median over
            timing rounds of the full path's / that exit's latency in the same round (:func:`paired_ratio`, robust
            to the machine's speed drifting during the run; on a steady machine it equals ``full_us / exit_us``).
        prefix_us: the backbone's stages up to exit m alone (no head, no rule): no exit at m can be faster.
        speedup_bound: the same paired ratio for those stages alone: the speed-up exit m would have if its head
            and exit rule cost nothing.
        extra_us: any extra calls timed alongside (e.g. the original, unstaged network).
    """

    full_us: float
    exit_us: tuple[float, ...]
    flops: tuple[int, ...]
    speedup: tuple[float, ...]
    prefix_us: tuple[float, ...]
    speedup_bound: tuple[float, ...]
    extra_us: dict[str, float] = field(default_factory=dict)


def backbone_prefix(model: EarlyExitModel, m: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x ->`` the output of the stage internal exit ``m`` is attached after (preprocessing included)."""
    if not 0 <= m < model.num_ics:
        raise ValueError(f"exit index m must be in 0..{model.num_ics - 1}, got {m}")
    stages = list(model.backbone.stages)[: model.attach_after[m] + 1]
    preprocess = model.backbone.preprocess

    def run(x: torch.Tensor) -> torch.Tensor:
        h = preprocess(x)
        for stage in stages:
            h = stage(h)
        return h

    return run


def measure_exit_latency(
    model: EarlyExitModel,
    x: torch.Tensor,
    *,
    repeats: int = 2000,
    warmup: int = 200,
    block: int = 50,
    extra_calls: Mapping[str, Callable[[], object]] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> ExitLatency:
    """Time ``model.infer(x, rule)`` with every sample forced out at each exit in turn, and with no early exit;
    also the backbone's stages up to each exit alone (the bound on that exit's speed-up).

    Use a batch of 1 for per-decision latency. Each path is timed in rounds of ``block`` consecutive calls (see
    :func:`timed_rounds`, which reads ``clock``, in ns). Runs under ``torch.inference_mode``; the caller sets the
    threads.
    """
    num_ics = model.num_ics
    calls: dict[str, Callable[[], object]] = {"full": lambda r=MaxProbExit(2.0): model.infer(x, r)}
    for m in range(num_ics):
        rule = forced_exit_rule(num_ics, m)
        calls[f"exit{m}"] = lambda r=rule: model.infer(x, r)
        calls[f"prefix{m}"] = lambda f=backbone_prefix(model, m): f(x)
    extra = dict(extra_calls or {})
    clash = set(extra) & set(calls)
    if clash:
        raise ValueError(f"extra_calls names {sorted(clash)} clash with the built-in names {sorted(calls)}")
    with torch.inference_mode():
        for m in range(num_ics):  # the forced rules really answer at exit m
            got = model.infer(x, forced_exit_rule(num_ics, m)).exit_index
            if not bool((got == m).all()):
                raise RuntimeError(f"forced exit {m} answered at exits {got.unique().tolist()}")
        rounds = timed_rounds(
            {**calls, **extra}, repeats, warmup, block=block, clock=clock, sync=device_sync(x.device)
        )
    us = {name: median_us(r) for name, r in rounds.items()}
    costs = model.exit_costs(x)
    return ExitLatency(
        full_us=us["full"],
        exit_us=tuple(us[f"exit{m}"] for m in range(num_ics)),
        flops=(*costs.cumulative[:num_ics], costs.backbone),
        speedup=tuple(paired_ratio(rounds["full"], rounds[f"exit{m}"]) for m in range(num_ics)),
        prefix_us=tuple(us[f"prefix{m}"] for m in range(num_ics)),
        speedup_bound=tuple(paired_ratio(rounds["full"], rounds[f"prefix{m}"]) for m in range(num_ics)),
        extra_us={name: us[name] for name in extra},
    )
