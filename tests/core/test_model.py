"""Conditional inference: exactness of the no-early-exit path, batch shrinking vs one-by-one vs all-exits simulation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ee_rl.core import (
    EarlyExitModel,
    EntropyExit,
    ExitRule,
    InternalClassifier,
    MaxProbExit,
    PatienceExit,
    PerExitThresholds,
    concat_all_exits,
    make_ensembles,
    make_internal_classifiers,
    simulate_inference,
)
from tests.core.builders import NUM_CLASSES, make_tiny_backbone, make_tiny_model, random_images


def _count_head_calls(model: EarlyExitModel, x: torch.Tensor) -> list[int]:
    model.exit_costs(x)  # FLOPs are measured (running every head once) on first use: do it before counting
    calls = [0]
    for module in [*model.heads, *(model.ensembles or [])]:
        module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("rule", [MaxProbExit(1.5), PerExitThresholds([2.0, 1.01, 5.0]), EntropyExit(0.0)])
def test_never_exit_rule_reproduces_backbone_bit_for_bit_and_runs_no_head(rule: ExitRule) -> None:
    model = make_tiny_model()
    x = random_images(9)
    calls = _count_head_calls(model, x)
    out = model.infer(x, rule)
    with torch.no_grad():
        expected = torch.log_softmax(model.backbone(x), dim=-1)
    assert torch.equal(out.log_probs, expected)
    assert calls[0] == 0
    assert out.exit_index.tolist() == [3] * 9
    assert out.flops.tolist() == [model.exit_costs(x).backbone] * 9


def test_never_exit_on_nature_cnn_equals_sb3_network_bit_for_bit(bench_script) -> None:
    model, original = bench_script.build_nature_cnn_early_exit(num_actions=6)
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        expected = torch.log_softmax(original(x), dim=-1)
    assert torch.equal(model.infer(x, MaxProbExit(2.0)).log_probs, expected)
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected_cl = torch.log_softmax(model.backbone(x), dim=-1)
    assert torch.equal(model.infer(x, MaxProbExit(2.0)).log_probs, expected_cl)
    torch.testing.assert_close(expected_cl, expected)


def _thresholds_with_a_mix_of_exits(model: EarlyExitModel, x: torch.Tensor) -> tuple[list[float], float]:
    """Per-exit median confidences and the median entropy at exit 0 (plus a small offset so no sample sits
    exactly on a threshold)."""
    with torch.no_grad():
        lp = model.all_exits(x).exit_log_probs
    conf = lp.exp().amax(dim=-1).median(dim=1).values + 1e-4
    entropy = torch.special.entr(lp[0].exp()).sum(dim=-1).median() + 1e-4
    return conf.tolist(), entropy.item()


RULES = {
    "maxprob": lambda conf, ent: MaxProbExit(conf[0]),
    "per_exit": lambda conf, ent: PerExitThresholds(conf),
    "entropy": lambda conf, ent: EntropyExit(ent),
    "patience": lambda conf, ent: PatienceExit(1),
}


@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize(
    ("ensembles", "cascade"), [("geometric", True), (None, True), (None, False), ("additive", True)]
)
def test_batch_shrinking_matches_one_by_one_and_all_exits_simulation(rule_name: str, ensembles, cascade) -> None:
    patience = rule_name == "patience"
    model = make_tiny_model(ensembles=ensembles, cascade=cascade, head_scale=5.0 if patience else 20.0)
    if patience:
        with torch.no_grad():  # lean every IC towards class 0 so that some samples' ICs agree and others don't
            for head in model.heads:
                head.linear.bias[0] += 1.0
    x = random_images(16, seed=4)
    rule = RULES[rule_name](*_thresholds_with_a_mix_of_exits(model, x))
    out = model.infer(x, rule)
    assert len(set(out.exit_index.tolist())) >= 2, "test needs samples leaving at different exits"

    singles = [model.infer(x[i : i + 1], rule) for i in range(len(x))]
    single_exit = torch.cat([s.exit_index for s in singles])
    single_lp = torch.cat([s.log_probs for s in singles])
    assert torch.equal(out.exit_index, single_exit)
    torch.testing.assert_close(out.log_probs, single_lp)
    assert torch.equal(out.log_probs.argmax(-1), single_lp.argmax(-1))
    assert torch.equal(out.flops, torch.cat([s.flops for s in singles]))

    with torch.no_grad():
        sim = simulate_inference(model.all_exits(x), rule, model.exit_costs(x))
    assert torch.equal(out.exit_index, sim.exit_index)
    assert torch.equal(out.flops, sim.flops)
    torch.testing.assert_close(out.log_probs, sim.log_probs)

    cumulative = torch.tensor(model.exit_costs(x).cumulative)
    assert torch.equal(out.flops, cumulative[out.exit_index])


def test_everyone_exits_at_first_ic_runs_only_first_head() -> None:
    model = make_tiny_model()
    x = random_images(5)
    calls = _count_head_calls(model, x)
    out = model.infer(x, MaxProbExit(0.0))
    assert out.exit_index.tolist() == [0] * 5 and calls[0] == 2  # IC 0 and ensemble 0
    with torch.no_grad():
        torch.testing.assert_close(out.log_probs, model.all_exits(x).ensemble_log_probs[0])


def test_all_exits_shapes_and_answers() -> None:
    model = make_tiny_model()
    x = random_images(4)
    with torch.no_grad():
        out = model.all_exits(x)
    assert out.ic_logits.shape == out.ic_log_probs.shape == out.ensemble_log_probs.shape == (3, 4, NUM_CLASSES)
    assert out.answer_log_probs.shape == (4, 4, NUM_CLASSES)
    assert torch.equal(out.exit_log_probs, out.ensemble_log_probs)
    assert torch.equal(out.final_log_probs, torch.log_softmax(model.backbone(x), dim=-1))
    torch.testing.assert_close(out.ic_log_probs, torch.log_softmax(out.ic_logits, dim=-1))
    no_ens = make_tiny_model(ensembles=None)
    with torch.no_grad():
        assert torch.equal(no_ens.all_exits(x).exit_log_probs, no_ens.all_exits(x).ic_log_probs)


def test_ensemble_loss_does_not_reach_heads_by_default() -> None:
    model = make_tiny_model()
    out = model.all_exits(random_images(4))
    out.ensemble_log_probs[2][:, 0].sum().backward()
    assert all(p.grad is None for p in model.heads.parameters())
    assert model.ensembles[2].log_w.grad is not None


def _parts(n_heads: int = 2):
    backbone = make_tiny_backbone()
    heads = make_internal_classifiers([8, 12, 16][:n_heads], NUM_CLASSES)
    return backbone, heads


@pytest.mark.parametrize(
    "build",
    [
        lambda: EarlyExitModel(nn.Linear(2, 2), _parts()[1], None, [0, 1]),
        lambda: EarlyExitModel(*_parts(), None, [0]),
        lambda: EarlyExitModel(*_parts(), None, [1, 0]),
        lambda: EarlyExitModel(*_parts(), None, [0, 4]),
        lambda: EarlyExitModel(*_parts(), make_ensembles(3, NUM_CLASSES), [0, 1]),
        lambda: EarlyExitModel(*_parts(), list(reversed(make_ensembles(2, NUM_CLASSES))), [0, 1]),
        lambda: EarlyExitModel(
            _parts()[0],
            [InternalClassifier(8, NUM_CLASSES, cascade_in=NUM_CLASSES), InternalClassifier(12, NUM_CLASSES)],
            None, [0, 1],
        ),
        lambda: make_tiny_model().infer(random_images(2), "maxprob"),
        lambda: make_tiny_model().infer(random_images(0), MaxProbExit(0.5)),
        lambda: make_tiny_model().infer(random_images(2), PerExitThresholds([0.5, 0.5])),
    ],
)
def test_bad_input_raises_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("rule_name", ["maxprob", "patience"])
def test_infer_iter_chunks_partition_the_batch_in_exit_order_and_equal_infer(rule_name: str) -> None:
    patience = rule_name == "patience"
    model = make_tiny_model(head_scale=5.0 if patience else 20.0)
    if patience:
        with torch.no_grad():
            for head in model.heads:
                head.linear.bias[0] += 1.0
    x = random_images(16, seed=4)
    rule = RULES[rule_name](*_thresholds_with_a_mix_of_exits(model, x))
    expected = model.infer(x, rule)
    chunks = list(model.infer_iter(x, rule))
    assert len(chunks) >= 2, "test needs samples leaving at different exits"
    exits = [c.exit_index for c in chunks]
    assert exits == sorted(set(exits)), "one chunk per exit, in increasing exit order"
    rows = torch.cat([c.rows for c in chunks])
    assert sorted(rows.tolist()) == list(range(16))  # every sample exactly once
    cumulative = model.exit_costs(x).cumulative
    for c in chunks:
        assert torch.equal(c.rows, c.rows.sort().values)
        assert c.log_probs.shape == (len(c.rows), NUM_CLASSES)
        assert torch.equal(expected.exit_index[c.rows], torch.full((len(c.rows),), c.exit_index))
        assert torch.equal(c.log_probs, expected.log_probs[c.rows])
        assert c.flops == cumulative[c.exit_index]


def test_infer_iter_hands_over_early_exits_before_later_stages_run() -> None:
    model = make_tiny_model()
    x = random_images(16, seed=4)
    conf, _ = _thresholds_with_a_mix_of_exits(model, x)
    rule = PerExitThresholds([conf[0], 2.0, 2.0])  # about half leave at IC 0, the rest go to the final head
    model.exit_costs(x)
    last_stage_calls = [0]
    model.backbone.stages[-1].register_forward_hook(lambda *_: last_stage_calls.__setitem__(0, last_stage_calls[0] + 1))
    chunks = model.infer_iter(x, rule)
    first = next(chunks)
    assert first.exit_index == 0 and 0 < len(first.rows) < 16
    assert last_stage_calls[0] == 0, "the IC-0 answers must be handed over before the last stage runs"
    rest = list(chunks)
    assert [c.exit_index for c in rest] == [3] and last_stage_calls[0] == 1
    assert not first.log_probs.requires_grad and torch.is_inference(first.log_probs)


def test_infer_iter_never_exit_rule_is_one_backbone_chunk_and_checks_arguments_eagerly() -> None:
    model = make_tiny_model()
    x = random_images(5)
    (chunk,) = model.infer_iter(x, MaxProbExit(1.5))
    assert chunk.exit_index == 3 and chunk.rows.tolist() == list(range(5))
    assert chunk.flops == model.exit_costs(x).backbone
    with torch.no_grad():
        assert torch.equal(chunk.log_probs, torch.log_softmax(model.backbone(x), dim=-1))
    with pytest.raises(ValueError):
        model.infer_iter(x, PerExitThresholds([0.5, 0.5]))  # raises before the first next()
    with pytest.raises(ValueError):
        model.infer_iter(random_images(0), MaxProbExit(0.5))


@pytest.mark.parametrize("ensembles", ["geometric", None])
def test_concat_all_exits_of_chunks_equals_one_pass(ensembles) -> None:
    model = make_tiny_model(ensembles=ensembles)
    x = random_images(7)
    with torch.no_grad():
        whole = model.all_exits(x)
        parts = concat_all_exits([model.all_exits(x[:3]), model.all_exits(x[3:])])
    for name in ("ic_logits", "ic_log_probs", "ensemble_log_probs", "final_logits", "final_log_probs"):
        got, want = getattr(parts, name), getattr(whole, name)
        if want is None:
            assert got is None
        else:
            assert got.shape == want.shape
            torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="at least one"):
        concat_all_exits([])
