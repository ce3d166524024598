"""Forced-exit rules and the latency helper (timings checked against a fake clock: real ones are noisy)."""

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
    assert len(report.exit_us) == 3 and len(report.speedup) == 3
    # By hand (2 FLOPs per multiply-add): the tiny backbone's convs on 16x16 -> 16x16 -> 8x8 -> 8x8 -> 4x4, then 16->5.
    convs = [2 * 16 * 16 * 8 * 3 * 9, 2 * 8 * 8 * 12 * 8 * 9, 2 * 8 * 8 * 16 * 12 * 9, 2 * 4 * 4 * 16 * 16 * 9]
    assert report.flops[3] == sum(convs) + 2 * 16 * 5
    # exit m (after stage m) costs the stages up to it plus the heads so far: more than those stages, and more than
    # the exit before it
    assert all(sum(convs[: m + 1]) < report.flops[m] for m in range(3))
    assert report.flops[0] < report.flops[1] < report.flops[2]
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


def test_exit_latency_times_the_stages_each_path_runs() -> None:
    # A clock that moves only when a backbone stage runs (stage i: 2**i µs): every path's time is the sum of the
    # stages it ran, known by hand, so the report's latencies and speed-ups are exact.
    model = make_tiny_model()
    now = {"ns": 0}
    stage_ns = [1000 * 2**i for i in range(len(model.backbone.stages))]
    for stage, ns in zip(model.backbone.stages, stage_ns):
        stage.register_forward_pre_hook(lambda module, args, ns=ns: now.__setitem__("ns", now["ns"] + ns))
    report = measure_exit_latency(model, random_images(1), repeats=4, warmup=1, block=2, clock=lambda: now["ns"])
    full = sum(stage_ns) / 1e3
    upto = [sum(stage_ns[: a + 1]) / 1e3 for a in model.attach_after]  # an exit after stage a runs stages 0..a
    assert report.full_us == full
    assert report.exit_us == report.prefix_us == tuple(upto)
    assert report.speedup == pytest.approx([full / u for u in upto])
    assert report.speedup_bound == pytest.approx([full / u for u in upto])
