"""The risk check's draws: what each method is measured on, the two samplings, and the summary rows."""

from __future__ import annotations

import pytest
import torch

from ee_rl.core.flops import ExitCosts
from ee_rl.errors import UserError
from ee_rl.risk.experiment import (
    METHODS,
    Pool,
    RiskCheckSettings,
    default_settings,
    run_draw,
    run_risk_check,
    summarize,
)
from ee_rl.risk.record import ExitRecord

COSTS = ExitCosts(preprocess=0, stages=(100, 100, 100), head=10, ics=(5, 8), ensembles=(0, 0), attach_after=(0, 1))


def synthetic_record(n: int = 900, seed: int = 0) -> ExitRecord:
    """Two exits that agree with the backbone more often when they are confident, and labels."""
    g = torch.Generator().manual_seed(seed)
    final = 3.0 * torch.randn((n, 4), generator=g)
    reference = final.argmax(dim=-1)
    ics = []
    for sharpness in (1.0, 2.0):
        z = torch.randn((n, 4), generator=g)
        z[torch.arange(n), reference] += sharpness * torch.rand(n, generator=g) * 4
        ics.append(z)
    labels = torch.where(torch.rand(n, generator=g) < 0.8, reference, torch.randint(0, 4, (n,), generator=g))
    return ExitRecord("synthetic", torch.stack(ics), final, labels, COSTS, {"pool": "synthetic"})


def small_settings(**overrides: object) -> RiskCheckSettings:
    values = dict(risks=("consistency", "accuracy-gap"), epsilons=(0.1, 0.3), n_cal=300, n_test=200, n_splits=3)
    return RiskCheckSettings(**{**values, **overrides})


def test_each_draw_is_measured_on_its_own_held_out_samples() -> None:
    record = synthetic_record()
    pool = Pool.from_record(record, "consistency")
    settings = small_settings(methods=("shared-ucb",))
    cal, rest = torch.arange(300), torch.arange(300, 900)
    test = rest[:200]
    # A pool whose non-calibration samples all agree with the backbone: no held-out loss, whatever is chosen.
    pool = Pool(pool.outputs, pool.costs, pool.raw, pool.risk, pool.losses.clone(), pool.labels)
    pool.losses[:, 300:] = False
    outcomes = run_draw(pool, cal, test, rest, 0, "split", settings)
    assert [o.epsilon for o in outcomes] == [0.1, 0.3]
    assert all(o.test_risk == 0.0 and o.population_risk == 0.0 for o in outcomes)
    assert all(o.sampling == "split" and o.method == "shared-ucb" for o in outcomes)
    # Costs are fractions of the backbone's FLOPs: between answering at exit 1 and paying every head on top.
    assert all(105 / 310 <= o.test_cost <= (310 + 13) / 310 for o in outcomes)


def test_run_risk_check_covers_every_risk_method_level_and_sampling_reproducibly() -> None:
    record = synthetic_record()
    settings = small_settings()
    outcomes = run_risk_check(record, settings)
    assert len(outcomes) == 3 * 2 * len(METHODS) * 2 * 2  # splits, risks, methods, epsilons, samplings
    for o in outcomes:
        assert 0.0 <= o.test_risk <= 1.0 and 0.0 <= o.population_risk <= 1.0
        if o.sampling == "iid":  # measured on the whole pool, the population itself
            assert (o.test_risk, o.test_cost) == (o.population_risk, o.population_cost)
        if o.backbone_alone:
            assert o.test_risk == 0.0 and o.test_cost == 1.0
    again = run_risk_check(record, settings)
    assert again == outcomes
    assert run_risk_check(record, small_settings(seed=1)) != outcomes


def test_without_n_test_every_non_calibration_sample_is_the_test_split() -> None:
    record = synthetic_record()
    whole = run_risk_check(record, small_settings(n_test=None, methods=("shared-ucb",)))
    part = run_risk_check(record, small_settings(methods=("shared-ucb",)))
    for o, p in zip(whole, part, strict=True):
        # Same draws, same choices: the population (all non-calibration samples) is measured alike; the test
        # split is now that population, not its first 200 samples.
        assert (o.population_risk, o.population_cost) == (p.population_risk, p.population_cost)
        assert (o.test_risk, o.test_cost) == (o.population_risk, o.population_cost)
    assert any(p.test_risk != p.population_risk for p in part if p.sampling == "split")
    assert default_settings("Pong").n_test is None and default_settings("digits-noisy", n_test=269).n_test == 269


def test_summary_rows_count_violations_with_exact_intervals() -> None:
    record = synthetic_record()
    settings = small_settings(methods=("point-estimate", "per-exit-ucb"))
    outcomes = run_risk_check(record, settings)
    rows = summarize(outcomes, settings)
    assert len(rows) == 2 * 2 * 2
    for row in rows:
        mine = [o for o in outcomes if (o.risk, o.method, o.epsilon, o.sampling) == (row["risk"], row["method"],
                                                                                     row["epsilon"], "split")]
        assert row["n_splits"] == len(mine) == 3
        assert row["violation_rate"] == sum(o.test_risk > row["epsilon"] for o in mine) / 3
        lo, hi = row["violation_ci"]
        assert lo <= row["violation_rate"] <= hi and hi - lo > 0.3  # three draws say little
        assert row["guaranteed"] == (row["method"] == "per-exit-ucb")
        assert (row["delta"] is None) == (row["method"] == "point-estimate")
        for key in ("method", "epsilon", "delta", "n_splits", "violation_rate", "violation_ci", "mean_cost"):
            assert key in row


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="fit or certifying part"):
        small_settings(fit_fraction=0.999)
    with pytest.raises(UserError, match="methods"):
        small_settings(methods=("magic",))
    with pytest.raises(UserError, match="epsilons"):
        small_settings(epsilons=(0.0,))
    with pytest.raises(UserError, match="unknown dataset"):
        default_settings("mnist")
    assert default_settings("Pong", n_cal=None).n_cal == 1600
    with pytest.raises(ValueError, match="exceeds the pool"):
        run_risk_check(synthetic_record(n=400), small_settings())
