"""Latency vs batch size: model size, memory accounting and the table on a tiny model."""

from __future__ import annotations

import torch
from torch import nn

from ee_rl.core.exits import PerExitThresholds
from ee_rl.core.latency import median_call_us
from ee_rl.selfxit.latency import allocated_bytes, cpu_clock, latency_vs_batch, model_size_bytes, timed_ms
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


def test_latency_table_on_a_tiny_model() -> None:
    model = make_tiny_model(ensembles=None, cascade=False)
    x = random_images(20)
    with torch.no_grad():
        conf = model.all_exits(x).exit_log_probs.exp().amax(-1).median(dim=1).values + 1e-4
    rule = PerExitThresholds(tuple(conf.tolist()))
    table = latency_vs_batch(model, rule, x, [1, 4, 32], repeats=2, warmup=1)
    assert [r.batch_size for r in table.rows] == [1, 4, 32]
    assert table.device == "cpu" and table.threads == torch.get_num_threads()
    assert table.early_exit_size_bytes > table.backbone_size_bytes == model_size_bytes(model.backbone)
    for r in table.rows:
        assert r.backbone_ms > 0 and r.early_exit_ms > 0 and r.backbone_peak_bytes > 0
        assert 0 < r.inference_time
        assert r.reduction == 1 - r.early_exit_ms / r.backbone_ms
        assert r.backbone_cpu_ms > 0 and r.cpu_reduction == 1 - r.early_exit_cpu_ms / r.backbone_cpu_ms


def test_median_call_us_uses_the_given_clock() -> None:
    ticks = iter(range(0, 10_000, 7))  # every reading advances 7 ns: each call measures exactly 7 ns
    calls = {"a": lambda: None, "b": lambda: None}
    assert median_call_us(calls, repeats=5, warmup=1, clock=lambda: next(ticks)) == {"a": 0.007, "b": 0.007}


def test_cpu_time_is_measured_with_one_thread_only() -> None:
    model = make_tiny_model(ensembles=None, cascade=False)
    x = random_images(4)
    rule = PerExitThresholds((2.0, 2.0, 2.0))
    wall, cpu = timed_ms({"a": lambda: model.infer(x, rule)}, 2, 0, torch.device("cpu"))
    assert wall["a"] > 0 and cpu is not None and cpu["a"] > 0
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
