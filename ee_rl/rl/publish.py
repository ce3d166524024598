"""Publish a trained PPO expert into an agent folder (``agents/<Game>/``), ready to use and to reproduce.

The folder gets ``expert.zip`` (acting-only SB3 zip: weights without Adam's state, loads with plain
``PPO.load``), ``expert_eval.json`` (full games, sticky actions, argmax actions, fixed seeds),
``learning_curve.csv`` / ``.png`` (training games' raw scores vs env steps, from the run's ``episodes.csv``)
and a ``README.md`` saying how the expert was trained and evaluated. Every number comes from the checkpoint,
the run's files or the evaluation done here; nothing is written unless all of them could be computed.

This module is the orchestration; the learning curve is :mod:`ee_rl.rl.learning_curve`, provenance and command
lines :mod:`ee_rl.rl.provenance`, and the README's text :mod:`ee_rl.rl.expert_card`.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO

from ee_rl.devices import resolve_device
from ee_rl.errors import UserError
from ee_rl.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_dir_writable,
    ensure_writable_dir,
)
from ee_rl.rl.agent_card import carry_sections
from ee_rl.rl.checkpoint import meta, saved_as_plain_sb3, weights_sha256
from ee_rl.rl.expert import DEFAULT_CONFIG, evaluate_model, load_expert_config
from ee_rl.rl.expert_card import EVAL_FILE, EXPERT_FILE, README_FILE, agent_readme
from ee_rl.rl.games import display_name, rom_id
from ee_rl.rl.learning_curve import CURVE_CSV, CURVE_PNG, learning_curve_csv, learning_curve_png, read_episode_log
from ee_rl.rl.provenance import (
    library_versions,
    load_checkpoint_snapshot,
    machine_description,
    publish_command,
    resume_commands,
    run_dir_of,
    train_command,
)

#: No file shipped in ``agents/`` may be larger (issue 3).
MAX_AGENT_FILE_BYTES = 20_000_000
#: Zip entry timestamp of ``expert.zip``: fixed so that the same weights always give the same bytes (and sha256).
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


class ReturnBelowMinimum(UserError):
    """The evaluation's mean return is below the required minimum; nothing was written."""

    def __init__(self, message: str, evaluation: dict[str, Any]) -> None:
        super().__init__(message)
        self.evaluation = evaluation


def expert_bytes(model: PPO) -> bytes:
    """``model`` as an SB3 zip that can act but not resume training, as small and reproducible as possible.

    SB3's ``PPO.load`` insists on a ``policy.optimizer.pth`` entry (``set_parameters(exact_match=True)``), so the
    optimizer is kept but with an empty state (Adam's moments are twice the weights' size and only matter for
    further training; a model loaded from this file restarts Adam from zero if trained on). The last rollout's
    observations are dropped too (SB3 resets the env when they are missing). The zip names SB3's own policy and
    buffer classes (:func:`~ee_rl.rl.checkpoint.saved_as_plain_sb3`), so plain ``PPO.load`` reads it without ee_rl.
    Entries are deflated with a fixed timestamp and the policy is saved from the CPU (torch records each tensor's
    device); SB3 still pickles the memory addresses of the schedules, so the bytes vary between processes: the
    expert's identity is its weights' hash (:func:`~ee_rl.rl.checkpoint.weights_sha256`). ``model`` is left
    unchanged.
    """
    optimizer = model.policy.optimizer
    kept = (optimizer.state, model._last_obs, model._last_episode_starts)
    device = model.policy.device
    try:
        model.policy.to("cpu")
        optimizer.state = collections.defaultdict(dict)
        model._last_obs = None
        model._last_episode_starts = None
        raw = io.BytesIO()
        with saved_as_plain_sb3(model):
            model.save(raw)
    finally:
        optimizer.state, model._last_obs, model._last_episode_starts = kept
        model.policy.to(device)
    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as src, zipfile.ZipFile(packed, "w") as dst:
        for item in src.infolist():
            entry = zipfile.ZipInfo(item.filename, date_time=_ZIP_DATE_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, src.read(item.filename), compresslevel=6)
    return packed.getvalue()


