"""Learn-then-Test p-values and bounds against exact binomial tails (computed here with integer arithmetic), and
fixed-sequence testing."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ee_rl.core.risk_control import (
    bentkus_p_value,
    binomial_interval,
    fixed_sequence_test,
    hb_p_value,
    hb_upper_bound,
    hoeffding_p_value,
    loss_count,
)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed exactly in rationals (p as the float's exact value)."""
    q = Fraction(p)
    return float(sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k + 1)))


def binom_pmf(k: int, n: int, p: float) -> float:
    q = Fraction(p)
    return float(math.comb(n, k) * q**k * (1 - q) ** (n - k))


CASES = [(50, 0, 0.05), (50, 1, 0.05), (100, 3, 0.1), (200, 7, 0.02), (400, 30, 0.1), (80, 10, 0.3)]


@pytest.mark.parametrize(("n", "k", "eps"), CASES)
def test_bentkus_is_e_times_the_exact_binomial_tail(n: int, k: int, eps: float) -> None:
    assert float(bentkus_p_value(k / n, n, eps)) == pytest.approx(min(1.0, math.e * binom_cdf(k, n, eps)), rel=1e-9)


@pytest.mark.parametrize(("n", "k", "eps"), CASES)
def test_hoeffding_and_hb_never_go_below_the_exact_tail(n: int, k: int, eps: float) -> None:
    # The exact binomial test's p-value P(Bin(n, eps) <= k) is the smallest valid one for this statistic.
    exact = binom_cdf(k, n, eps)
    assert float(hoeffding_p_value(k / n, n, eps)) >= exact
    assert float(hb_p_value(k / n, n, eps)) >= exact


def test_hoeffding_with_no_loss_is_the_exact_probability_of_no_loss() -> None:
    for n, eps in [(10, 0.2), (300, 0.01), (1000, 0.005)]:
        assert float(hoeffding_p_value(0.0, n, eps)) == pytest.approx(binom_cdf(0, n, eps), rel=1e-12)
    # Above epsilon there is no evidence against R > eps.
    assert float(hoeffding_p_value(0.3, 100, 0.1)) == 1.0
    assert float(hb_p_value(0.3, 100, 0.1)) == 1.0


@pytest.mark.parametrize(("n", "eps"), [(60, 0.05), (250, 0.1), (500, 0.02)])
def test_hb_p_value_is_valid_at_the_boundary_of_the_null(n: int, eps: float) -> None:
    # With R exactly eps, the empirical count is Binomial(n, eps): P(p <= delta) must be <= delta.
    p = hb_p_value(np.arange(n + 1) / n, n, eps)
    pmf = np.array([binom_pmf(k, n, eps) for k in range(n + 1)])
    for delta in (0.01, 0.05, 0.1, 0.2):
        assert float(pmf[p <= delta].sum()) <= delta
    # and it does reject sometimes (a p-value that is always 1 would pass the line above)
    assert float(pmf[p <= 0.2].sum()) > 0.0


@pytest.mark.parametrize(("n", "k", "delta"), [(100, 0, 0.1), (100, 5, 0.1), (400, 20, 0.05), (50, 25, 0.1)])
def test_hb_upper_bound_is_where_the_p_value_reaches_delta_and_above_the_exact_bound(
    n: int, k: int, delta: float
) -> None:
    ucb = hb_upper_bound(k / n, n, delta)
    assert float(hb_p_value(k / n, n, ucb)) <= delta < float(hb_p_value(k / n, n, ucb - 1e-6))
    # The exact one-sided (Clopper-Pearson) bound u solves P(Bin(n, u) <= k) = delta; HB's bound is looser.
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binom_cdf(k, n, mid) > delta else (lo, mid)
    assert ucb >= hi - 1e-9


def test_loss_count_does_not_round_an_exact_count_up() -> None:
    assert loss_count(np.array([3 / 7, 0.0, 1.0]), 7).tolist() == [3, 0, 7]
    assert loss_count(0.5001, 10).tolist() == 6


def test_fixed_sequence_test_stops_at_the_first_hypothesis_it_cannot_reject() -> None:
    assert fixed_sequence_test([0.01, 0.05, 0.3, 0.001], 0.1) == 2
    assert fixed_sequence_test([0.2, 0.001], 0.1) == 0
    assert fixed_sequence_test([0.1, 0.1], 0.1) == 2
    assert fixed_sequence_test([], 0.1) == 0
    assert fixed_sequence_test([0.01, float("nan"), 0.01], 0.1) == 1
    with pytest.raises(ValueError):
        fixed_sequence_test([0.1], 1.0)


@pytest.mark.parametrize(("k", "n"), [(0, 200), (3, 200), (20, 200), (200, 200)])
def test_binomial_interval_is_the_exact_clopper_pearson_interval(k: int, n: int) -> None:
    lo, hi = binomial_interval(k, n, level=0.95)
    assert lo <= k / n <= hi
    if k > 0:  # P(Bin(n, lo) >= k) = 2.5 %
        assert 1.0 - binom_cdf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-6)
    else:
        assert lo == 0.0
    if k < n:  # P(Bin(n, hi) <= k) = 2.5 %
        assert binom_cdf(k, n, hi) == pytest.approx(0.025, rel=1e-6)
    else:
        assert hi == 1.0
