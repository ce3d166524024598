"""Server metrics: counters, exit histogram, latency percentiles equal numpy's over the window."""

from __future__ import annotations

import numpy as np

from ee_rl.serve import ServerMetrics


def test_histogram_flops_and_percentiles() -> None:
    metrics = ServerMetrics(num_exits=3, window=100)
    assert metrics.snapshot()["latency_ms"]["p50"] is None
    metrics.record_answers(2, 0, 0.25, 0.010)
    metrics.record_answers(1, 2, 1.0, 0.040)
    metrics.record_batch_run(3)
    snap = metrics.snapshot()
    assert snap["items"] == 3 and snap["exit_histogram"] == [2, 0, 1]
    assert snap["mean_flops_fraction"] == (2 * 0.25 + 1.0) / 3
    assert snap["batches"] == {"run": 1, "mean_items": 3.0, "max_items": 3}
    values = np.array([10.0, 10.0, 40.0])
    lat = snap["latency_ms"]
    assert np.isclose(lat["p50"], np.percentile(values, 50)) and np.isclose(lat["p99"], np.percentile(values, 99))
    assert np.isclose(lat["max"], 40.0)


def test_latency_window_keeps_only_recent_answers() -> None:
    metrics = ServerMetrics(num_exits=1, window=4)
    metrics.record_answers(4, 0, 1.0, 1.0)
    metrics.record_answers(4, 0, 1.0, 0.002)
    snap = metrics.snapshot()
    assert snap["latency_window"] == 4 and np.isclose(snap["latency_ms"]["max"], 2.0)
    assert snap["items"] == 8
