"""ServedModel: streamed answer blocks equal offline inference; the serving rule (threshold or SelfXit tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ee_rl.core import MaxProbExit, PerExitThresholds
from ee_rl.core.calibrate import ExitTable, tolerance_thresholds
from ee_rl.errors import UserError
from ee_rl.serve import InputSpec, ServedModel, answer_fields, serving_rule
from tests.core.builders import INPUT_SHAPE, make_tiny_model
from tests.serve.conftest import tiny_inputs


def test_answer_blocks_partition_the_batch_in_exit_order_and_equal_offline(tiny_served, tiny_expected) -> None:
    x = tiny_served.model_input(tiny_inputs())
    blocks = list(tiny_served.answer_chunks(x))
    assert [b.exit_index for b in blocks] == [0, 3]
    assert sorted(np.concatenate([b.items for b in blocks]).tolist()) == list(range(len(x)))
    for b in blocks:
        assert np.array_equal(b.labels, tiny_expected["labels"][b.items])
        assert np.array_equal(tiny_expected["exit_index"][b.items], np.full(len(b.items), b.exit_index))
        np.testing.assert_allclose(b.probs, tiny_expected["probs"][b.items], atol=1e-6)
        np.testing.assert_allclose(b.probs.sum(axis=1), 1.0, atol=1e-5)
        assert b.flops_fraction == pytest.approx(tiny_expected["flops_fraction"][b.items[0]])
    costs = tiny_served.model.exit_costs(x)
    assert blocks[0].flops_fraction == costs.cumulative[0] / costs.backbone


def test_answer_fields_and_describe(tiny_served) -> None:
    block = next(tiny_served.answer_chunks(tiny_served.model_input(tiny_inputs())))
    fields = answer_fields(block, 0, "class")
    assert set(fields) == {"class", "probs", "exit", "flops_fraction"} and len(fields["probs"]) == 5
    info = tiny_served.describe()
    assert info["num_exits"] == 4 and info["input"] == {"shape": list(INPUT_SHAPE), "dtype": "float32"}
    assert info["exit_flops_fraction"][-1] > 1.0  # the final head paid for every IC too


def test_a_rule_that_does_not_fit_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match="3 ICs"):
        ServedModel("x", make_tiny_model(), InputSpec(INPUT_SHAPE, "float32"), PerExitThresholds([0.5, 0.5]))


def test_serving_rule_threshold_and_tolerance() -> None:
    model = make_tiny_model()
    assert serving_rule(model, threshold=0.8) == MaxProbExit(0.8)
    calibration = torch.from_numpy(tiny_inputs(64, seed=1))
    rule = serving_rule(model, tolerance=0.05, calibration=calibration)
    with torch.no_grad():
        table = ExitTable.from_outputs(model.all_exits(calibration), model.exit_costs(calibration))
    assert rule == PerExitThresholds(tolerance_thresholds(table, 0.05))
    loose = serving_rule(model, tolerance=0.5, calibration=calibration)
    assert all(a >= b for a, b in zip(rule.taus, loose.taus))  # more tolerance, lower (or equal) thresholds


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"threshold": 0.5, "tolerance": 0.1}, {"threshold": -0.1}, {"tolerance": 1.5}, {"tolerance": 0.1}],
)
def test_serving_rule_rejects_bad_requests(kwargs) -> None:
    with pytest.raises(UserError):
        serving_rule(make_tiny_model(), **kwargs)
