"""Latency vs batch size: model size, memory accounting and the table on a tiny model."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from ee_rl.core.exits import PerExitThresholds
from ee_rl.core.latency import median_call_us
from ee_rl.selfxit.latency import NO_EXIT, allocated_bytes, cpu_clock, latency_vs_batch, model_size_bytes, timed_ms
from tests.core.builders import make_tiny_model, random_images


def test_model_size_counts_shared_tensors_once() -> None:
    a = nn.Linear(10, 4)  # 44 floats
    b = nn.Sequential(a, nn.Linear(4, 2))  # shares a, adds 10 floats
    assert model_size_bytes(a) == 44 * 4
    assert model_size_bytes(b) == 54 * 4
    assert model_size_bytes(a, b) == 54 * 4


def test_allocated_bytes_sees_a_temporary_buffer() -> None:
    size = 1 << 20

    def fn() -> None:
        t = torch.ones(size // 4, dtype=torch.float32)  # 1 MiB, freed on return
        u = t * 2  # another 1 MiB while t is alive
        del t, u

    peak, total = allocated_bytes(fn, torch.device("cpu"))
    assert peak >= 2 * size and total >= 2 * size
    assert peak < 3 * size


def test_latency_table_times_the_two_calls_it_is_given(monkeypatch) -> None:
    model = make_tiny_model(ensembles=None, cascade=False)
    x = random_images(20)
    with torch.no_grad():
        conf = model.all_exits(x).exit_log_probs.exp().amax(-1).median(dim=1).values + 1e-4
    rule = PerExitThresholds(tuple(conf.tolist()))
    # The plain backbone sleeps 20 ms per call, the early-exit call 2 ms: sleeping takes wall time but no CPU time.
    real_infer = model.infer

    def infer(inputs: torch.Tensor, r) -> object:
        time.sleep(0.020 if r is NO_EXIT else 0.002)
        return real_infer(inputs, r)

    monkeypatch.setattr(model, "infer", infer)
    table = latency_vs_batch(model, rule, x, [1, 4, 32], repeats=3, warmup=1)
    assert [r.batch_size for r in table.rows] == [1, 4, 32]
    assert table.device == "cpu" and table.threads == torch.get_num_threads() == 1
    assert table.early_exit_size_bytes > table.backbone_size_bytes == model_size_bytes(model.backbone)
    slack_ms = 15.0  # a busy machine may wake a sleeper late; never early
    for r in table.rows:
        assert 20.0 <= r.backbone_ms < 20.0 + slack_ms and 2.0 <= r.early_exit_ms < 2.0 + slack_ms
        assert (2.0 / (20.0 + slack_ms)) < 1 - r.reduction < (2.0 + slack_ms) / 20.0
        # CPU time leaves the sleeps out: what remains is the tiny model's own work
        assert r.backbone_cpu_ms < 0.5 * r.backbone_ms and r.early_exit_cpu_ms < r.early_exit_ms
    # The FLOPs fraction of the batch of 4 (batch shrinking) equals that of its samples answered one by one.
    with torch.no_grad():
        alone = [real_infer(x[i : i + 1], rule) for i in range(4)]
    backbone = model.exit_costs(x[:1]).backbone
    assert table.rows[1].inference_time == pytest.approx(sum(int(a.flops.sum()) for a in alone) / (4 * backbone))


def test_median_call_us_uses_the_given_clock() -> None:
    ticks = iter(range(0, 10_000, 7))  # every reading advances 7 ns: each call measures exactly 7 ns
    calls = {"a": lambda: None, "b": lambda: None}
    assert median_call_us(calls, repeats=5, warmup=1, clock=lambda: next(ticks)) == {"a": 0.007, "b": 0.007}


def test_cpu_time_is_measured_with_one_thread_only() -> None:
    def spin() -> None:  # 5 ms of CPU time
        start = time.thread_time_ns()
        while time.thread_time_ns() - start < 5_000_000:
            pass

    wall, cpu = timed_ms({"spin": spin, "sleep": lambda: time.sleep(0.005)}, 2, 0, torch.device("cpu"))
    assert cpu is not None
    assert wall["spin"] >= 5.0 and wall["sleep"] >= 5.0  # the wall clock counts both
    assert cpu["spin"] >= 5.0 and cpu["sleep"] < 1.0  # CPU time only the work
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert cpu_clock() is None
        assert timed_ms({"a": lambda: None}, 1, 0, torch.device("cpu"))[1] is None
    finally:
        torch.set_num_threads(threads)


def test_timed_ms_waits_for_cuda_work_after_every_call(monkeypatch) -> None:
    # CUDA kernels run asynchronously: evaluate_held_out times the plain backbone through timed_ms, and without a
    # sync after each call it would time only the kernel launches (no GPU needed: the sync is recorded, not run).
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    wall, cpu = timed_ms({"a": lambda: events.append("call")}, 3, 1, torch.device("cuda"))
    assert cpu is None and wall["a"] >= 0
    assert events == ["call", "sync"] * 4  # the warm-up call, then each timed call, each followed by its sync
