"""What a grid is (:class:`GridSpec`: games × methods × seeds, the stages to run, each game's settings) and what is
left to do in its ``--out`` (:func:`plan_grid`: finished cells are skipped), checked before any work starts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ee_rl.errors import UserError
from ee_rl.rl.games import display_name
from ee_rl.rl.grid.layout import GridLayout
from ee_rl.rl.stages import EXITS, EXPERT, STAGES, SWEEP, GameSettings, trained_methods

#: Sweep settings that decide a cell's rows (threads and workers change only the µs).
_SWEEP_RESULT_SETTINGS = ("methods", "thresholds", "patience", "episodes", "n_envs", "sticky_prob", "seed",
                          "max_episode_frames")


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A grid: every game × method × seed, through the selected stages.

    Attributes:
        games: ALE ids (``pong``).
        methods: swept methods (``ztw``, ``sdn``, ``pbee``, ZTW ablations); exits are trained for each method they
            need (PBEE plays the SDN exits).
        seeds: exit-training seeds; one expert per game serves them all.
        settings: each game's stage settings (:func:`ee_rl.rl.stages.game_settings`); the sweep's methods are
            ``methods``.
        stages: the stages to run (outputs of the others must exist).
        expert_seed: seed of the experts the grid trains.
        expert_eval_episodes: full games of a trained expert's final evaluation.
        threads: torch threads of each exit-training run and sweep setting.
        expert_threads: torch threads of each expert training run.
        ale_threads: emulator threads of every task.
    """

    games: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: dict[str, GameSettings]
    stages: tuple[str, ...] = STAGES
    expert_seed: int = 0
    expert_eval_episodes: int = 10
    threads: int = 1
    expert_threads: int = 1
    ale_threads: int = 1

    def trained(self) -> list[str]:
        """The methods whose exits are trained."""
        return trained_methods(self.methods)

    def sweep_settings(self, game: str) -> Any:
        """``game``'s sweep as the grid plays it: the grid's methods and threads."""
        return dataclasses.replace(self.settings[game].sweep, methods=list(self.methods), torch_threads=self.threads,
                                   ale_threads=self.ale_threads)

    def recorded(self, game: str) -> dict[str, Any]:
        """What decides ``game``'s cells (``grid.json``): a rerun into the same ``--out`` must use the same."""
        settings = self.settings[game]
        sweep = self.sweep_settings(game)
        return json.loads(json.dumps({
            "expert": {**dataclasses.asdict(settings.expert), "seed": self.expert_seed,
                       "eval_episodes": self.expert_eval_episodes},
            "exits": dataclasses.asdict(settings.exits),
            "sweep": {k: getattr(sweep, k) for k in _SWEEP_RESULT_SETTINGS},
        }))


def check_recorded_settings(spec: GridSpec, layout: GridLayout) -> dict[str, Any]:
    """``grid.json`` with ``spec``'s games added; a game recorded with other settings is a :class:`UserError`."""
    path = layout.settings_file
    recorded: dict[str, Any] = {"games": {}}
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
            recorded["games"]  # noqa: B018 - the shape check
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path} is not a grid's settings file; use another --out") from None
    for game in spec.games:
        mine, theirs = spec.recorded(game), recorded["games"].get(game)
        if theirs is not None and theirs != mine:
            stage, key = next((s, k) for s in mine for k in mine[s] if theirs.get(s, {}).get(k) != mine[s][k])
            raise UserError(f"{layout.out} holds a grid of {display_name(game)} with other settings ({stage}.{key}: "
                            f"{theirs.get(stage, {}).get(key)!r} there, {mine[stage][key]!r} now); use another --out")
        recorded["games"][game] = mine
    return recorded


@dataclasses.dataclass
class GridPlan:
    """What is left to do: the tasks a run submits (everything else is read from ``--out``)."""

    experts: dict[str, Path | None]  # each game's expert file (shipped or trained before); None: trained now
    exits: list[tuple[str, str, int]]  # (game, trained method, seed) to train
    sweeps: list[tuple[str, int]]  # (game, seed) sweeps to play or finish

    def empty(self) -> bool:
        """Nothing to do."""
        return all(self.experts.values()) and not self.exits and not self.sweeps


def plan_grid(spec: GridSpec, layout: GridLayout) -> GridPlan:
    """Decide what runs, reading ``--out`` only; a stage that needs an output no selected stage makes is a one-line
    :class:`UserError` naming the stage to add."""
    stages = set(spec.stages)
    sweeps = [(g, s) for g in spec.games for s in spec.seeds
              if SWEEP in stages and not layout.sweep_json(g, s).is_file()]
    exits = []
    for game in spec.games:
        for method in spec.trained():
            for seed in spec.seeds:
                if _exits_done(layout, game, method, seed):
                    continue
                if EXITS in stages:
                    exits.append((game, method, seed))
                elif (game, seed) in sweeps:
                    raise UserError(f"stage {SWEEP} of {display_name(game)} seed {seed} needs {layout.heads(game, method, seed)}, "
                                    f"which does not exist: add the {EXITS} stage to --stages")
    experts: dict[str, Path | None] = {}
    for game in spec.games:
        experts[game] = layout.expert(game)
        needed = EXPERT in stages or any(g == game for g, _, _ in exits) or any(g == game for g, _ in sweeps)
        if experts[game] is None and needed and EXPERT not in stages:
            raise UserError(f"{display_name(game)} has no expert ({layout.shipped_expert(game)} is not shipped and the grid has "
                            f"not trained one): add the {EXPERT} stage to --stages")
        if not needed:
            experts.pop(game)
    return GridPlan(experts, exits, sweeps)


def _exits_done(layout: GridLayout, game: str, method: str, seed: int) -> bool:
    return layout.heads(game, method, seed).is_file() and layout.exits_summary(game, method, seed).is_file()


def read_trained(data_path: Path, summary_path: Path | None = None) -> Any:
    """A finished cell's file (and its summary) as the :class:`~ee_rl.rl.grid.tasks.Trained` its task handed back."""
    from ee_rl.rl.grid.tasks import Trained

    summary = json.loads(summary_path.read_text()) if summary_path is not None and summary_path.is_file() else {}
    return Trained(data_path.read_bytes(), summary)


def parse_seeds(values: Sequence[int]) -> tuple[int, ...]:
    """Seeds as given, each once; none is a :class:`UserError`."""
    seeds = tuple(dict.fromkeys(values))
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    return seeds
