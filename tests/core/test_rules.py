"""Method name → exit rule (ee_rl.core.rules): every method's rule, with exact exits on hand-made probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from ee_rl.core import (
    FULL,
    FULL_RULE,
    RULE_METHODS,
    MaxProbExit,
    PatienceExit,
    assign_exits,
    is_patience_method,
    rule_for_method,
)
from ee_rl.errors import UserError


def _log(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


#: Three internal exits, four samples, two classes: the argmax of sample 0 is the same at every exit; sample 1 is
#: confident only at exit 2 and changes its mind at exit 1; sample 2 is never confident; sample 3 is confident at
#: exit 1 and agrees from exit 0 on.
EXITS = torch.stack(
    [
        _log([[0.6, 0.4], [0.55, 0.45], [0.5, 0.5], [0.65, 0.35]]),
        _log([[0.7, 0.3], [0.4, 0.6], [0.52, 0.48], [0.95, 0.05]]),
        _log([[0.9, 0.1], [0.2, 0.8], [0.51, 0.49], [0.9, 0.1]]),
    ]
)


@pytest.mark.parametrize("method", ["ztw", "sdn", "ztw-additive", "ztw-cascade-only-no-stop-gradient"])
def test_confidence_methods_exit_when_the_max_probability_exceeds_the_threshold(method: str) -> None:
    rule = rule_for_method(method, 0.75)
    assert rule == MaxProbExit(0.75) and isinstance(rule.tau, float)
    assert assign_exits(EXITS, rule).tolist() == [2, 2, 3, 1]
    assert assign_exits(EXITS, rule_for_method(method, 0.6)).tolist() == [1, 2, 3, 0]
    assert assign_exits(EXITS, rule_for_method(method, 0)).tolist() == [0, 0, 0, 0]
    assert assign_exits(EXITS, rule_for_method(method, 1.0)).tolist() == [3, 3, 3, 3]  # strict: q > tau
    assert not is_patience_method(method)


def test_pbee_reads_the_threshold_as_patience() -> None:
    assert rule_for_method("pbee", 2.0) == PatienceExit(2) and rule_for_method("pbee", 1) == PatienceExit(1)
    assert assign_exits(EXITS, rule_for_method("pbee", 0)).tolist() == [0, 0, 0, 0]
    assert assign_exits(EXITS, rule_for_method("pbee", 1)).tolist() == [1, 2, 1, 1]
    assert assign_exits(EXITS, rule_for_method("pbee", 2.0)).tolist() == [2, 3, 2, 2]
    assert assign_exits(EXITS, rule_for_method("pbee", 3)).tolist() == [3, 3, 3, 3]
    assert is_patience_method("pbee")


@pytest.mark.parametrize("method", [*RULE_METHODS, "ztw-additive", "anything"])
def test_the_full_policy_is_the_same_no_early_exit_rule_for_every_method(method: str) -> None:
    rule = rule_for_method(method, FULL)
    assert rule is FULL_RULE and rule.never_exits_early and math.isinf(FULL)
    assert assign_exits(EXITS, rule).tolist() == [3, 3, 3, 3]


@pytest.mark.parametrize("threshold", [1.5, -1, -2.0])
def test_pbee_rejects_a_patience_that_is_not_a_non_negative_integer(threshold: float) -> None:
    with pytest.raises(UserError, match=r"pbee thresholds are patience values \(non-negative integers\)"):
        rule_for_method("pbee", threshold)


@pytest.mark.parametrize("method", ["foo", "ZTW", "sdn-additive", "", "pbee-2"])
def test_an_unknown_method_is_a_clear_user_error(method: str) -> None:
    with pytest.raises(UserError, match=rf"unknown method {method!r}; accepted: ztw, sdn, pbee$"):
        rule_for_method(method, 0.5)
