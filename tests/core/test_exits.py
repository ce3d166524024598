"""Exit rules on hand-made cases, and the pure assign_exits function."""

from __future__ import annotations

import math

import pytest
import torch

from ee_rl.core import EntropyExit, MaxProbExit, PatienceExit, PerExitThresholds, assign_exits


def _log(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def test_max_prob_exit() -> None:
    lp = _log([[0.7, 0.2, 0.1], [0.4, 0.3, 0.3], [1 / 3, 1 / 3, 1 / 3]])
    assert MaxProbExit(0.5).should_exit(0, lp).tolist() == [True, False, False]
    assert MaxProbExit(0.35).should_exit(2, lp).tolist() == [True, True, False]
    assert MaxProbExit(0.0).should_exit(0, lp).all() and MaxProbExit(-1).should_exit(0, lp).all()
    assert not MaxProbExit(1.0).should_exit(0, _log([[1.0, 0.0]])).any()  # strict: q > tau
    assert MaxProbExit(1.01).never_exits_early and not MaxProbExit(1.0).never_exits_early


def test_per_exit_thresholds() -> None:
    lp = _log([[0.7, 0.3], [0.55, 0.45]])
    rule = PerExitThresholds([0.6, 0.5, 2.0])
    assert rule.should_exit(0, lp).tolist() == [True, False]
    assert rule.should_exit(1, lp).tolist() == [True, True]
    assert rule.should_exit(2, lp).tolist() == [False, False]
    assert not rule.never_exits_early and PerExitThresholds([1.5, 3]).never_exits_early
    rule.check_num_ics(3)
    with pytest.raises(ValueError, match="3 thresholds but the model has 2 ICs"):
        rule.check_num_ics(2)


def test_entropy_exit() -> None:
    lp = _log([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    # entropies: ln 4 = 1.386, 0, ln 2 = 0.693
    assert EntropyExit(0.1).should_exit(0, lp).tolist() == [False, True, False]
    assert EntropyExit(0.7).should_exit(0, lp).tolist() == [False, True, True]
    assert EntropyExit(1.4).should_exit(0, lp).tolist() == [True, True, True]
    assert EntropyExit(math.log(2)).should_exit(0, lp).tolist() == [False, True, False]  # strict: H < threshold
    assert EntropyExit(0.0).never_exits_early and not EntropyExit(0.01).never_exits_early


def _one_hot_log_probs(argmaxes: list[list[int]], k: int = 3) -> torch.Tensor:
    """(M, B, K) log-probs whose argmax at exit m for sample b is argmaxes[b][m]."""
    a = torch.tensor(argmaxes).T  # (M, B)
    return torch.log_softmax(5.0 * torch.nn.functional.one_hot(a, k).double(), dim=-1)


def test_patience_exit_hand_made() -> None:
    exits = _one_hot_log_probs([[1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 0, 1], [2, 2, 0, 0]])
    # patience 2: exit at m when argmax_m == argmax_{m-1} == argmax_{m-2}
    assert assign_exits(exits, PatienceExit(2)).tolist() == [2, 3, 4, 4]
    assert assign_exits(exits, PatienceExit(1)).tolist() == [1, 2, 4, 1]
    assert assign_exits(exits, PatienceExit(0)).tolist() == [0, 0, 0, 0]
    assert assign_exits(exits, PatienceExit(4)).tolist() == [4, 4, 4, 4]
    history = exits[:2].argmax(dim=-1).T  # argmax of exits 0 and 1, (B, 2)
    assert PatienceExit(2).should_exit(2, exits[2], history).tolist() == [True, False, False, False]
    assert not PatienceExit(2).should_exit(1, exits[1], history[:, :1]).any()


def test_assign_exits_takes_the_first_exit_that_fires() -> None:
    exits = torch.stack([_log([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]]), _log([[0.5, 0.5], [0.8, 0.2], [0.6, 0.4]])])
    assert assign_exits(exits, MaxProbExit(0.7)).tolist() == [0, 1, 2]
    assert assign_exits(list(exits), MaxProbExit(0.55)).tolist() == [0, 0, 1]
    assert assign_exits(exits, MaxProbExit(1.5)).tolist() == [2, 2, 2]
    assert assign_exits(exits, PerExitThresholds([2.0, 0.7])).tolist() == [2, 1, 2]


@pytest.mark.parametrize(
    "build",
    [
        lambda: MaxProbExit(float("nan")),
        lambda: MaxProbExit("0.9"),
        lambda: MaxProbExit(True),
        lambda: PerExitThresholds([]),
        lambda: PerExitThresholds(0.9),
        lambda: PerExitThresholds([0.5, None]),
        lambda: EntropyExit(float("nan")),
        lambda: PatienceExit(-1),
        lambda: PatienceExit(1.5),
        lambda: assign_exits(torch.zeros(2, 3), MaxProbExit(0.5)),
        lambda: assign_exits([], MaxProbExit(0.5)),
    ],
)
def test_bad_input_raises_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_numpy_and_row_decisions_equal_torch_decisions_including_ties():
    """should_exit_numpy and should_exit_row (what numpy runtimes call) decide every row as should_exit does, ties
    at the threshold included (all compare float32 log-probs with the threshold rounded to float32)."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(3 * torch.randn((400, 6), generator=g), dim=-1)
    tau, tau_up = 0.6, 0.7  # float32 rounds log(0.6) down and log(0.7) up: a float64 comparison fails one of them
    ties = []
    for t in (tau, tau_up):
        tied = torch.log_softmax(torch.tensor([[0.0, -10.0, -10.0, -10.0, -10.0, -10.0]]), dim=-1)
        # rows whose max log-prob is log(t) rounded to float32: the tie every path must break alike
        tied[0, 0] = torch.tensor(math.log(t), dtype=torch.float64).float()
        ties.append(tied.expand(3, 6))
    log_probs = torch.cat((log_probs, *ties))
    history = torch.randint(0, 6, (log_probs.shape[0], 2), generator=g)
    history[:50] = log_probs[:50].argmax(-1, keepdim=True)  # some rows agree with the current argmax
    rules = [MaxProbExit(tau), MaxProbExit(tau_up), MaxProbExit(0.0), MaxProbExit(2.0),
             PerExitThresholds((0.3, 0.6, 0.95)), PerExitThresholds((0.7, 0.7, 0.6)),
             PatienceExit(0), PatienceExit(1), PatienceExit(2), EntropyExit(0.8)]
    for rule in rules:
        for m in range(3):
            h = history[:, :m] if rule.needs_history else None
            expected = rule.should_exit(m, log_probs, h).numpy()
            got = rule.should_exit_numpy(m, log_probs.numpy(), None if h is None else h.numpy())
            assert got.dtype == np.bool_ and np.array_equal(got, expected), (rule, m)
            # one row at a time as Python numbers (what a compiled runtime's batch-1 path calls)
            rows = log_probs.numpy().tolist()
            histories = history[:, :m].tolist()
            by_row = [rule.should_exit_row(m, row, past) for row, past in zip(rows, histories)]
            assert all(type(d) is bool for d in by_row) and by_row == expected.tolist(), (rule, m)
