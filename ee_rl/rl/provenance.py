"""Where a published expert came from: library versions, the machine, the checkpoint's exact bytes, and the command
lines that trained and published it (reconstructed from the checkpoint's saved run metadata)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import shlex
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO

import ee_rl
from ee_rl.errors import UserError
from ee_rl.rl.checkpoint import load_model
from ee_rl.rl.expert import ExpertConfig


def library_versions() -> dict[str, str]:
    """Versions of the packages that define how the expert acts and is evaluated."""
    import ale_py
    import gymnasium
    import stable_baselines3
    import torch

    return {
        "ee_rl": ee_rl.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "ale_py": ale_py.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """One line describing this machine: CPU, cores, memory, OS, torch build, GPU, training threads."""
    import torch

    cores = os.cpu_count() or 1
    parts = [_cpu_model(), f"{cores} logical CPUs"]
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        parts.append(f"{memory / 2**30:.0f} GiB RAM")
    except (ValueError, OSError, AttributeError):
        pass
    parts.append(f"{platform.system()} {platform.release()} {platform.machine()}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    parts.append(f"torch {torch.__version__}, {gpu}")
    # train_policy.py calls fast_ppo.tune_cpu(), which gives torch one intra-op thread per logical CPU.
    parts.append(f"training with {cores} torch threads (one per logical CPU)")
    return ", ".join(parts)


def train_command(game: str, run_dir: str, run_meta: dict[str, Any], file_config: ExpertConfig) -> str:
    """The ``train_policy.py`` command that starts a run with the saved run's settings.

    Flags are added only where the run differs from ``file_config`` (the YAML config's values for the game).
    """
    parts = ["python", "scripts/train_policy.py", "--env", game, "--out", run_dir]
    if int(run_meta.get("seed", 0)) != 0:
        parts += ["--seed", str(run_meta["seed"])]
    run_config = run_meta.get("config") or dataclasses.asdict(file_config)
    history = run_meta.get("schedule_history")
    if history:  # the target the run started with; later targets come from resume_commands
        run_config = {**run_config, "total_timesteps": history[0]["total_timesteps"]}
    elif "total_timesteps" in run_meta:
        run_config = {**run_config, "total_timesteps": run_meta["total_timesteps"]}
    if run_config.get("total_timesteps", file_config.total_timesteps) != file_config.total_timesteps:
        parts += ["--total-timesteps", str(run_config["total_timesteps"])]
    if run_config.get("n_envs", file_config.n_envs) != file_config.n_envs:
        parts += ["--n-envs", str(run_config["n_envs"])]
    command = shlex.join(parts)
    others = {k for k, v in run_config.items() if k not in ("total_timesteps", "n_envs")}
    if any(run_config[k] != getattr(file_config, k, None) for k in others):
        command += " --config <a YAML file holding the hyper-parameters below>"
    return command


def resume_commands(game: str, run_dir: str, run_meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The resumes that changed the run's target, as ``{"from_step", "total_timesteps", "command"}``.

    Read from the schedule history that ``train_policy.py`` saves in the checkpoint; empty when the run kept the
    target it started with (or predates that history).
    """
    base = ["python", "scripts/train_policy.py", "--env", game, "--out", run_dir, "--resume"]
    return [
        {**entry, "command": shlex.join([*base, "--total-timesteps", str(entry["total_timesteps"])])}
        for entry in (run_meta.get("schedule_history") or [])[1:]
    ]


def publish_command(
    game: str, checkpoint: str, out: str, run_dir: str | None, episodes: int, seed: int,
    config: str | None, min_return: float | None,
) -> str:
    """The ``publish_expert.py`` command line for these settings (to reproduce the evaluation)."""
    parts = ["python", "scripts/publish_expert.py", "--env", game, "--checkpoint", checkpoint]
    parts += ["--run-dir", run_dir] if run_dir is not None else ["--no-curve"]
    parts += ["--out", out, "--episodes", str(episodes), "--seed", str(seed)]
    if config is not None:
        parts += ["--config", config]
    if min_return is not None:
        parts += ["--min-return", f"{min_return:g}"]
    return shlex.join(parts)


def load_checkpoint_snapshot(checkpoint: str | Path, game: str, device: str = "cpu") -> tuple[PPO, str]:
    """Load ``checkpoint`` (game checked) and return it with the sha256 of exactly the bytes loaded.

    The file is read once and loaded from a private copy: a training run that atomically replaces it meanwhile
    (every ``checkpoint_every`` steps) cannot make the recorded hash describe other weights.
    """
    path = Path(checkpoint)
    if not path.is_file():
        return load_model(path, device=device, game=game), ""  # raises load_model's own "not found" error
    data = path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="ee_rl_publish_") as tmp:
        copy = Path(tmp) / path.name
        copy.write_bytes(data)
        try:
            model = load_model(copy, device=device, game=game)
        except UserError as exc:  # name the user's file, not the private copy
            raise UserError(str(exc).replace(str(copy), str(path))) from None
    return model, hashlib.sha256(data).hexdigest()


def run_dir_of(model: PPO, checkpoint: str | Path) -> str:
    """The training run's directory, from the TensorBoard folder saved in the model or the checkpoint's place."""
    tb = getattr(model, "tensorboard_log", None)
    if tb and Path(tb).name == "tb":
        return str(Path(tb).parent)
    path = Path(checkpoint)
    if path.parent.name == "checkpoints":
        return str(path.parent.parent)
    return "<run directory>"
