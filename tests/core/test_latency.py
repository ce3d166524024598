"""Forced-exit rules and the latency helper (timing values themselves are not asserted: they are noisy)."""

from __future__ import annotations

import pytest

import torch

from ee_rl.core import forced_exit_rule, measure_exit_latency, median_call_us
from ee_rl.core.latency import backbone_prefix, median_us, paired_ratio, timed_rounds
from tests.core.builders import make_tiny_model, random_images


def test_forced_exit_rule_sends_everyone_to_that_exit() -> None:
    model = make_tiny_model()
    x = random_images(6)
    for m in range(3):
        assert model.infer(x, forced_exit_rule(3, m)).exit_index.tolist() == [m] * 6
    with pytest.raises(ValueError):
        forced_exit_rule(3, 3)


def test_measure_exit_latency_reports_every_exit() -> None:
    model = make_tiny_model()
    x = random_images(1)
    calls = []
    report = measure_exit_latency(model, x, repeats=3, warmup=1, extra_calls={"noop": lambda: calls.append(1)})
    assert len(report.exit_us) == 3 and len(report.speedup) == 3 and report.full_us > 0
    assert report.flops == (*model.exit_costs(x).cumulative[:3], model.exit_costs(x).backbone)
    assert set(report.extra_us) == {"noop"} and len(calls) == 4
    assert len(report.prefix_us) == 3 and len(report.speedup_bound) == 3
    with pytest.raises(ValueError):
        measure_exit_latency(model, x, repeats=1, warmup=0, extra_calls={"full": lambda: None})
    with pytest.raises(ValueError):
        median_call_us({"a": lambda: None}, repeats=0, warmup=0)


def test_backbone_prefix_is_the_stage_output_the_head_reads() -> None:
    model = make_tiny_model()
    x = random_images(4)
    with torch.no_grad():
        features, _ = model.attached_stage_outputs(x)
        for m in range(3):
            assert torch.equal(backbone_prefix(model, m)(x), features[m])
    with pytest.raises(ValueError):
        backbone_prefix(model, 3)


def test_timed_rounds_takes_turns_in_blocks() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    rounds = timed_rounds(calls, repeats=5, warmup=1, block=2)
    # warm-up once each, then rounds of 2 consecutive calls per function; the last round holds the remainder
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 2 + ["a", "b"]
    assert [len(r) for r in rounds["a"]] == [2, 2, 1] == [len(r) for r in rounds["b"]]
    with pytest.raises(ValueError):
        timed_rounds(calls, repeats=1, warmup=0, block=0)


def test_timed_rounds_counts_the_sync_inside_each_timed_call() -> None:
    # An accelerator's queued work must be charged to the call that queued it: the clock here counts events, so
    # a timed span covering the call and its sync is 2 events long.
    events: list[str] = []
    calls = {"a": lambda: events.append("a")}
    rounds = timed_rounds(calls, repeats=3, warmup=1, block=1, clock=lambda: len(events),
                          sync=lambda: events.append("sync"))
    assert events == ["a", "sync"] * 4
    assert rounds["a"] == [[2], [2], [2]]


def test_paired_ratio_cancels_a_machine_that_slows_down_between_rounds() -> None:
    # "full" always takes 3x "exit", but the whole machine runs 1x, 2x, then 5x slower from round to round
    full = [[300, 300], [600, 600], [1500, 1500]]
    exit_ = [[100, 100], [200, 200], [500, 500]]
    assert paired_ratio(full, exit_) == 3.0
    assert median_us([[1000, 3000], [2000]]) == 2.0  # µs, over all calls of all rounds
    with pytest.raises(ValueError):
        paired_ratio(full, exit_[:2])


def test_exit_latency_reports_paired_speedups_per_exit() -> None:
    model = make_tiny_model()
    report = measure_exit_latency(model, random_images(1), repeats=4, warmup=0, block=2)
    assert len(report.speedup) == 3 and all(s > 0 for s in report.speedup)
    assert len(report.speedup_bound) == 3 and all(s > 0 for s in report.speedup_bound)
