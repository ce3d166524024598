"""Multi-seed statistics: mean ± standard error per method and budget, paired differences to SDN on the same seeds,
and Hindsight Improvability per IC averaged over seeds.

Per seed the methods share one split and one frozen backbone, so the *paired* difference removes the seed-to-seed
spread of the backbone; its standard error is the SE of the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ee_rl.core.metrics import mean_se, paired_difference
from ee_rl.vision.evaluate import BUDGET_LABELS, SeedEvaluation

BUDGET_COLUMNS = ("method", "budget", "accuracy_mean", "accuracy_se", "n_seeds")
PAIRED_COLUMNS = ("method", "budget", "diff_mean", "diff_se", "n_seeds")
HINDSIGHT_COLUMNS = ("method", "ic", "hi")
HINDSIGHT_SEED_COLUMNS = ("method", "seed", "ic", "hi")


def budget_rows(seeds: Sequence[SeedEvaluation], methods: Sequence[str]) -> list[dict]:
    """``budget_table.csv`` rows: per method and budget, mean ± SE of the accuracy (percent) over the seeds that have
    a value (a budget no operating point fits is left out of that seed's mean; n_seeds says how many had one)."""
    rows = []
    for method in methods:
        for key, label in BUDGET_LABELS.items():
            values = [s.methods[method].table[key] for s in seeds if s.methods[method].table[key] is not None]
            mean, se = mean_se(values)
            rows.append({"method": method, "budget": label, "accuracy_mean": mean, "accuracy_se": se,
                         "n_seeds": len(values)})
    return rows


def paired_rows(seeds: Sequence[SeedEvaluation], methods: Sequence[str], reference: str = "sdn") -> list[dict]:
    """``paired_vs_sdn.csv`` rows: per method (≠ reference) and budget, mean ± SE of the per-seed difference
    ``method − reference`` in accuracy points, over the seeds where both have a value."""
    rows = []
    for method in methods:
        if method == reference:
            continue
        for key, label in BUDGET_LABELS.items():
            both = [s for s in seeds
                    if s.methods[method].table[key] is not None and s.methods[reference].table[key] is not None]
            mean, se = paired_difference([s.methods[method].table[key] for s in both],
                                         [s.methods[reference].table[key] for s in both])
            rows.append({"method": method, "budget": label, "diff_mean": mean, "diff_se": se, "n_seeds": len(both)})
    return rows


def hindsight_rows(seeds: Sequence[SeedEvaluation], methods: Sequence[str]) -> list[dict]:
    """``hindsight.csv`` rows: per method with its own exits and IC m (1-based), HI averaged over the seeds where it
    is defined (an IC without mistakes has no HI)."""
    rows = []
    for method in methods:
        per_seed = [s.methods[method].hindsight for s in seeds if s.methods[method].hindsight is not None]
        if not per_seed:
            continue
        for m in range(len(per_seed[0])):
            values = [h[m] for h in per_seed if h[m] is not None and not math.isnan(h[m])]
            mean, _ = mean_se(values)
            rows.append({"method": method, "ic": m + 1, "hi": mean})
    return rows


def hindsight_seed_rows(seeds: Sequence[SeedEvaluation], methods: Sequence[str]) -> list[dict]:
    """Per-seed HI rows (``method, seed, ic, hi``), for the error bars of the HI plot."""
    rows = []
    for s in seeds:
        for method in methods:
            hi = s.methods[method].hindsight
            if hi is None:
                continue
            for m, v in enumerate(hi):
                rows.append({"method": method, "seed": s.seed, "ic": m + 1,
                             "hi": None if v is None or math.isnan(v) else v})
    return rows
