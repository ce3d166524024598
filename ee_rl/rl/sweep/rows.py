"""What a sweep measures: one :class:`SweepRow` per method and threshold, and the whole :class:`SweepResult`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ee_rl.core import FULL
from ee_rl.rl.sweep.settings import SweepSettings, rule_label


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One method and threshold of a sweep, measured on full games.

    Attributes:
        method, threshold, rule: the setting (threshold ``inf`` = the full policy).
        episodes: games played; returns: their raw scores in game-slot order (:data:`RETURNS_ORDER`; empty when read from CSV).
        return_mean, return_std, return_min, return_max: over those games (std: population, as SB3).
        inference_time: FLOPs of all counted decisions / (decisions × the expert's FLOPs per decision).
        agreement: fraction of decisions whose action equals the expert's argmax action on the same state.
        us_per_decision: measured wall-clock µs of ``policy.act`` per decision (batch of ``n_envs``).
        decisions: decisions counted (those of games that count towards ``episodes``).
        exit_rates: fraction of decisions answered at each exit ``1 .. M``, then the final (expert's) head.
    """

    method: str
    threshold: float
    rule: str
    episodes: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float
    inference_time: float
    agreement: float
    us_per_decision: float
    decisions: int
    exit_rates: tuple[float, ...]
    returns: tuple[float, ...] = ()

    @property
    def is_full(self) -> bool:
        """True for the full policy (the expert)."""
        return self.threshold == FULL

    def with_method(self, method: str) -> SweepRow:
        """The same measurements under another method's name (the full policy is shared by every method)."""
        return dataclasses.replace(self, method=method, rule=rule_label(method, self.threshold))

    @classmethod
    def from_dict(cls, d: dict[str, Any], keep_returns: bool = True) -> SweepRow:
        """The row :meth:`to_dict` wrote (``keep_returns=False`` drops the per-game returns)."""
        return cls(**{
            **d,
            "threshold": FULL if d["threshold"] is None else float(d["threshold"]),
            "exit_rates": tuple(d["exit_rates"]),
            "returns": tuple(d.get("returns", ())) if keep_returns else (),
        })

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the full policy's threshold is ``null`` (JSON has no infinity)."""
        d = dataclasses.asdict(self)
        d["threshold"] = None if self.is_full else self.threshold
        d["exit_rates"] = list(self.exit_rates)
        d["returns"] = list(self.returns)
        return d


def rows_by_method(rows: Iterable[SweepRow]) -> dict[str, list[SweepRow]]:
    """The rows grouped by method, methods and rows in their order in ``rows``."""
    groups: dict[str, list[SweepRow]] = {}
    for r in rows:
        groups.setdefault(r.method, []).append(r)
    return groups


#: How every row's per-game ``returns`` are ordered: by game slot (see :class:`ee_rl.rl.evaluate.EpisodeStats`), so
#: index i is the same game in every setting. Written into ``sweep.json`` so readers can tell older files apart.
RETURNS_ORDER = "slot"


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A whole sweep: every row, the expert's row, and what the costs are relative to.

    Attributes:
        game: ALE ROM id.
        settings: what was swept.
        rows: one per method and threshold (each method's full-policy row last).
        expert: the full policy's row (method ``expert``).
        backbone_flops: FLOPs of one plain expert decision.
        exit_costs: cost of answering at each exit ``1 .. M`` and at the final head, as fractions of the expert's
            (per method, as their heads differ).
        torch_threads: intra-op threads while playing.
        wall_time_s: how long the sweep took.
    """

    game: str
    settings: SweepSettings
    rows: tuple[SweepRow, ...]
    expert: SweepRow
    backbone_flops: int
    exit_costs: dict[str, tuple[float, ...]]
    torch_threads: int
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "game": self.game,
            "settings": dataclasses.asdict(self.settings),
            "backbone_flops": self.backbone_flops,
            "exit_costs": {m: list(c) for m, c in self.exit_costs.items()},
            "torch_threads": self.torch_threads,
            "wall_time_s": round(self.wall_time_s, 1),
            "expert": self.expert.to_dict(),
            "returns_order": RETURNS_ORDER,
            "rows": [r.to_dict() for r in self.rows],
        }
