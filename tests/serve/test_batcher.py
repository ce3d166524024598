"""Dynamic batching: concurrent jobs share model calls, big jobs are split, answers equal offline, failures isolated."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import torch

from ee_rl.serve import AnswerBlock, DynamicBatcher, Job, ServedModel
from tests.serve.conftest import make_tiny_served, tiny_inputs


def _answers(blocks: list[AnswerBlock], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, exits, probs = np.full(n, -1), np.full(n, -1), np.zeros((n, 5), np.float32)
    for b in blocks:
        assert (labels[b.items] == -1).all(), "an item was answered twice"
        labels[b.items], exits[b.items], probs[b.items] = b.labels, b.exit_index, b.probs
    return labels, exits, probs


def _check(blocks: list[AnswerBlock], expected: dict[str, np.ndarray], rows: slice, one_call: bool = True) -> None:
    n = len(expected["labels"][rows])
    labels, exits, probs = _answers(blocks, n)
    assert np.array_equal(labels, expected["labels"][rows])
    assert np.array_equal(exits, expected["exit_index"][rows])
    np.testing.assert_allclose(probs, expected["probs"][rows], atol=1e-5)
    if one_call:
        assert [b.exit_index for b in blocks] == sorted(b.exit_index for b in blocks), "blocks must come in exit order"


def _run(served: ServedModel, max_batch: int, max_wait_ms: float, coro_factory):
    async def main():
        batcher = DynamicBatcher(served, max_batch, max_wait_ms)
        batcher.start()
        try:
            return await coro_factory(batcher), batcher.metrics
        finally:
            batcher.stop()

    return asyncio.run(main())


def test_concurrent_jobs_share_one_model_call_and_each_gets_its_own_answers(tiny_served, tiny_expected) -> None:
    x = torch.from_numpy(tiny_inputs())
    slices = [slice(0, 5), slice(5, 6), slice(6, 16)]

    async def go(batcher):
        return await asyncio.gather(*(batcher.run(x[s]) for s in slices))

    # The batch is full (16 items) long before the 10 s wait: one model call, no waiting.
    results, metrics = _run(tiny_served, 16, 10_000, go)
    assert metrics.batches_run == 1 and metrics.max_batch_items == 16
    for blocks, s in zip(results, slices):
        _check(blocks, tiny_expected, s)
    assert metrics.items == 16 and sum(metrics.exit_histogram) == 16


def test_a_job_larger_than_max_batch_is_split_across_model_calls(tiny_served, tiny_expected) -> None:
    x = torch.from_numpy(tiny_inputs())

    async def go(batcher):
        return await batcher.run(x)

    blocks, metrics = _run(tiny_served, 6, 0, go)
    assert metrics.batches_run == 3 and metrics.max_batch_items == 6  # 6 + 6 + 4
    _check(blocks, tiny_expected, slice(0, 16), one_call=False)


def test_max_wait_bounds_how_long_a_lonely_job_waits(tiny_served) -> None:
    x = torch.from_numpy(tiny_inputs(2))

    async def go(batcher):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await batcher.run(x)
        return loop.time() - t0

    elapsed, metrics = _run(tiny_served, 64, 300, go)
    assert metrics.batches_run == 1
    assert elapsed >= 0.3  # it waited for company (up to max_wait), then ran alone


def test_cancelled_job_gets_nothing_and_others_are_unaffected(tiny_served, tiny_expected) -> None:
    x = torch.from_numpy(tiny_inputs())

    async def go(batcher):
        got: list[AnswerBlock] = []
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        doomed = Job(x[:8], got.append, done.set_result)
        batcher.submit(doomed)
        doomed.cancel()
        kept = await batcher.run(x[8:])
        await asyncio.sleep(0.05)
        return got, done.done(), kept

    (got, doomed_done, kept), metrics = _run(tiny_served, 64, 50, go)
    assert got == [] and not doomed_done
    _check(kept, tiny_expected, slice(8, 16))


def test_a_failing_batch_fails_its_jobs_only_and_the_batcher_goes_on(tiny_served, tiny_expected) -> None:
    async def go(batcher):
        with pytest.raises(RuntimeError, match="inference failed"):
            await batcher.run(torch.zeros(2, 7))  # not the model's input shape: the model raises
        return await batcher.run(torch.from_numpy(tiny_inputs()))

    blocks, metrics = _run(tiny_served, 64, 0, go)
    _check(blocks, tiny_expected, slice(0, 16))
    assert metrics.failed == 1


def test_an_unexpected_error_while_batching_fails_that_batch_only(tiny_served, tiny_expected) -> None:
    x = torch.from_numpy(tiny_inputs())

    async def go(batcher):
        batcher.max_wait_s = math.inf  # what an unchecked max_wait_ms=inf did: queue.get(timeout=inf) raises
        with pytest.raises(RuntimeError, match="OverflowError"):
            await asyncio.wait_for(batcher.run(x[:2]), 10)
        batcher.max_wait_s = 0.0
        return await asyncio.wait_for(batcher.run(x), 10)  # the thread is still serving

    blocks, metrics = _run(tiny_served, 64, 0, go)
    _check(blocks, tiny_expected, slice(0, 16))
    assert metrics.failed == 1


def test_settings_are_checked() -> None:
    served = make_tiny_served()
    bad_settings = [
        dict(max_batch=0, max_wait_ms=1), dict(max_batch=4, max_wait_ms=-1), dict(max_batch=2.5, max_wait_ms=1),
        dict(max_batch=4, max_wait_ms=math.inf),
    ]
    for bad in bad_settings:
        with pytest.raises(ValueError):
            DynamicBatcher(served, **bad)
