"""Load test: many concurrent WebSocket clients, every answer checked against the offline model.

Each client connects, waits until every client is connected, then sends ``batches`` batches one after the other
(``batch_size`` items drawn from the real inputs with a per-client seed, as ``.npy`` binary messages or JSON text)
and reads the streamed answers of each batch up to its ``end`` message. Every item must get exactly one answer,
equal to what :meth:`EarlyExitModel.infer` answers offline for the same input: same argmax, same exit, same FLOPs
fraction, probabilities within ``1e-4``. Per-item latency is the time from sending its batch to receiving its answer.
The whole test is bounded by ``timeout_s``: items not answered by then count as lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from ee_rl.serve.codecs import encode_npy

#: Tolerances when comparing a served answer with the offline one (batches of another size round differently).
PROB_ATOL = 1e-4
FLOPS_RTOL = 1e-9
ENCODINGS = ("npy", "json")


@dataclass
class LoadTestReport:
    """What a load test measured.

    Attributes:
        clients, batches, batch_size: the load.
        items: items sent.
        answered: items that got at least one answer.
        lost: items without an answer (error, disconnect or timeout).
        duplicated: extra answers to an already answered item (or answers to items never sent).
        wrong: answers differing from the offline model's.
        errors: error messages received, and clients that failed to connect or broke off.
        items_per_s: answered items per second of the sending phase (all clients connected → last answer).
        p50_ms, p99_ms: per-item latency percentiles (send of the batch → its answer).
        connect_s: time to connect every client.
        wall_s: duration of the sending phase.
        exit_histogram: answers per exit index.
        error_samples: up to 5 error texts, for the report.
    """

    clients: int
    batches: int
    batch_size: int
    items: int
    answered: int
    lost: int
    duplicated: int
    wrong: int
    errors: int
    items_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    connect_s: float
    wall_s: float
    exit_histogram: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every item answered exactly once, correctly, and no error."""
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0 and self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``clients, items, lost, duplicated, wrong, items_per_s, p50_ms, p99_ms`` and more)."""
        return {**asdict(self), "ok": self.ok}


def answer_matches(answer: dict[str, Any], expected: dict[str, np.ndarray], index: int, label_name: str) -> bool:
    """Whether a streamed answer equals the offline answer for input ``index`` (see the module docstring)."""
    try:
        probs = np.asarray(answer["probs"], dtype=np.float64)
        return (
            answer[label_name] == int(expected["labels"][index])
            and answer["exit"] == int(expected["exit_index"][index])
            and abs(answer["flops_fraction"] - float(expected["flops_fraction"][index]))
            <= FLOPS_RTOL * abs(float(expected["flops_fraction"][index]))
            and probs.shape == expected["probs"][index].shape
            and bool(np.allclose(probs, expected["probs"][index], rtol=0.0, atol=PROB_ATOL))
        )
    except (KeyError, TypeError, ValueError):
        return False


@dataclass
class _Tally:
    answered: int = 0
    duplicated: int = 0
    wrong: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    exits: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:300])


def _batch_message(inputs: np.ndarray, encoding: str, batch_id: int) -> bytes | str:
    if encoding == "npy":
        return encode_npy(inputs)
    return json.dumps({"batch_id": batch_id, "inputs": inputs.tolist(), "ids": list(range(len(inputs)))})


async def _client(
    number: int,
    url: str,
    inputs: np.ndarray,
    expected: dict[str, np.ndarray],
    label_name: str,
    batches: int,
    batch_size: int,
    seed: int,
    encoding: str,
    connected: asyncio.Event | None,
    go: asyncio.Event,
    tally: _Tally,
    connect_timeout_s: float,
) -> None:
    rng = np.random.default_rng([seed, number])
    try:
        ws: ClientConnection = await asyncio.wait_for(
            connect(url, compression=None, max_size=None, ping_interval=None, open_timeout=None),
            connect_timeout_s,
        )
    except Exception as exc:  # noqa: BLE001 - counted and reported, like every other client failure
        tally.error(f"client {number}: cannot connect: {type(exc).__name__}: {exc}")
        if connected is not None:
            connected.set()
        return
    async with ws:
        if connected is not None:
            connected.set()
        await go.wait()
        for b in range(batches):
            chosen = rng.integers(len(inputs), size=batch_size)
            seen: set[int] = set()
            t0 = time.perf_counter()
            await ws.send(_batch_message(inputs[chosen], encoding, b))
            while True:
                message = json.loads(await ws.recv())
                kind = message.get("type")
                if message.get("batch_id") != b:
                    tally.error(f"client {number}: message for unknown batch {message.get('batch_id')!r}")
                    continue
                if kind == "end":
                    break
                if kind == "error":
                    tally.error(f"client {number} batch {b}: {message.get('error')}")
                    break
                item = message.get("id")
                if not isinstance(item, int) or not 0 <= item < batch_size or item in seen:
                    tally.duplicated += 1
                    continue
                seen.add(item)
                tally.answered += 1
                tally.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                tally.exits[str(message.get("exit"))] += 1
                if not answer_matches(message, expected, int(chosen[item]), label_name):
                    tally.wrong += 1


async def run_load_test(
    url: str,
    inputs: np.ndarray,
    expected: dict[str, np.ndarray],
    label_name: str,
    *,
    clients: int,
    batches: int,
    batch_size: int,
    timeout_s: float,
    connect_timeout_s: float = 60.0,
    seed: int = 0,
    encoding: str = "npy",
) -> LoadTestReport:
    """Run the load test against ``url`` (``ws://host:port/stream``); ``expected`` = offline answers for ``inputs``.

    ``expected`` holds ``labels``, ``probs``, ``exit_index`` and ``flops_fraction`` per input (see
    :meth:`ee_rl.serve.served.ServedModel.offline_answers`).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    tally = _Tally()
    go = asyncio.Event()
    connected = [asyncio.Event() for _ in range(clients)]
    t_start = time.perf_counter()
    tasks = [
        asyncio.create_task(
            _client(
                c, url, inputs, expected, label_name, batches, batch_size, seed, encoding, connected[c], go, tally,
                connect_timeout_s,
            )
        )
        for c in range(clients)
    ]
    deadline = t_start + timeout_s
    t_go = t_start
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected)), max(deadline - time.perf_counter(), 0))
        t_go = time.perf_counter()
        go.set()
        done, pending = await asyncio.wait(tasks, timeout=max(deadline - time.perf_counter(), 0))
    except asyncio.TimeoutError:
        done, pending = set(), set(tasks)
    t_end = time.perf_counter()
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            exc = task.exception()
            tally.error(f"a client broke off: {type(exc).__name__}: {exc}")
    if pending:
        tally.error(f"{len(pending)} client(s) did not finish within {timeout_s} s")
    sent = clients * batches * batch_size
    lat = np.asarray(tally.latencies_ms)
    wall = max(t_end - t_go, 1e-9)
    return LoadTestReport(
        clients=clients,
        batches=batches,
        batch_size=batch_size,
        items=sent,
        answered=tally.answered,
        lost=sent - tally.answered,
        duplicated=tally.duplicated,
        wrong=tally.wrong,
        errors=tally.errors,
        items_per_s=tally.answered / wall,
        p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
        p99_ms=float(np.percentile(lat, 99)) if lat.size else None,
        connect_s=t_go - t_start,
        wall_s=wall,
        exit_histogram=dict(sorted(tally.exits.items())),
        error_samples=tally.error_samples,
    )
