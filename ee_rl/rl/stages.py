"""The stages that make a game's early-exit results, defined once for both runners of them: a game's pipeline
(:mod:`ee_rl.rl.pipeline`, ``scripts/reproduce.py``: one game's CLIs in order on this machine) and a grid
(:mod:`ee_rl.rl.grid`, ``scripts/grid.py``: games × methods × seeds as tasks of an executor).

``expert`` (PPO on the game) → ``exits`` (behavioural cloning of each method's exits on the expert) → ``sweep``
(return vs compute over thresholds). Both runners name the stages, order them, read their settings from the same
config sections (``configs/ppo_atari.yaml``, ``configs/exits.yaml``, ``configs/sweep.yaml``: the default section
updated by the game's) and play at least :data:`MIN_SWEEP_EPISODES` games per sweep setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ee_rl.errors import UserError

EXPERT = "expert"
EXITS = "exits"
SWEEP = "sweep"
#: Every stage and the stages whose outputs it reads, in order.
NEEDS: dict[str, tuple[str, ...]] = {EXPERT: (), EXITS: (EXPERT,), SWEEP: (EXPERT, EXITS)}
STAGES = tuple(NEEDS)
#: Fewest full games per sweep setting: fewer cannot separate settings on high-variance games (issue 22).
MIN_SWEEP_EPISODES = 20
#: "Within 5 %": the fraction of the expert's return a setting may lose to count as good enough (the video's
#: threshold, the card's comparison, the grid's summary).
RETURN_TOLERANCE = 0.05
#: Where each stage's settings come from: (config file, default section).
CONFIG_SECTIONS = {EXPERT: ("ppo_atari.yaml", "atari"), EXITS: ("exits.yaml", "exits"), SWEEP: ("sweep.yaml", "sweep")}


def exits_stage(method: str) -> str:
    """The name of the stage that trains ``method``'s exits in a game's pipeline: ``exits-<method>``."""
    return f"{EXITS}-{method}"


def trained_method(method: str) -> str:
    """The method whose exits ``method`` plays: PBEE plays the SDN exits, every other method its own."""
    return "sdn" if method == "pbee" else method


def trained_methods(methods: Iterable[str]) -> list[str]:
    """The exits ``methods`` need trained, in order, each once."""
    return list(dict.fromkeys(trained_method(m) for m in methods))


def sweep_episodes(configured: int) -> int:
    """Games per sweep setting: the config's, but at least :data:`MIN_SWEEP_EPISODES`."""
    return max(MIN_SWEEP_EPISODES, int(configured))


def config_section(stage: str, game: str, config_dir: str | Path) -> dict[str, Any]:
    """The raw settings of ``stage`` for ``game`` (display name, e.g. ``Qbert``): the default section of its config
    in ``config_dir`` updated by the game's section."""
    from ee_rl.config import merged_section, read_yaml

    file, section = CONFIG_SECTIONS[stage]
    return merged_section(read_yaml(Path(config_dir) / file), section, game)


def parse_stages(text: str, valid: Sequence[str] = STAGES) -> list[str]:
    """``--stages a,b`` as names in stage order; an unknown or empty list is a :class:`UserError`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        what = f"unknown stage(s) {', '.join(unknown)}" if unknown else "no stage named"
        raise UserError(f"--stages: {what}; valid stages: {', '.join(valid)}")
    return [s for s in valid if s in names]


@dataclasses.dataclass(frozen=True)
class GameSettings:
    """What every stage of one game runs with."""

    expert: Any  # ee_rl.rl.expert.ExpertConfig
    exits: Any  # ee_rl.rl.distill.DistillConfig
    sweep: Any  # ee_rl.rl.sweep.SweepSettings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {stage: dataclasses.asdict(getattr(self, stage)) for stage in STAGES}


def game_settings(
    game: str,
    *,
    expert_config: str | Path | None = None,
    exits_config: str | Path | None = None,
    sweep_config: str | Path | None = None,
    sweep_preset: str | None = None,
) -> GameSettings:
    """The settings of ``game``'s stages: each YAML (default: the shipped ``configs/``) with the game's section, and
    at least :data:`MIN_SWEEP_EPISODES` games per sweep setting. Bad values are one-line :class:`UserError` s."""
    from ee_rl.rl.distill import load_distill_config
    from ee_rl.rl.expert import load_expert_config
    from ee_rl.rl.games import display_name, rom_id
    from ee_rl.rl.sweep import load_sweep_settings

    name = display_name(rom_id(game))
    sweep = load_sweep_settings(sweep_config, game, sweep_preset)
    sweep.episodes = sweep_episodes(sweep.episodes)
    return GameSettings(load_expert_config(expert_config, game), load_distill_config(exits_config, name), sweep)
