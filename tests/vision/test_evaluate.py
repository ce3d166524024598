"""Evaluation from all-exits outputs against hand-computed answers; JSON round trips; multi-seed statistics."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from ee_rl.core import AllExits, ExitCosts, OperatingPoint, budget_table
from ee_rl.vision.evaluate import (
    MethodResult,
    SeedEvaluation,
    backbone_accuracy,
    confidence_thresholds,
    evaluate_method,
    points_from_json,
    points_to_json,
    seed_from_json,
    seed_to_json,
)
from ee_rl.vision.stats import budget_rows, hindsight_rows, paired_rows

# Two ICs, four samples, two classes. Answering at IC 0 costs 15/30 = 0.5, at IC 1 30/30 = 1.0, at the final head
# (after both ICs) 40/30; the plain backbone costs exactly 30/30.
COSTS = ExitCosts(preprocess=0, stages=(10, 10, 10), head=0, ics=(5, 5), ensembles=(0, 0), attach_after=(0, 1))
TARGETS = torch.tensor([0, 1, 1, 1])


def probs_to_log(rows):
    return torch.tensor(rows, dtype=torch.float64).log().float()


def outputs(ensemble=None) -> AllExits:
    ic = torch.stack([
        probs_to_log([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]]),  # predicts 0 0 1 1: wrong on sample 1
        probs_to_log([[0.95, 0.05], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4]]),  # predicts 0 1 1 0: wrong on sample 3
    ])
    final = probs_to_log([[0.99, 0.01], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # all right
    return AllExits(ic_logits=ic, ic_log_probs=ic, ensemble_log_probs=ensemble, final_logits=final,
                    final_log_probs=final)


def test_max_probability_method_budget_table_and_hindsight():
    result = evaluate_method("sdn", outputs(), COSTS, TARGETS)
    assert result.table["25%"] is None  # IC 0 already costs 50 %
    # τ < 0.55: every sample leaves at IC 0 (cost 0.5, 3/4 right); any higher τ sends sample 3 on (cost > 0.5)
    assert result.table["50%"] == pytest.approx(75.0)
    assert result.table["Max"] == pytest.approx(100.0)  # τ = 1: everyone reaches the final head
    assert result.hindsight[0] == 0.0 and result.hindsight[1] == pytest.approx(1.0)  # IC 0 was right on sample 3
    assert result.exit_accuracy == pytest.approx([75.0, 75.0])
    assert result.relative_costs == pytest.approx([0.5, 1.0, 40 / 30])
    for p in result.points:
        assert 0.0 <= p.threshold <= 1.0 and p.cost >= 0.5


def test_pbee_uses_patience_so_its_earliest_exit_is_ic_2():
    result = evaluate_method("pbee", outputs(), COSTS, TARGETS)
    assert [p.threshold for p in result.points] == [1.0, 2.0]
    # patience 1: samples 0 and 2 agree (leave at IC 1, cost 1.0), samples 1 and 3 go to the final head (40/30)
    assert result.points[0].cost == pytest.approx((1 + 40 / 30 + 1 + 40 / 30) / 4)
    assert result.points[0].score == 1.0 and result.points[1].cost == pytest.approx(40 / 30)
    assert all(result.table[k] is None for k in ("25%", "50%", "75%", "100%"))
    assert result.table["Max"] == pytest.approx(100.0) and result.hindsight is None


def test_backbone_accuracy_is_the_no_early_exit_point_at_exactly_full_cost():
    assert backbone_accuracy(outputs(), COSTS, TARGETS) == 100.0


def test_hindsight_of_a_model_with_ensembles_reads_the_ensembles():
    ensemble = torch.stack([
        probs_to_log([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]]),
        probs_to_log([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6]]),  # the ensemble fixes sample 3
    ])
    result = evaluate_method("ztw", outputs(ensemble), COSTS, TARGETS)
    assert result.exit_accuracy == pytest.approx([75.0, 100.0])
    assert result.hindsight[0] == 0.0 and math.isnan(result.hindsight[1])  # no mistakes left: HI undefined


def test_confidence_thresholds_cover_zero_to_one():
    taus = confidence_thresholds(outputs().ic_log_probs)
    assert taus[0] == 0.0 and taus[-1] == 1.0 and taus == sorted(set(taus))
    assert all(0.0 <= t <= 1.0 for t in taus) and 0.55 in [round(t, 6) for t in taus]


def test_json_round_trip_keeps_every_budget_answer():
    g = torch.Generator().manual_seed(0)
    points = []
    for i in range(200):
        cost = 0.2 + float(torch.rand(1, generator=g)) if i % 3 else (points[-1].cost if points else 0.3)
        score = round(float(torch.rand(1, generator=g)), 2) if i % 3 else (points[-1].score if points else 0.5)
        points.append(OperatingPoint(i / 200, cost, score, ()))
    back = points_from_json(points_to_json(points))
    assert len(back) < len(points)  # consecutive duplicates dropped
    budgets = [0.25, 0.4, 0.5, 0.75, 1.0, 1.2]
    want, got = budget_table(points, budgets), budget_table(back, budgets)
    assert want.keys() == got.keys()
    for key in want:
        assert (want[key] is None and got[key] is None) or want[key] == pytest.approx(got[key], abs=1e-6)
    seed = SeedEvaluation(3, 91.5, {"sdn": MethodResult("sdn", points[:5], {"25%": None, "Max": 50.0},
                                                         [0.0, float("nan")], [1.0], [0.5])})
    again = seed_from_json(seed_to_json(seed))
    assert again.seed == 3 and again.methods["sdn"].table == {"25%": None, "Max": 50.0}
    assert math.isnan(again.methods["sdn"].hindsight[1])


def make_seed(seed: int, tables: dict[str, list[float | None]], hi: dict[str, list[float]] | None = None):
    keys = ("25%", "50%", "75%", "100%", "Max")
    result = SeedEvaluation(seed, 90.0)
    for method, values in tables.items():
        h = (hi or {}).get(method)
        result.methods[method] = MethodResult(method, [], dict(zip(keys, values)), h, [], [])
    return result


def test_budget_and_paired_rows_skip_missing_cells_and_pair_by_seed():
    seeds = [
        make_seed(0, {"sdn": [50, 60, 70, 80, 81], "pbee": [None, 55, 66, 79, 82], "ztw": [52, 63, 71, 80, 82]}),
        make_seed(1, {"sdn": [40, 70, 72, 78, 80], "pbee": [None, None, 70, 78, 80], "ztw": [41, 71, 74, 79, 80]}),
    ]
    rows = {(r["method"], r["budget"]): r for r in budget_rows(seeds, ["sdn", "pbee", "ztw"])}
    assert rows[("sdn", "0.25")]["accuracy_mean"] == 45 and rows[("sdn", "0.25")]["n_seeds"] == 2
    assert rows[("pbee", "0.25")]["accuracy_mean"] is None and rows[("pbee", "0.25")]["n_seeds"] == 0
    assert rows[("pbee", "0.5")]["accuracy_mean"] == 55 and rows[("pbee", "0.5")]["accuracy_se"] is None
    paired = {(r["method"], r["budget"]): r for r in paired_rows(seeds, ["sdn", "pbee", "ztw"])}
    assert ("sdn", "0.25") not in paired
    assert paired[("ztw", "0.25")]["diff_mean"] == pytest.approx(1.5)  # (2 + 1) / 2
    assert paired[("ztw", "0.25")]["diff_se"] == pytest.approx(statistics.stdev([2, 1]) / math.sqrt(2))
    assert paired[("ztw", "0.5")]["diff_mean"] == pytest.approx(2.0)  # (3 + 1) / 2
    assert paired[("pbee", "0.5")]["diff_mean"] == pytest.approx(-5.0) and paired[("pbee", "0.5")]["n_seeds"] == 1
    assert paired[("ztw", "max")]["diff_mean"] == pytest.approx(0.5)


def test_hindsight_rows_average_over_seeds_where_defined():
    seeds = [
        make_seed(0, {"sdn": [1] * 5, "ztw": [1] * 5}, {"sdn": [0.0, 0.4, 0.6], "ztw": [0.0, 0.2, float("nan")]}),
        make_seed(1, {"sdn": [1] * 5, "ztw": [1] * 5}, {"sdn": [0.0, 0.2, 0.5], "ztw": [0.0, 0.1, 0.3]}),
    ]
    rows = {(r["method"], r["ic"]): r["hi"] for r in hindsight_rows(seeds, ["sdn", "ztw"])}
    assert rows[("sdn", 2)] == pytest.approx(0.3) and rows[("sdn", 3)] == pytest.approx(0.55)
    assert rows[("ztw", 3)] == pytest.approx(0.3)  # only seed 1 defines it
