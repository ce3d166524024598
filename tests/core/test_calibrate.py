"""SelfXit calibration: temperature scaling, eq. 3 thresholds and eq. 4 subset scores on hand-made tables, and the
subset simulation against real batch-shrinking runs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ee_rl.core import MaxProbExit, count_flops
from ee_rl.core.exits import PerExitThresholds
from ee_rl.core.calibrate import (
    DISABLED,
    NEVER_HIT,
    ExitConfiguration,
    ExitTable,
    TemperatureScaledHead,
    control_risk,
    deploy_subset,
    estimated_accuracy_drop,
    fit_temperature,
    fit_temperatures,
    risk_controlled_tolerance,
    scaled_outputs,
    select_exit_subset,
    shared_threshold_path,
    simulate_subset,
    subset_model,
    take_samples,
    temperature_nll,
    threshold_for_budget,
    tolerance_budgets,
    tolerance_path,
    tolerance_thresholds,
    with_temperatures,
)
from ee_rl.core.model import EarlyExitModel
from tests.core.builders import make_tiny_model, random_images


# ------------------------------------------------------------------------------------------- temperature scaling
def _miscalibrated(scale: float, n: int = 4000, k: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets drawn from softmax(z); the head reports ``scale * z`` (scale > 1: overconfident)."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn((n, k), generator=g)
    targets = torch.multinomial(torch.softmax(z, dim=-1), 1, generator=g).squeeze(1)
    return scale * z, targets


@pytest.mark.parametrize("scale", [4.0, 0.3])
def test_temperature_scaling_lowers_nll_and_finds_the_grid_optimum(scale: float) -> None:
    logits, targets = _miscalibrated(scale)
    t = fit_temperature(logits, targets)
    before = temperature_nll(logits, targets, 1.0)
    after = temperature_nll(logits, targets, t)
    assert after < before - 0.05
    # The true calibrating temperature is ``scale`` (up to sampling noise).
    assert t == pytest.approx(scale, rel=0.1)
    # Reference: a fine grid search over T never beats the fitted temperature.
    grid = torch.logspace(math.log10(t) - 0.3, math.log10(t) + 0.3, 601).tolist()
    best_grid = min(temperature_nll(logits, targets, g) for g in grid)
    assert after <= best_grid + 1e-9


def test_fit_temperatures_is_label_free_by_default() -> None:
    model = make_tiny_model(ensembles=None, cascade=False)
    with torch.no_grad():
        out = model.all_exits(random_images(40))
    temps = fit_temperatures(out)
    backbone_argmax = out.final_logits.argmax(dim=-1)
    assert temps == tuple(fit_temperature(out.ic_logits[m], backbone_argmax) for m in range(3))
    with pytest.raises(ValueError, match="ensembles"):
        fit_temperatures(make_tiny_model().all_exits(random_images(4)))


def test_temperature_scaled_head_divides_logits_and_adds_no_flops() -> None:
    model = make_tiny_model(ensembles=None, cascade=False)
    head = model.heads[1]
    scaled = TemperatureScaledHead(head, 2.5)
    h = torch.randn(3, 12, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(scaled(h), head(h, None) / 2.5)
    assert count_flops(scaled, h[:1])[0] == count_flops(head, h[:1], None)[0]
    assert scaled.num_classes == head.num_classes and scaled.cascade_in == 0
    assert float(scaled.state_dict()["temperature"]) == 2.5
    with pytest.raises(ValueError, match="cascade"):
        TemperatureScaledHead(make_tiny_model(ensembles=None, cascade=True).heads[1], 2.0)
    with pytest.raises(ValueError, match="positive"):
        TemperatureScaledHead(head, 0.0)


# ------------------------------------------------------------------------------------------- thresholds (eq. 3)
def _lc(confidences: list[float]) -> torch.Tensor:
    return torch.tensor(confidences, dtype=torch.float32).log()


def test_tolerance_budgets_halve_per_exit() -> None:
    assert tolerance_budgets(0.02, 3) == (0.01, 0.005, 0.0025)
    with pytest.raises(ValueError, match="tolerance"):
        tolerance_budgets(2.0, 3)


def test_threshold_rule_on_a_hand_made_table() -> None:
    lc = _lc([0.9, 0.8, 0.7, 0.6, 0.5])
    agrees = torch.tensor([True, False, True, False, True])
    # By hand: theta=0.6 lets out {0.9, 0.8, 0.7} (1 wrong), theta=0.5 also 0.6 (2 wrong), theta=0 all (2 wrong).
    assert threshold_for_budget(lc, agrees, 0.2) == pytest.approx(0.6)  # 1 wrong of 5 allowed
    assert threshold_for_budget(lc, agrees, 0.3) == pytest.approx(0.6)  # 1.5 -> still 1
    assert threshold_for_budget(lc, agrees, 0.4) == 0.0  # 2 wrong allowed: everything may exit
    assert threshold_for_budget(lc, agrees, 0.0) == pytest.approx(0.8)  # only 0.9 (right) exits
    assert estimated_accuracy_drop(lc, agrees, threshold_for_budget(lc, agrees, 0.2)) == pytest.approx(1 / 5)
    assert estimated_accuracy_drop(lc, agrees, 0.65) == pytest.approx(1 / 5)
    assert estimated_accuracy_drop(lc, agrees, 0.0) == pytest.approx(2 / 5)
    # Ties and an exit that is always wrong.
    assert threshold_for_budget(_lc([0.8, 0.8, 0.6]), torch.tensor([True, False, True]), 0.0) == pytest.approx(0.8)
    assert threshold_for_budget(_lc([0.9]), torch.tensor([False]), 0.0) == pytest.approx(0.9)
    # Confidence 1 (log 0): only NEVER_HIT keeps a wrong answer in.
    assert threshold_for_budget(torch.tensor([0.0]), torch.tensor([False]), 0.0) == NEVER_HIT


def _hand_table(c1: tuple[int, ...] = (1, 2, 8)) -> ExitTable:
    conf = [
        [0.9, 0.4, 0.4, 0.9, 0.4, 0.4],  # exit 0 hits samples 0, 3
        [0.9, 0.9, 0.4, 0.4, 0.4, 0.4],  # exit 1 hits samples 0, 1
        [0.4, 0.9, 0.9, 0.9, 0.4, 0.4],  # exit 2 hits samples 1, 2, 3
    ]
    predictions = torch.tensor([[0, 1, 1, 2, 0, 0], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    return ExitTable(
        log_confidences=torch.stack([_lc(c) for c in conf]),
        predictions=predictions,
        reference=torch.tensor([0, 1, 1, 1, 0, 1]),
        exit_flops=c1,
        fallback_flops=(100, 60, 20),
    )


def test_tolerance_thresholds_use_t_over_two_to_the_n() -> None:
    table = _hand_table()
    # agrees: exit 0 [T, T, T, F, T, F]; exit 1 [T, F, T, T, F, T]; exit 2 [F, T, T, T, F, T]
    # T = 0.5 -> budgets 0.25 (1.5 -> 1 wrong of 6), 0.125 (0.75 -> 0 wrong).
    # Exit 0: theta = 0 lets out all (2 wrong); 0.4 lets out samples 0, 3 (1 wrong) -> 0.4.
    # Exit 1: theta = 0 lets out sample 4 (wrong); 0.4 lets out 0, 1 with 1 wrong; 0.9 nothing -> 0.9.
    # Exit 2: theta = 0 lets out sample 0 and 4 (wrong); 0.4 lets out 1, 2, 3 (all right) -> 0.4.
    assert tolerance_thresholds(table, 0.5) == pytest.approx((0.4, 0.9, 0.4))


def test_subset_score_k_on_a_hand_made_table() -> None:
    table = _hand_table()
    th = (0.5, 0.5, 0.5)
    # By hand with C1 = (1, 2, 8), C2 = (100, 60, 20): K = sum |H| (C2 - C1) - |M| C1 over the cascade.
    expected = {
        (): 0,
        (0,): 2 * 99 - 4 * 1,  # 194
        (1,): 2 * 58 - 4 * 2,  # 108
        (2,): 3 * 12 - 3 * 8,  # 12
        (0, 1): 194 + (1 * 58 - 3 * 2),  # exit 1 sees {1, 2, 4, 5}, hits {1}: 246
        (0, 2): 194 + (2 * 12 - 2 * 8),  # exit 2 sees {1, 2, 4, 5}, hits {1, 2}: 202
        (1, 2): 108 + (2 * 12 - 2 * 8),  # exit 2 sees {2, 3, 4, 5}, hits {2, 3}: 116
        (0, 1, 2): 246 + (1 * 12 - 2 * 8),  # exit 2 sees {2, 4, 5}, hits {2}: 242
    }
    for subset, k in expected.items():
        assert simulate_subset(table, th, subset).score == k, subset
    best = select_exit_subset(table, th)
    assert best.subset == (0, 1) and best.score == 246
    assert best.exit_index.tolist() == [0, 1, 2, 0, 2, 2]
    assert best.hits == (2, 1) and best.misses == (4, 3)
    # Wrong hits: exit 0 answers sample 3 with 2 (backbone 1); exit 1 answers sample 1 with 0 (backbone 1).
    assert best.wrong_hits == (1, 1) and best.estimated_accuracy_drop == pytest.approx(2 / 6)
    # Greedy (forced) reaches the same subset here: {0} -> {0, 1} -> adding 2 lowers K.
    assert select_exit_subset(table, th, exhaustive_limit=0).subset == (0, 1)
    # Expensive heads everywhere: no exit pays off, the plain backbone wins with K = 0.
    none = select_exit_subset(_hand_table(c1=(90, 60, 20)), th)
    assert none.subset == () and none.score == 0 and none.exit_index.tolist() == [0] * 6


def test_estimated_drop_of_any_subset_stays_within_the_tolerance() -> None:
    g = torch.Generator().manual_seed(1)
    m, n = 4, 300
    table = ExitTable(
        log_confidences=torch.rand((m, n), generator=g).clamp(min=0.1).log(),
        predictions=torch.randint(0, 3, (m, n), generator=g),
        reference=torch.randint(0, 3, (n,), generator=g),
        exit_flops=(1, 1, 1, 1),
        fallback_flops=(40, 30, 20, 10),
    )
    tolerance = 0.05
    th = tolerance_thresholds(table, tolerance)
    for mi, budget in enumerate(tolerance_budgets(tolerance, m)):
        assert estimated_accuracy_drop(table.log_confidences[mi], table.agrees[mi], th[mi]) <= budget
    for size in range(1, m + 1):
        for subset in itertools.combinations(range(m), size):
            assert simulate_subset(table, th, subset).estimated_accuracy_drop < tolerance


# --------------------------------------------------------------------------- simulation vs real batch shrinking
def test_subset_simulation_matches_batch_shrinking_inference_and_k_is_the_flops_saved() -> None:
    base = make_tiny_model(ensembles=None, cascade=False, head_scale=4.0)
    x = random_images(96, seed=3)
    with torch.no_grad():
        raw = base.all_exits(x)
    temps = fit_temperatures(raw)
    model = EarlyExitModel(base.backbone, with_temperatures(base.heads, temps), None, base.attach_after).eval()
    with torch.no_grad():
        out = model.all_exits(x)
    for m, t in enumerate(temps):
        torch.testing.assert_close(out.ic_log_probs[m], torch.log_softmax(raw.ic_logits[m] / t, dim=-1))
    costs = model.exit_costs(x)
    table = ExitTable.from_outputs(out, costs)
    assert table.fallback_flops[0] == costs.backbone - sum(costs.stages[:1])
    # Thresholds between the samples' confidences (a tie could flip with float rounding across batch sizes).
    th = tuple((table.log_confidences.exp().median(dim=1).values + 1e-4).tolist())
    backbone_total = x.shape[0] * costs.backbone
    for size in range(0, 4):
        for subset in itertools.combinations(range(3), size):
            sim = simulate_subset(table, th, subset)
            deployed, rule = deploy_subset(model, subset, th)
            real = deployed.infer(x, rule)
            # The deployed model's backbone is exit deployed.num_ics (1 for the empty subset's disabled head).
            real_index = torch.where(real.exit_index == deployed.num_ics, len(subset), real.exit_index)
            assert real_index.tolist() == sim.exit_index.tolist(), subset
            assert backbone_total - int(real.flops.sum()) == sim.score, subset
            # The answers are the chosen exit's (or the backbone's) calibrated distribution.
            answer_rows = out.answer_log_probs[[*subset, 3]][sim.exit_index, torch.arange(x.shape[0])]
            torch.testing.assert_close(real.log_probs, answer_rows)
    best = select_exit_subset(table, th)
    subsets = [s for k in range(4) for s in itertools.combinations(range(3), k)]
    assert best.score == max(simulate_subset(table, th, s).score for s in subsets)


def test_deploy_empty_subset_runs_the_plain_backbone() -> None:
    model = make_tiny_model(ensembles=None, cascade=False)
    x = random_images(5)
    deployed, rule = deploy_subset(model, (), (0.5, 0.5, 0.5))
    assert rule.taus == (DISABLED,)
    out = deployed.infer(x, rule)
    ref = model.infer(x, MaxProbExit(2.0))
    assert torch.equal(out.log_probs, ref.log_probs) and torch.equal(out.flops, ref.flops)


def test_subset_model_rejects_cascaded_heads_and_bad_subsets() -> None:
    with pytest.raises(ValueError, match="independent heads"):
        subset_model(make_tiny_model(), (0, 2))
    model = make_tiny_model(ensembles=None, cascade=False)
    with pytest.raises(ValueError, match="increasing"):
        subset_model(model, (2, 0))
    with pytest.raises(ValueError, match="empty"):
        subset_model(model, ())


# ------------------------------------------------------------------------------------------ subset search, losses
def _brute_force_best(table: ExitTable, th: tuple[float, ...]) -> tuple[int, ...]:
    """The published loop: by size, then lexicographically, keeping the first strictly better score."""
    best, best_score = (), 0
    for size in range(1, table.num_exits + 1):
        for subset in itertools.combinations(range(table.num_exits), size):
            score = simulate_subset(table, th, subset).score
            if score > best_score:
                best, best_score = subset, score
    return best


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_subset_search_picks_what_the_loop_picks_ties_included(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    m, n = 5, 40
    # Few distinct costs and confidences, so that many subsets tie.
    table = ExitTable(
        log_confidences=torch.rand((m, n), generator=g).log(),
        predictions=torch.randint(0, 3, (m, n), generator=g),
        reference=torch.randint(0, 3, (n,), generator=g),
        exit_flops=tuple(torch.randint(1, 3, (m,), generator=g).tolist()),
        fallback_flops=tuple(sorted(torch.randint(4, 12, (m,), generator=g).tolist(), reverse=True)),
    )
    th = tuple(torch.rand(m, generator=g).tolist())
    assert select_exit_subset(table, th).subset == _brute_force_best(table, th)


def test_losses_consistency_and_accuracy_gap() -> None:
    table = ExitTable(
        log_confidences=torch.zeros(2, 4),
        predictions=torch.tensor([[0, 1, 2, 0], [1, 1, 1, 1]]),
        reference=torch.tensor([0, 1, 0, 2]),
        exit_flops=(1, 1),
        fallback_flops=(3, 2),
    )
    labels = torch.tensor([0, 2, 0, 0])  # the backbone is right on samples 0 and 2
    assert table.losses("consistency").tolist() == [[False, False, True, True], [True, False, True, True]]
    # Only a wrong early answer where the backbone is right counts.
    assert table.losses("accuracy-gap", labels).tolist() == [[False, False, True, False], [True, False, True, False]]
    with pytest.raises(ValueError, match="labels"):
        table.losses("accuracy-gap")
    with pytest.raises(ValueError, match="unknown risk"):
        table.losses("drop")


def test_scaled_outputs_are_the_temperature_scaled_models_outputs() -> None:
    base = make_tiny_model(ensembles=None, cascade=False, head_scale=3.0)
    x = random_images(12, seed=1)
    temps = (0.5, 2.0, 1.3)
    model = EarlyExitModel(base.backbone, with_temperatures(base.heads, temps), None, base.attach_after).eval()
    with torch.no_grad():
        raw, scaled = base.all_exits(x), model.all_exits(x)
    got = scaled_outputs(raw, temps)
    torch.testing.assert_close(got.ic_log_probs, scaled.ic_log_probs)
    part = take_samples(got, torch.tensor([3, 0]))
    torch.testing.assert_close(part.final_log_probs, scaled.final_log_probs[[3, 0]])


# ------------------------------------------------------------------------------------------ risk control (LTT)
def _synthetic_exit(n: int, g: torch.Generator) -> ExitTable:
    """One exit whose confidence c is uniform on (0, 1) and whose answer is wrong with probability 1 − c: the risk
    of threshold λ is P(c > λ, wrong) = (1 − λ)² / 2."""
    c = torch.rand(n, generator=g).clamp_min(1e-6)
    wrong = torch.rand(n, generator=g) < 1 - c
    return ExitTable(c.log().unsqueeze(0), wrong.long().unsqueeze(0), torch.zeros(n, dtype=torch.long), (1,), (10,))


def test_shared_threshold_risk_control_holds_where_the_point_estimate_does_not() -> None:
    eps, delta, n, draws = 0.1, 0.1, 250, 300
    path = shared_threshold_path(1, np.linspace(0.99, 0.0, 100))

    def true_risk(config: ExitConfiguration) -> float:
        return (1 - config.thresholds[0]) ** 2 / 2 if config.subset else 0.0

    g = torch.Generator().manual_seed(0)
    controlled, naive = [], []
    for _ in range(draws):
        table = _synthetic_exit(n, g)
        result = control_risk(table, path, eps, delta)
        assert result.num_samples == n and result.bound == "Hoeffding-Bentkus"
        controlled.append(true_risk(result.chosen) > eps)
        # The point estimate: the lowest λ whose empirical risk is within ε.
        ok = [c for c, r in zip(result.path, result.risks) if r <= eps]
        naive.append(true_risk(ok[-1]) > eps)
    assert np.mean(controlled) <= delta
    assert np.mean(naive) >= 0.3  # the same data, without the bound, breaks ε about half of the time
    # The guarantee is not bought with doing nothing: the controlled λ still lets samples out.
    assert result.chosen.subset == (0,) and result.chosen.thresholds[0] < 0.8


def test_control_risk_certifies_a_leading_run_and_picks_the_cheapest_of_it() -> None:
    table = _hand_table()
    path = [ExitConfiguration(t, (t, t, t), (0, 1, 2)) for t in (0.95, 0.5, 0.3)]
    result = control_risk(table, path, 0.5, 0.2)
    # Thresholds 0.95 let nothing out (risk 0): p = 0.5**6 ≈ 0.016 is certified; at 0.5, samples 0-3 leave and
    # two of them disagree (risk 1/3): no evidence at n = 6.
    assert result.risks[0] == 0.0 and result.p_values[0] == pytest.approx(0.5**6)
    assert result.num_rejected == 1
    # The only certified configuration saves no FLOPs (all three heads run for nothing): the backbone alone.
    assert result.chosen_index == -1 and result.chosen.subset == () and result.empirical_risk == 0.0
    with pytest.raises(ValueError, match="epsilon"):
        control_risk(table, path, 0.0, 0.1)


def test_tolerance_path_runs_from_conservative_to_aggressive() -> None:
    table = _hand_table()
    base = tolerance_thresholds(table, 0.0)
    path = tolerance_path(table, (0.0, 0.1, 0.5, 1.0), floors=(0.95, 0.85, 0.6, 0.5))
    ramp = [c for c in path if c.floor > 0]
    # The on-ramp: T = 0's thresholds raised to each floor above the lowest of them, highest floor first.
    assert [c.floor for c in ramp] == sorted((c.floor for c in ramp), reverse=True) and ramp[0].floor == 0.95
    for c in ramp:
        assert c.parameter == 0.0 and c.thresholds == tuple(max(t, c.floor) for t in base)
    assert ramp[0].subset == ()  # at 0.95 nothing leaves: the backbone alone is the cheapest
    # Then SelfXit's thresholds at each T, from the lowest up.
    rest = path[len(ramp):]
    assert [c.parameter for c in rest] == sorted(c.parameter for c in rest)
    for c in path:
        assert c.subset == select_exit_subset(table, c.thresholds).subset
    for c in rest:
        assert c.thresholds == tolerance_thresholds(table, c.parameter) and c.floor == 0.0
    drops = [simulate_subset(table, c.thresholds, c.subset).estimated_accuracy_drop for c in path]
    assert drops[0] == 0.0 and drops == sorted(drops)


def test_risk_controlled_tolerance_needs_disjoint_parts_and_certifies_on_the_second() -> None:
    model = make_tiny_model(ensembles=None, cascade=False, head_scale=3.0)
    x = random_images(160, seed=2)
    with torch.no_grad():
        out = model.all_exits(x)
    costs = model.exit_costs(x)
    fit, cal = torch.arange(0, 80), torch.arange(80, 160)
    result = risk_controlled_tolerance(out, costs, fit, cal, 0.3, 0.1)
    assert result.temperatures == fit_temperatures(take_samples(out, fit))
    assert result.control.num_samples == 80 and result.fit_table.num_samples == 80
    assert result.control.path == tuple(tolerance_path(result.fit_table))
    if result.control.chosen_index >= 0:
        assert result.control.chosen_index < result.control.num_rejected
        assert result.control.upper_bound >= result.control.empirical_risk
    with pytest.raises(ValueError, match="disjoint"):
        risk_controlled_tolerance(out, costs, fit, torch.arange(70, 100), 0.3, 0.1)


@pytest.mark.parametrize("seed", range(4))
def test_threshold_for_budget_is_the_lowest_candidate_the_core_rule_keeps_within_budget(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 200
    # Repeated confidences (ties), some of them 1 (log 0), as float32 log-probabilities.
    lc = (torch.randint(1, 40, (n,), generator=g).float() / 40).log()
    lc[:5] = 0.0
    agrees = torch.rand(n, generator=g) < 0.8
    candidates = [0.0, *sorted({float(v) for v in lc.double().exp() if 0 < v < 1}), NEVER_HIT]
    for budget in (0.0, 0.01, 0.05, 0.1, 0.5):
        theta = threshold_for_budget(lc, agrees, budget)
        wrong = [int((PerExitThresholds((c,)).should_exit(0, lc.unsqueeze(-1)) & ~agrees).sum()) for c in candidates]
        assert theta == next(c for c, w in zip(candidates, wrong) if w <= budget * n), budget
