"""Dynamic batching across concurrent clients, with each exit's answers handed back the moment that exit fires.

Client batches (*jobs*) queue up; one inference thread takes the oldest, then keeps adding queued jobs until the
batch holds ``max_batch`` items or ``max_wait_ms`` have passed since the oldest arrived, concatenates them and runs
the core's batch-shrinking inference (:meth:`ee_rl.core.EarlyExitModel.infer_iter`). After every exit it posts the
answers of the items that left there to the event loop, which hands each job its own items at once — so a client's
early items are answered while its other items are still running through the backbone. A job larger than
``max_batch`` is split into parts that run in successive batches.

A job whose client went away is cancelled: parts not yet started are skipped, answers already computed are dropped.
An exception inside the model — or anywhere else while a batch is assembled and run — fails only the jobs of that
batch; the thread goes on with the next one.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ee_rl.serve.metrics import ServerMetrics
from ee_rl.serve.served import AnswerBlock, ServedModel

_STOP = object()


@dataclass(eq=False)
class Job:
    """One client batch on its way through the batcher.

    Attributes:
        inputs: ``(n, ...)`` model input tensor.
        on_answers: called on the event loop with each :class:`AnswerBlock` of this job (items are positions in
            this job), in exit order.
        on_done: called on the event loop once, when every item was answered or the job failed; receives None or
            an error message.
        received_at: ``time.monotonic()`` when the server received the batch (latency reference).
    """

    inputs: torch.Tensor
    on_answers: Callable[[AnswerBlock], None]
    on_done: Callable[[str | None], None]
    received_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    answered: int = 0
    finished: bool = False

    @property
    def size(self) -> int:
        """Number of items."""
        return int(self.inputs.shape[0])

    def cancel(self) -> None:
        """Stop working for this job (its client went away); ``on_done`` is not called."""
        self.cancelled = True


@dataclass(eq=False)
class _Part:
    job: Job
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


class DynamicBatcher:
    """Runs client jobs through a :class:`ServedModel` in dynamically assembled batches on one worker thread.

    Args:
        served: the model, its rule and answer formatting.
        max_batch: most items per model call.
        max_wait_ms: longest a job waits for others to join its batch (from when it was received).
        metrics: counters to update (on the event loop thread).
    """

    def __init__(
        self, served: ServedModel, max_batch: int, max_wait_ms: float, metrics: ServerMetrics | None = None
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        if not (max_wait_ms >= 0 and math.isfinite(max_wait_ms)):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
        self.served = served
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.metrics = metrics if metrics is not None else ServerMetrics(served.num_ics + 1)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle (event loop side) ---

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the worker thread; answers are delivered on ``loop`` (default: the running loop)."""
        if self._thread is not None:
            raise RuntimeError("the batcher is already running")
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="ee-rl-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the worker finish the batch it runs, then stop it (queued jobs are dropped)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, job: Job) -> Job:
        """Queue a job (call on the event loop); its answers arrive through its callbacks."""
        if self._thread is None:
            raise RuntimeError("the batcher is not running (call start() first)")
        if job.size < 1:
            raise ValueError("a job needs at least one item")
        for start in range(0, job.size, self.max_batch):
            self._queue.put(_Part(job, start, min(start + self.max_batch, job.size)))
        return job

    async def run(self, inputs: torch.Tensor, received_at: float | None = None) -> list[AnswerBlock]:
        """Submit ``inputs`` as one job and wait for all its answers (blocks in exit order).

        ``received_at`` (``time.monotonic()``) is when the request arrived; default now.
        """
        blocks: list[AnswerBlock] = []
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        job = Job(inputs, blocks.append, lambda error: done.done() or done.set_result(error))
        if received_at is not None:
            job.received_at = received_at
        self.submit(job)
        try:
            error = await done
        except asyncio.CancelledError:
            job.cancel()
            raise
        if error is not None:
            raise RuntimeError(error)
        return blocks

    # --- worker thread ---

    def _work(self) -> None:
        carry: _Part | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            parts = [first]
            try:
                carry, stop = self._gather(parts)
                live = [p for p in parts if not p.job.cancelled]
                if live:
                    self._run(live)
            except Exception as exc:  # noqa: BLE001 - a dead thread would leave every later request hanging
                self._post(self._fail, parts, f"batching failed: {type(exc).__name__}: {exc}")
                carry, stop = None, False
            if stop:
                return

    def _gather(self, parts: list[_Part]) -> tuple[_Part | None, bool]:
        """Add queued parts to ``parts`` (holding the first) until the batch is full or the oldest has waited
        ``max_wait``; return the part that opens the next batch (or None) and whether to stop.

        ``parts`` is filled in place so that, should anything raise, the caller still knows which jobs it took.
        """
        first = parts[0]
        size = first.size
        deadline = first.job.received_at + self.max_wait_s
        while size < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return None, True
            if nxt.job.cancelled:
                continue
            if size + nxt.size > self.max_batch:
                return nxt, False  # it opens the next batch
            parts.append(nxt)
            size += nxt.size
        return None, False

    def _run(self, parts: list[_Part]) -> None:
        served = self.served
        try:
            inputs = [p.job.inputs[p.start : p.stop] for p in parts]
            x = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
            self._post(self._ran_batch, x.shape[0])
            starts = np.cumsum([0] + [p.size for p in parts])
            for block in served.answer_chunks(x):
                # block.items is ascending, so each part's items are one contiguous run.
                bounds = np.searchsorted(block.items, starts)
                routed = []
                for i, part in enumerate(parts):
                    lo, hi = bounds[i], bounds[i + 1]
                    if lo == hi:
                        continue
                    routed.append((part, AnswerBlock(
                        items=block.items[lo:hi] - starts[i] + part.start,
                        labels=block.labels[lo:hi],
                        probs=block.probs[lo:hi],
                        exit_index=block.exit_index,
                        flops_fraction=block.flops_fraction,
                    )))
                self._post(self._deliver, routed)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
            self._post(self._fail, parts, f"inference failed: {type(exc).__name__}: {exc}")

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass

    # --- event loop side ---

    def _ran_batch(self, items: int) -> None:
        self.metrics.record_batch_run(items)

    def _deliver(self, routed: list[tuple[_Part, AnswerBlock]]) -> None:
        now = time.monotonic()
        for part, block in routed:
            job = part.job
            if job.cancelled or job.finished:
                continue
            n = len(block.items)
            self.metrics.record_answers(n, block.exit_index, block.flops_fraction, now - job.received_at)
            job.answered += n
            try:
                job.on_answers(block)
                if job.answered == job.size:
                    job.finished = True
                    job.on_done(None)
            except Exception:  # noqa: BLE001 - a broken consumer loses its own job, not the others'
                job.cancel()

    def _fail(self, parts: list[_Part], message: str) -> None:
        for job in {id(p.job): p.job for p in parts}.values():
            if job.cancelled or job.finished:
                continue
            job.finished = True
            self.metrics.failed += 1
            job.on_done(message)
