"""Server metrics: request and item counters, exit histogram, batch sizes and latency percentiles (``GET /metrics``).

Updated only from the event loop thread (the batcher posts its results there), so no lock is needed.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

#: Latency percentiles are computed over the most recent answers only.
LATENCY_WINDOW = 20_000


class ServerMetrics:
    """Counters of one server process since it started.

    Args:
        num_exits: M + 1 (the exit histogram has one bin per exit, the backbone's head last).
        window: how many recent item latencies the percentiles are computed over.
    """

    def __init__(self, num_exits: int, window: int = LATENCY_WINDOW) -> None:
        self.started = time.monotonic()
        self.http_requests = 0
        self.ws_batches = 0
        self.ws_connections_total = 0
        self.ws_connections_open = 0
        self.rejected = 0
        self.cancelled = 0
        self.failed = 0
        self.items = 0
        self.batches_run = 0
        self.batch_items_total = 0
        self.max_batch_items = 0
        self.exit_histogram = [0] * num_exits
        self.flops_fraction_total = 0.0
        self._latencies_ms: deque[float] = deque(maxlen=window)

    def record_answers(self, count: int, exit_index: int, flops_fraction: float, latency_s: float) -> None:
        """``count`` items answered at ``exit_index``, ``latency_s`` after their batch was received."""
        self.items += count
        self.exit_histogram[exit_index] += count
        self.flops_fraction_total += count * flops_fraction
        self._latencies_ms.extend([latency_s * 1e3] * count)

    def record_batch_run(self, items: int) -> None:
        """The model ran one (dynamically assembled) batch of ``items`` items."""
        self.batches_run += 1
        self.batch_items_total += items
        self.max_batch_items = max(self.max_batch_items, items)

    def latency_percentiles_ms(self) -> dict[str, float | None]:
        """p50 / p90 / p99 / max of the recent item latencies (receive → answer handed to the connection), ms."""
        if not self._latencies_ms:
            return {"p50": None, "p90": None, "p99": None, "max": None}
        values = np.fromiter(self._latencies_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": {
                "http": self.http_requests,
                "ws_batches": self.ws_batches,
                "rejected": self.rejected,
                "cancelled": self.cancelled,
                "failed": self.failed,
            },
            "connections": {"open": self.ws_connections_open, "total": self.ws_connections_total},
            "items": self.items,
            "exit_histogram": list(self.exit_histogram),
            "mean_flops_fraction": self.flops_fraction_total / self.items if self.items else None,
            "batches": {
                "run": self.batches_run,
                "mean_items": self.batch_items_total / self.batches_run if self.batches_run else None,
                "max_items": self.max_batch_items,
            },
            "latency_ms": self.latency_percentiles_ms(),
            "latency_window": len(self._latencies_ms),
        }
