"""Method name → exit rule: the one place that knows which :class:`~ee_rl.core.exits.ExitRule` each early-exit
method is read with.

ZTW and SDN (and ZTW's ablations, named ``ztw-<ablation>``) leave at an IC when it is confident enough
(:class:`~ee_rl.core.exits.MaxProbExit`, threshold τ); PBEE reads the SDN heads with the patience rule
(:class:`~ee_rl.core.exits.PatienceExit`, threshold = patience). A threshold of ``inf`` is every method's *full
policy*: no head runs and the backbone answers everything, at exactly its own cost.
"""

from __future__ import annotations

import math

from ee_rl.core.exits import ExitRule, MaxProbExit, PatienceExit
from ee_rl.errors import UserError

#: The threshold of the full policy (no early exit, no head runs): the plain backbone, the same for every method.
FULL = math.inf
#: The rule of the full policy.
FULL_RULE = MaxProbExit(FULL)
#: Methods thresholded by confidence (``max_i q_i > tau``).
CONFIDENCE_METHODS = ("ztw", "sdn")
#: Methods thresholded by patience (PBEE: the SDN heads with the patience rule).
PATIENCE_METHODS = ("pbee",)
#: Every method name :func:`rule_for_method` accepts (besides ZTW ablations ``ztw-<ablation>``).
RULE_METHODS = (*CONFIDENCE_METHODS, *PATIENCE_METHODS)
#: Prefix of ZTW's ablation variants (vision): they change how the heads are built, not how they are read.
ZTW_ABLATION_PREFIX = "ztw-"


def is_patience_method(method: str) -> bool:
    """True if ``method``'s thresholds are patience values (PBEE), False for a confidence method."""
    return method in PATIENCE_METHODS


def rule_for_method(method: str, threshold: float) -> ExitRule:
    """The exit rule of ``method`` at ``threshold``: ``inf`` = the full policy; PBEE = patience; else max-probability.

    Args:
        method: ``ztw``, ``sdn``, ``pbee`` or a ZTW ablation name (``ztw-additive``, ...).
        threshold: the confidence τ (any τ > 1 never exits early) or, for ``pbee``, the patience (a non-negative
            integer, given as an int or an integral float); ``inf`` for every method is :data:`FULL_RULE`.

    Raises:
        UserError: for an unknown method or a patience that is not a non-negative integer.
    """
    if threshold == FULL:
        return FULL_RULE
    if is_patience_method(method):
        if float(threshold) != int(threshold) or threshold < 0:
            raise UserError(f"{method} thresholds are patience values (non-negative integers), got {threshold!r}")
        return PatienceExit(int(threshold))
    if method not in CONFIDENCE_METHODS and not method.startswith(ZTW_ABLATION_PREFIX):
        raise UserError(f"unknown method {method!r}; accepted: {', '.join(RULE_METHODS)}")
    return MaxProbExit(float(threshold))
