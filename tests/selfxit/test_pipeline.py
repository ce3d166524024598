"""The label-free pipeline's pieces: splits, medial datasets, calibration + thresholds + subset on a tiny model."""

from __future__ import annotations

import pytest
import torch

from ee_rl.core import all_exits_batched
from ee_rl.core.calibrate import fit_temperatures, tolerance_budgets
from ee_rl.core.exits import PerExitThresholds
from ee_rl.selfxit.pipeline import (
    Guarantee,
    calibrate_and_select,
    medial_datasets,
    select_with_guarantee,
    split_indices,
)
from ee_rl.selfxit.report import calibration_report
from tests.core.builders import make_tiny_model, random_images


def test_split_indices_partitions_with_the_requested_sizes() -> None:
    train, val, test = split_indices(100, [0.5, 0.2, 0.3], seed=3)
    assert (len(train), len(val), len(test)) == (50, 20, 30)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(100))
    again = split_indices(100, [0.5, 0.2, 0.3], seed=3)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again))
    assert not torch.equal(split_indices(100, [0.5, 0.2, 0.3], seed=4)[0], train)
    assert [len(p) for p in split_indices(3, [0.98, 0.01, 0.01], seed=0)] == [1, 1, 1]
    with pytest.raises(ValueError):
        split_indices(2, [0.5, 0.2, 0.3], seed=0)


def test_medial_datasets_are_the_stage_outputs_and_backbone_log_probs() -> None:
    backbone = make_tiny_model().backbone
    x = random_images(10)
    feats, log_probs = medial_datasets(backbone, x, [0, 2], batch_size=4)
    with torch.no_grad():
        h0 = backbone.stages[0](backbone.preprocess(x))
        h2 = backbone.stages[2](backbone.stages[1](h0))
        torch.testing.assert_close(feats[0], h0)
        torch.testing.assert_close(feats[1], h2)
        torch.testing.assert_close(log_probs, torch.log_softmax(backbone(x), dim=-1))


def test_calibrate_and_select_respects_the_budgets_and_deploys_the_subset() -> None:
    model = make_tiny_model(ensembles=None, cascade=False, head_scale=3.0)
    x = random_images(120, seed=5)
    tolerance = 0.1
    cal = calibrate_and_select(model, x, tolerance, batch_size=50)
    assert len(cal.temperatures) == len(cal.thresholds) == 3
    for e, budget in zip(cal.exits, tolerance_budgets(tolerance, 3)):
        assert e.budget == budget and e.estimated_drop <= budget
    assert cal.subset.estimated_accuracy_drop < tolerance
    assert isinstance(cal.rule, PerExitThresholds)
    if cal.subset.subset:
        assert cal.rule.taus == tuple(cal.thresholds[m] for m in cal.subset.subset)
        assert cal.deployed.attach_after == tuple(model.attach_after[m] for m in cal.subset.subset)
    # The calibrated candidates answer softmax(logits / T) per exit.
    raw = all_exits_batched(model, x[:7])
    got = all_exits_batched(cal.candidates, x[:7])
    for m, t in enumerate(cal.temperatures):
        torch.testing.assert_close(got.ic_log_probs[m], torch.log_softmax(raw.ic_logits[m] / t, dim=-1))
    with pytest.raises(ValueError, match="independent heads"):
        calibrate_and_select(make_tiny_model(), x, tolerance)


def test_calibrate_with_a_guarantee_deploys_the_certified_configuration() -> None:
    model = make_tiny_model(ensembles=None, cascade=False, head_scale=3.0)
    x = random_images(300, seed=7)
    guarantee = Guarantee(delta=0.1, fit_fraction=0.4, seed=1)
    cal = calibrate_and_select(model, x, 0.6, batch_size=100, guarantee=guarantee)
    result = cal.guarantee
    assert result is not None and result.risk == "consistency"
    assert (result.fit_table.num_samples, result.table.num_samples) == (120, 180)
    control = result.control
    assert control.epsilon == 0.6 and control.delta == 0.1 and control.num_samples == 180
    chosen = control.chosen
    assert chosen.subset, "at ε = 0.6 some configuration that saves FLOPs is certified"
    assert 0 <= control.chosen_index < control.num_rejected
    assert cal.thresholds == chosen.thresholds and cal.subset.subset == chosen.subset
    assert cal.rule.taus == tuple(chosen.thresholds[m] for m in chosen.subset)
    # The temperatures come from the fit part only (split by the guarantee's seed).
    fit, _ = split_indices(300, [0.4, 0.6], seed=1)
    assert cal.temperatures == fit_temperatures(all_exits_batched(model, x[fit]))
    report = calibration_report(cal)["guarantee"]
    assert report["n_cal"] == 180 and report["n_fit"] == 120 and report["bound"] == "Hoeffding-Bentkus"
    assert report["thresholds"] == list(chosen.thresholds) and report["chosen_tolerance"] == chosen.parameter
    # Another ε on the same path: a stricter level certifies no more.
    strict = select_with_guarantee(cal.candidates, result, 0.05, cal.backbone_flops)
    assert strict.guarantee.control.num_rejected <= control.num_rejected and strict.tolerance == 0.05
    with pytest.raises(ValueError, match="labels"):
        calibrate_and_select(model, x, 0.6, guarantee=Guarantee(0.1, risk="accuracy-gap"))
    with pytest.raises(ValueError, match="delta"):
        Guarantee(1.0)
