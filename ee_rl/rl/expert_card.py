"""The agent folder's README body (the "card") written by :func:`ee_rl.rl.publish.publish_expert`.

The text lives in the package data file ``ee_rl/rl/templates/expert_card.md`` (a :class:`string.Template`:
``${name}`` placeholders); this module computes the values that fill it. Later publishing steps add their own
sections around it (:mod:`ee_rl.rl.agent_card`).
"""

from __future__ import annotations

import functools
import string
from importlib import resources
from typing import Any

from ee_rl.rl.learning_curve import CURVE_CSV, CURVE_PNG, ROLLING_WINDOW

EXPERT_FILE = "expert.zip"
EVAL_FILE = "expert_eval.json"
README_FILE = "README.md"
TEMPLATE = "expert_card.md"


@functools.cache
def card_template(name: str = TEMPLATE) -> string.Template:
    """The template ``ee_rl/rl/templates/<name>``, read from the installed package (wheel or source tree)."""
    return string.Template((resources.files("ee_rl.rl") / "templates" / name).read_text(encoding="utf-8"))


def training_commands_text(train_cmd: str, resumes: list[dict[str, Any]]) -> str:
    """The card's bullet on how the run was made: one command, or the start and each resume that moved the target."""
    restart_note = (
        "the environments restart on resume, so a run stopped at other points\n  does not give bit-identical weights"
    )
    if not resumes:
        return (f"- Command: `{train_cmd}`; after a stop, the same command with `--resume` continues from\n"
                f"  `checkpoints/latest.zip` ({restart_note}).")
    resumed = ";\n".join(
        f"  at {entry['from_step']:,} env steps `{entry['command']}` (the linear schedules go on from where they were "
        f"and now reach 0 at {entry['total_timesteps']:,} steps)"
        for entry in resumes
    )
    return (f"- Commands: `{train_cmd}`, then\n{resumed}.\n"
            f"  After a stop, the last command continues from `checkpoints/latest.zip` ({restart_note}).")


def _fmt_hours(seconds: float) -> str:
    return f"{seconds:,.0f} s = {seconds / 3600:.2f} h"


def expert_identity(evaluation: dict[str, Any]) -> str:
    """How the card names the shipped expert: its weights' hash (what exits are checked against), then the file's."""
    file_part = f"file sha256 `{evaluation['expert_sha256']}`, {evaluation['expert_bytes']:,} bytes"
    weights = evaluation.get("expert_weights_sha256")
    return f"weights sha256 `{weights}`; {file_part}" if weights else f"{file_part}"


def agent_readme(
    *,
    game: str,
    evaluation: dict[str, Any],
    training: dict[str, Any],
    hyper_parameters: dict[str, Any],
    hyper_parameters_source: str,
    train_cmd: str,
    publish_cmd: str,
    recheck_cmd: str,
    out: str,
    curve: bool,
) -> str:
    """The agent folder's README: what the expert is, how it was trained and evaluated, how to load it."""
    e = evaluation
    wall = training["wall_time_s"]
    wall_text = (
        f"{_fmt_hours(wall)} ({training['wall_time_source']})" if wall is not None else "not recorded"
    )
    rate = (
        f" — {training['timesteps'] / wall:,.0f} env steps/s on average" if wall else ""
    )
    curve_text = (
        f"`{CURVE_CSV}` / `{CURVE_PNG}`: the {training['games']:,} training games logged up to the checkpoint "
        f"(whole games' raw scores vs env steps, from `{training['episode_log']}`; PPO itself learned from "
        f"life-loss terminals and sign-clipped rewards), with the mean of the last {ROLLING_WINDOW} games.\n\n"
        f"![learning curve]({CURVE_PNG})\n"
        if curve
        else "No learning curve was published with this evaluation (`--no-curve`).\n"
    )
    return card_template().substitute(
        game=game,
        expert_file=EXPERT_FILE,
        eval_file=EVAL_FILE,
        expert_path=f"{out.rstrip('/')}/{EXPERT_FILE}",
        episodes=e["episodes"],
        return_mean=f"{e['return_mean']:.2f}",
        return_std=f"{e['return_std']:.2f}",
        return_min=f"{e['return_min']:g}",
        return_max=f"{e['return_max']:g}",
        length_mean=f"{e['length_mean']:.0f}",
        sticky_prob=f"{e['sticky_prob']:g}",
        returns=", ".join(f"{r:g}" for r in e["returns"]),
        env_seeds=", ".join(str(s) for s in e["env_seeds"]),
        seed=e["seed"],
        checkpoint=e["checkpoint"],
        timesteps=f"{e['timesteps']:,}",
        checkpoint_sha256=e["checkpoint_sha256"],
        expert_identity=expert_identity(e),
        date=e["date"],
        versions=", ".join(f"{k} {v}" for k, v in e["versions"].items()),
        eval_wall_time_s=f"{e['eval_wall_time_s']:g}",
        recheck_cmd=recheck_cmd,
        publish_cmd=publish_cmd,
        training_commands=training_commands_text(train_cmd, training.get("resume_commands") or []),
        train_timesteps=f"{training['timesteps']:,}",
        rate=rate,
        wall_time=wall_text,
        machine=training["machine"],
        # the training env's setting (printed as saved), falling back on the evaluation's
        train_sticky_prob=hyper_parameters.get("sticky_prob", e["sticky_prob"]),
        hyper_parameters_source=hyper_parameters_source,
        hyper_parameter_rows="\n".join(f"| `{k}` | `{v}` |" for k, v in hyper_parameters.items()),
        curve=curve_text,
    )