def publish_expert(
    env: str,
    checkpoint: str | Path,
    out: str | Path,
    *,
    run_dir: str | Path | None = None,
    episodes: int = 10,
    seed: int = 0,
    min_return: float | None = None,
    machine: str | None = None,
    config: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate a PPO checkpoint and publish it into ``out`` as an agent folder; returns ``expert_eval.json``'s dict.

    ``run_dir`` is the training run's directory (its ``episodes.csv`` draws the learning curve and gives the
    training wall time); ``None`` publishes without a learning curve. The evaluation plays ``episodes`` full games
    with the config's sticky-action probability and argmax actions, on env seeds ``seed, seed + 1, ...``
    (:func:`ee_rl.rl.expert.evaluate_model`). With ``min_return``, a mean below it raises
    :class:`ReturnBelowMinimum` and nothing is written. Inputs are checked before the (slow) evaluation.
    """
    game = rom_id(env)
    name = display_name(game)
    if episodes < 1:
        raise UserError(f"episodes must be a positive integer (full games to evaluate), got {episodes}")
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    if min_return is not None and not np.isfinite(min_return):
        raise UserError(f"min return must be a finite number, got {min_return}")
    device = str(resolve_device(device))
    check_dir_writable(out)
    file_config = load_expert_config(config, game)
    model, checkpoint_sha256 = load_checkpoint_snapshot(checkpoint, game, device)
    run_meta = meta(model)
    log = read_episode_log(Path(run_dir) / "episodes.csv", model.num_timesteps) if run_dir is not None else None
    evaluation = evaluate_model(model, game, episodes, seed, file_config.sticky_prob)
    result: dict[str, Any] = {
        "game": game,
        "episodes": evaluation["episodes"],
        "return_mean": evaluation["return_mean"],
        "return_std": evaluation["return_std"],
        "return_min": evaluation["return_min"],
        "return_max": evaluation["return_max"],
        "returns": evaluation["returns"],
        "length_mean": evaluation["length_mean"],
        "sticky_prob": evaluation["sticky_prob"],
        "deterministic": evaluation["deterministic"],
        "seed": seed,
        "env_seeds": evaluation["env_seeds"],
        "eval_wall_time_s": evaluation["eval_wall_time_s"],
        "timesteps": int(model.num_timesteps),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "versions": library_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if min_return is not None and result["return_mean"] < min_return:
        raise ReturnBelowMinimum(
            f"mean return {result['return_mean']:.2f} over {result['episodes']} games "
            f"(min {result['return_min']:g}, max {result['return_max']:g}) is below --min-return {min_return:g}; "
            f"nothing written to {out}",
            result,
        )
    expert = expert_bytes(model)
    if len(expert) > MAX_AGENT_FILE_BYTES:
        raise UserError(f"the expert is {len(expert):,} bytes, over the {MAX_AGENT_FILE_BYTES:,}-byte limit for agents/")
    result["expert_sha256"] = hashlib.sha256(expert).hexdigest()
    result["expert_bytes"] = len(expert)
    result["expert_weights_sha256"] = weights_sha256(model)  # what exits trained on this expert are checked against

    if log is not None:
        wall, wall_source = float(log.wall_time_s[-1]), f"training clock at the last game logged in {log.path}"
    elif "wall_time_s" in run_meta:
        wall, wall_source = float(run_meta["wall_time_s"]), "training clock saved in the checkpoint"
    else:
        wall, wall_source = None, "not recorded"
    training = {
        "timesteps": int(model.num_timesteps),
        "wall_time_s": wall,
        "wall_time_source": wall_source,
        "games": len(log) if log is not None else None,
        "episode_log": str(log.path) if log is not None else None,
        "machine": machine or machine_description(),
    }
    if run_meta.get("config"):
        hyper_parameters = {**run_meta["config"], "total_timesteps": run_meta.get("total_timesteps")}
        hp_source = "saved in the checkpoint by train_policy.py"
    else:
        hyper_parameters = dataclasses.asdict(file_config)
        hp_source = f"from {config or DEFAULT_CONFIG}: the checkpoint does not record its own"
    run_dir_text = str(run_dir) if run_dir is not None else run_dir_of(model, checkpoint)
    training["train_command"] = train_command(name, run_dir_text, run_meta, file_config)
    resumes = resume_commands(name, run_dir_text, run_meta)
    if resumes:
        training["resume_commands"] = resumes
    result["training"] = training
    out_text = str(out)
    readme = agent_readme(
        game=name,
        evaluation=result,
        training=training,
        hyper_parameters=hyper_parameters,
        hyper_parameters_source=hp_source,
        train_cmd=training["train_command"],
        publish_cmd=publish_command(
            name, str(checkpoint), out_text, None if run_dir is None else str(run_dir), episodes, seed,
            None if config is None else str(config), None,
        ),
        recheck_cmd=publish_command(
            name, f"{out_text.rstrip('/')}/{EXPERT_FILE}", f"/tmp/{name.lower()}_expert_check", None, episodes, seed,
            None if config is None else str(config), None,
        ),
        out=out_text,
        curve=log is not None,
    )
    curve_files = (
        {CURVE_CSV: learning_curve_csv(log).encode(), CURVE_PNG: learning_curve_png(log, name, result)}
        if log is not None
        else {}
    )

    # Everything is computed: now write, each file atomically (a crash leaves old or new files, never half ones).
    out_dir = ensure_writable_dir(out)
    atomic_write_bytes(out_dir / EXPERT_FILE, expert)
    atomic_write_json(out_dir / EVAL_FILE, result)
    for file_name, data in curve_files.items():
        atomic_write_bytes(out_dir / file_name, data)
    old_readme = out_dir / README_FILE
    if old_readme.is_file():  # keep what later steps (exits, sweeps) added to the card
        readme = carry_sections(old_readme.read_text(), readme)
    atomic_write_text(out_dir / README_FILE, readme)
    return result
