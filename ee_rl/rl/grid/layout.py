"""Where a grid keeps its files under ``--out`` (default ``runs/grid``, not committed).

::

    <out>/grid.json                        the settings of every game's cells (a rerun must use the same ones)
    <out>/summary.csv, summary.md, summary.json   the table across seeds
    <out>/<Game>/expert.zip                the expert trained by the grid (none when one is shipped)
    <out>/<Game>/expert_eval.json          its evaluation
    <out>/<Game>/expert-training/          the expert's training run (its checkpoint location)
    <out>/<Game>/sweep-expert.json         the full policy's sweep row, shared by every seed of the game
    <out>/<Game>/s<seed>/exits-<m>.pt      method m's exits (a heads folder: ``sweep.py --heads-dir`` reads it)
    <out>/<Game>/s<seed>/exits-<m>.json    their training summary
    <out>/<Game>/s<seed>/training-<m>/     their training run (its checkpoint location)
    <out>/<Game>/s<seed>/sweep.csv|json|png   the seed's sweep of every method (sweep.rows.jsonl while it runs)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ee_rl.rl.games import display_name


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """The paths of a grid's files (see the module docstring); games are ALE ids or names."""

    out: Path
    #: Where shipped agents are: an expert at ``<agents>/<Game>/expert.zip`` is used instead of training one.
    agents: Path = Path("agents")

    @property
    def settings_file(self) -> Path:
        """``grid.json``."""
        return self.out / "grid.json"

    def summary(self, suffix: str) -> Path:
        """``summary.<suffix>`` (csv, md, json)."""
        return self.out / f"summary.{suffix}"

    def game_dir(self, game: str) -> Path:
        """``<out>/<Game>``."""
        return self.out / display_name(game)

    def shipped_expert(self, game: str) -> Path:
        """``<agents>/<Game>/expert.zip``."""
        return self.agents / display_name(game) / "expert.zip"

    def trained_expert(self, game: str) -> Path:
        """The expert the grid trains for a game without a shipped one."""
        return self.game_dir(game) / "expert.zip"

    def expert(self, game: str) -> Path | None:
        """The game's expert: the shipped one, else the grid's, else None (not trained yet)."""
        return next((p for p in (self.shipped_expert(game), self.trained_expert(game)) if p.is_file()), None)

    def expert_eval(self, game: str) -> Path:
        """The grid-trained expert's evaluation."""
        return self.game_dir(game) / "expert_eval.json"

    def expert_run(self, game: str) -> Path:
        """The expert's training run (checkpoint location)."""
        return self.game_dir(game) / "expert-training"

    def expert_row(self, game: str) -> Path:
        """The full policy's sweep row."""
        return self.game_dir(game) / "sweep-expert.json"

    def seed_dir(self, game: str, seed: int) -> Path:
        """``<out>/<Game>/s<seed>``: the seed's exits and sweep."""
        return self.game_dir(game) / f"s{seed}"

    def heads(self, game: str, method: str, seed: int) -> Path:
        """A trained method's exits."""
        return self.seed_dir(game, seed) / f"exits-{method}.pt"

    def exits_summary(self, game: str, method: str, seed: int) -> Path:
        """Their training summary."""
        return self.seed_dir(game, seed) / f"exits-{method}.json"

    def exits_run(self, game: str, method: str, seed: int) -> Path:
        """Their training run (checkpoint location)."""
        return self.seed_dir(game, seed) / f"training-{method}"

    def sweep_json(self, game: str, seed: int) -> Path:
        """The seed's finished sweep."""
        return self.seed_dir(game, seed) / "sweep.json"
