"""Hindsight improvability, the budget table and score-vs-cost curves from one all-exits pass."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from ee_rl.core import (
    MaxProbExit,
    OperatingPoint,
    budget_table,
    evaluate_rule,
    hindsight_improvability,
    score_cost_curve,
)
from ee_rl.core.metrics import mean_se, paired_difference, se_from_population_std
from tests.core.builders import make_tiny_model, random_images


def test_mean_and_standard_error_match_the_statistics_module() -> None:
    values = [1.0, 2.5, 4.0, 4.5]
    mean, se = mean_se(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert se == pytest.approx(statistics.stdev(values) / math.sqrt(4))
    assert mean_se([3.0]) == (3.0, None) and mean_se([]) == (None, None)


def test_se_from_a_population_std_equals_the_se_of_the_values() -> None:
    values = [250.0, 4000.0, 3175.0, 8100.0, 6025.0]
    population_std = statistics.pstdev(values)  # what SB3 and our sweep rows report
    assert se_from_population_std(population_std, len(values)) == pytest.approx(mean_se(values)[1])
    assert se_from_population_std(3.0, 1) is None


def test_paired_difference_removes_the_spread_both_series_share() -> None:
    # Per-game difficulty dominates both series; the per-game differences are 1, 2, 3, 2.
    a = [101.0, 12.0, 53.0, 7.0]
    b = [100.0, 10.0, 50.0, 5.0]
    mean, se = paired_difference(a, b)
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(statistics.stdev([1, 2, 3, 2]) / 2)
    assert se < mean_se(a)[1] / 10  # far below an unpaired SE
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0], [1.0, 2.0])


def test_hindsight_improvability_hand_made() -> None:
    targets = torch.tensor([0, 1, 2, 3, 4])
    predictions = torch.tensor(
        [
            [0, 1, 9, 9, 9],  # IC 0: right on samples 0, 1
            [9, 9, 2, 9, 9],  # IC 1: wrong on 0, 1, 3, 4 -> 0 and 1 were right before: 2/4
            [0, 9, 9, 9, 4],  # IC 2: wrong on 1, 2, 3 -> 1 and 2 were right before: 2/3
            [0, 1, 2, 3, 4],  # IC 3: no mistakes -> undefined (NaN)
        ]
    )
    hi = hindsight_improvability(predictions, targets)
    assert hi[:3].tolist() == [0.0, 0.5, pytest.approx(2 / 3)]
    assert math.isnan(hi[3].item())


def _point(threshold: float, cost: float, score: float) -> OperatingPoint:
    return OperatingPoint(threshold, cost, score, ())


def test_budget_table_hand_made() -> None:
    points = [_point(0.2, 0.30, 0.60), _point(0.5, 0.45, 0.85), _point(0.8, 0.70, 0.80), _point(1.1, 1.0, 0.82)]
    assert budget_table(points) == {"25%": None, "50%": 0.85, "75%": 0.80, "100%": 0.82, "Max": 0.85}
    # the cell takes the highest feasible threshold, not the best score within the budget
    assert budget_table(points, budgets=(0.75,)) == {"75%": 0.80, "Max": 0.85}
    with pytest.raises(ValueError):
        budget_table([])
    with pytest.raises(ValueError):
        budget_table(points, budgets=(0.0,))


def test_curve_from_one_pass_matches_running_inference() -> None:
    model = make_tiny_model()
    x = random_images(32, seed=2)
    labels = torch.arange(32) % 5
    costs = model.exit_costs(x)
    with torch.no_grad():
        outputs = model.all_exits(x)
    thresholds = [0.0, 0.5, 0.7, 0.9, 0.99, 1.5]
    curve = score_cost_curve(outputs, costs, thresholds, targets=labels)
    for point, tau in zip(curve, thresholds):
        run = model.infer(x, MaxProbExit(tau))
        assert point.threshold == tau
        assert point.score == pytest.approx((run.log_probs.argmax(-1) == labels).double().mean().item())
        assert point.cost == pytest.approx(run.flops.double().mean().item() / costs.backbone)
        counts = torch.bincount(run.exit_index, minlength=4).double() / 32
        assert point.exit_fractions == pytest.approx(counts.tolist())
    assert curve[-1].cost == 1.0 and curve[0].exit_fractions[0] == 1.0
    assert len({p.cost for p in curve}) >= 4  # the grid really moves along the curve


def test_label_free_score_is_agreement_with_the_backbone() -> None:
    model = make_tiny_model()
    x = random_images(16, seed=3)
    with torch.no_grad():
        outputs = model.all_exits(x)
    costs = model.exit_costs(x)
    backbone_argmax = outputs.final_log_probs.argmax(-1)
    assert evaluate_rule(outputs, costs, MaxProbExit(2.0)).score == 1.0
    point = evaluate_rule(outputs, costs, MaxProbExit(0.0))
    expected = (outputs.exit_log_probs[0].argmax(-1) == backbone_argmax).double().mean().item()
    assert point.score == pytest.approx(expected)


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError):
        hindsight_improvability(torch.zeros(3, 4, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    model = make_tiny_model()
    x = random_images(4)
    with torch.no_grad():
        outputs = model.all_exits(x)
    with pytest.raises(ValueError):
        score_cost_curve(outputs, model.exit_costs(x), [])
    with pytest.raises(ValueError):
        evaluate_rule(outputs, model.exit_costs(x), MaxProbExit(0.5), targets=torch.zeros(3, dtype=torch.long))
