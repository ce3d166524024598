"""Distribution-free risk control (Learn then Test, Angelopoulos et al. 2021): p-values for the null hypothesis
"this configuration's risk exceeds ε", its upper confidence bound, and fixed-sequence testing.

The risk of a configuration is the mean of a per-sample loss in [0, 1] (here: 1 if the early answer is wrong by
the chosen criterion, else 0). Given ``n`` exchangeable calibration samples with empirical risk ``R̂``:

* **Hoeffding** (Chernoff form of Hoeffding's inequality): ``p = exp(−n · h₁(min(R̂, ε), ε))`` with
  ``h₁(a, b) = a log(a/b) + (1 − a) log((1 − a)/(1 − b))``;
* **Bentkus**: ``p = e · P(Binomial(n, ε) ≤ ⌈n R̂⌉)``;
* **Hoeffding–Bentkus (HB)**: the smaller of the two (LTT's recommended bound; each alone is a valid p-value).

Each p-value is super-uniform under ``R > ε``, so rejecting when ``p ≤ δ`` errs with probability ≤ δ. Testing an
ordered family of configurations (conservative first) one after the other, and stopping at the first that is not
rejected (**fixed-sequence testing**), keeps the probability of rejecting *any* true null ≤ δ without a multiplicity
correction; so every rejected configuration has risk ≤ ε simultaneously with probability ≥ 1 − δ over the draw of
the calibration set, and one may pick any of them (e.g. the cheapest) afterwards. The order must not depend on the
calibration samples the p-values are computed from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import xlogy
from scipy.stats import beta, binom

#: The bound :func:`hb_p_value` implements (written into reports).
HB_BOUND = "Hoeffding-Bentkus"


def _check(n: int, level: float, name: str) -> None:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer (calibration samples), got {n!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {level!r}")


def _risks(risk_hat: float | np.ndarray) -> np.ndarray:
    r = np.asarray(risk_hat, dtype=np.float64)
    if np.any(~np.isfinite(r)) or np.any(r < 0) or np.any(r > 1):
        raise ValueError(f"empirical risks must be in [0, 1], got {risk_hat!r}")
    return r


def loss_count(risk_hat: float | np.ndarray, n: int) -> np.ndarray:
    """``⌈n R̂⌉`` as integers; a count of binary losses divided by ``n`` and multiplied back is not rounded up."""
    return np.ceil(np.round(_risks(risk_hat) * n, 9)).astype(np.int64)


def hoeffding_p_value(risk_hat: float | np.ndarray, n: int, epsilon: float) -> np.ndarray:
    """Hoeffding's p-value for ``R > epsilon`` from the empirical risk ``risk_hat`` of ``n`` samples."""
    _check(n, epsilon, "epsilon")
    a = np.minimum(_risks(risk_hat), epsilon)
    h1 = xlogy(a, a / epsilon) + xlogy(1.0 - a, (1.0 - a) / (1.0 - epsilon))
    return np.exp(-n * h1)


def bentkus_p_value(risk_hat: float | np.ndarray, n: int, epsilon: float) -> np.ndarray:
    """Bentkus's p-value for ``R > epsilon``: ``e · P(Binomial(n, epsilon) ≤ ⌈n R̂⌉)``, capped at 1."""
    _check(n, epsilon, "epsilon")
    return np.minimum(1.0, math.e * binom.cdf(loss_count(risk_hat, n), n, epsilon))


def hb_p_value(risk_hat: float | np.ndarray, n: int, epsilon: float) -> np.ndarray:
    """The Hoeffding–Bentkus p-value for ``R > epsilon`` (the smaller of :func:`hoeffding_p_value` and
    :func:`bentkus_p_value`); vectorised over ``risk_hat``."""
    return np.minimum(hoeffding_p_value(risk_hat, n, epsilon), bentkus_p_value(risk_hat, n, epsilon))


def hb_upper_bound(risk_hat: float, n: int, delta: float, *, tol: float = 1e-10) -> float:
    """The Hoeffding–Bentkus upper confidence bound: the least ``ε`` whose p-value is ≤ ``delta``, so that
    ``R ≤ bound`` with probability ≥ 1 − ``delta``. (The p-value falls as ``ε`` grows above ``R̂``: bisection.)"""
    _check(n, delta, "delta")
    r = float(_risks(risk_hat))
    lo, hi = r, 1.0  # p(lo) = 1 (or e·cdf ≥ ... > delta for sensible delta); p → 0 as epsilon → 1
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if mid <= 0.0 or float(hb_p_value(r, n, mid)) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def fixed_sequence_test(p_values: Sequence[float] | np.ndarray, delta: float) -> int:
    """How many of the ordered hypotheses fixed-sequence testing rejects: it rejects ``p[0], p[1], ...`` while
    ``p[k] ≤ delta`` and stops at the first that is not, so the answer is the length of that leading run."""
    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    p = np.asarray(p_values, dtype=np.float64)
    above = np.flatnonzero(~(p <= delta))  # NaN counts as not rejected
    return int(above[0]) if above.size else int(p.size)


def binomial_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) two-sided confidence interval of a binomial proportion."""
    _check(trials, level, "level")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")
    a = (1.0 - level) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(a, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1.0 - a, successes + 1, trials - successes))
    return lo, hi
