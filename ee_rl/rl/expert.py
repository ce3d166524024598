"""Train, checkpoint, resume and evaluate the PPO expert (SB3 PPO, NatureCNN) on an Atari game."""

from __future__ import annotations

import csv
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import LinearSchedule

from ee_rl.config import CONFIG_DIR, build_dataclass, merged_section, read_yaml, require_positive_ints
from ee_rl.devices import resolve_device
from ee_rl.errors import UserError
from ee_rl.io import RunDirLock, atomic_write_json, atomic_write_text, ensure_writable_dir
from ee_rl.rl.checkpoint import META_ATTR, load_model, meta, save_model_atomic
from ee_rl.rl.envs import MAX_EPISODE_FRAMES, make_atari_env
from ee_rl.rl.evaluate import run_episodes
from ee_rl.rl.fast_ppo import ChannelsLastCnnPolicy, Uint8RolloutBuffer, tune_cpu
from ee_rl.rl.games import display_name, rom_id

DEFAULT_CONFIG = CONFIG_DIR / "ppo_atari.yaml"
#: Evaluation games use seeds far from the training seeds.
EVAL_SEED_OFFSET = 10_000


@dataclasses.dataclass
class ExpertConfig:
    """PPO hyper-parameters (ZTW appendix A.2) and run settings. ``lin_X`` = linear decay from X to 0."""

    total_timesteps: int = 10_000_000
    n_envs: int = 8
    learning_rate: float | str = "lin_2.5e-4"
    n_steps: int = 128
    batch_size: int = 256
    n_epochs: int = 4
    clip_range: float | str = "lin_0.1"
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    max_grad_norm: float = 0.5
    sticky_prob: float = 0.1
    checkpoint_every: int = 50_000
    fast: bool = True

    def validate(self, source: str = "config") -> ExpertConfig:
        """Check every value before any env or model is built (SB3 would fail later with a bare assertion)."""
        require_positive_ints(self, ("total_timesteps", "n_envs", "n_steps", "batch_size", "n_epochs",
                                     "checkpoint_every"))
        for name, low, high, closed_low in (("gamma", 0.0, 1.0, False), ("gae_lambda", 0.0, 1.0, True),
                                            ("sticky_prob", 0.0, 1.0, True)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value <= high and (
                value >= low if closed_low else value > low)
            if not ok:
                bracket = "[" if closed_low else "("
                raise UserError(f"{source}: {name} must be a number in {bracket}{low:g}, {high:g}], got {value!r}")
        for name in ("ent_coef", "vf_coef", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UserError(f"{source}: {name} must be a number ≥ 0, got {value!r}")
        for name in ("learning_rate", "clip_range"):
            schedule(getattr(self, name), name)
        return self


def load_expert_config(path: str | Path | None, game: str) -> ExpertConfig:
    """The ``atari`` section of a YAML config updated by the section named after ``game`` (e.g. ``Pong``)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    values = merged_section(read_yaml(path), "atari", display_name(rom_id(game)))
    return build_dataclass(ExpertConfig, values, str(path)).validate(str(path))


def schedule(value: float | str, name: str = "value") -> float | LinearSchedule:
    """A constant, or ``"lin_X"``: linear decay from X to 0 over training (rl-zoo's convention)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.startswith("lin_"):
                start = float(text[4:])
                if start <= 0:
                    raise ValueError
                return LinearSchedule(start, 0.0, 1.0)
            value = float(text)
        except ValueError:
            raise UserError(f"{name} must be a positive number or 'lin_<number>', got {value!r}") from None
    if not value > 0:
        raise UserError(f"{name} must be positive, got {value!r}")
    return float(value)


def build_ppo(env: Any, cfg: ExpertConfig, seed: int, device: str, tensorboard_log: str | None) -> PPO:
    """A fresh SB3 PPO with the config's hyper-parameters (fast or stock policy and buffer)."""
    fast_kwargs: dict[str, Any] = (
        {"rollout_buffer_class": Uint8RolloutBuffer} if cfg.fast else {}
    )
    return PPO(
        ChannelsLastCnnPolicy if cfg.fast else "CnnPolicy",
        env,
        learning_rate=schedule(cfg.learning_rate, "learning_rate"),
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=schedule(cfg.clip_range, "clip_range"),
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        tensorboard_log=tensorboard_log,
        seed=seed,
        device=device,
        verbose=0,
        **fast_kwargs,
    )


class AtomicCheckpointCallback(BaseCallback):
    """Every ``every`` env steps, save the whole model (weights, optimizer, step count) atomically."""

    def __init__(self, path: Path, every: int, on_save: Any) -> None:
        super().__init__()
        self.path = path
        self.every = every
        self.on_save = on_save
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            self.on_save()
            save_model_atomic(self.model, self.path)
        return True


class EpisodeCsvCallback(BaseCallback):
    """Append every finished training game (raw score) to a CSV: the learning curve.

    Rows end in a bare LF, as :func:`truncate_episode_csv` writes them on resume (csv's default CRLF gave the
    committed file mixed line endings). The file is opened by name for each step that finished a game (about one
    per second) rather than held open:
    if it is replaced meanwhile (``git checkout`` / ``git stash`` of a tracked run directory), the rows still go
    to the file at ``path``, not to an unlinked inode only this process can see.
    """

    FIELDS = ("timesteps", "return", "length", "wall_time_s")

    def __init__(self, path: Path, wall_time: Any) -> None:
        super().__init__()
        self.path = path
        self.wall_time = wall_time

    def _on_training_start(self) -> None:
        if not self.path.exists():
            with open(self.path, "a", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerow(self.FIELDS)

    def _on_step(self) -> bool:
        rows = [
            [self.num_timesteps, episode["r"], episode["l"], round(self.wall_time(), 1)]
            for info in self.locals.get("infos", [])
            if (episode := info.get("episode")) is not None
        ]
        if rows:
            with open(self.path, "a", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows(rows)
        return True


def resumed_tensorboard_logger(model: PPO, tb_dir: str, tb_log_name: str = "PPO") -> None:
    """Give a resumed ``model`` SB3's usual TensorBoard logger (continuing the run's latest ``<tb_log_name>_N``
    folder), but with ``purge_step`` at the checkpoint's step count, so that the steps the killed run logged after
    its last checkpoint are discarded instead of appearing twice (as train_exits does with its own writer)."""
    from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
    from stable_baselines3.common.utils import get_latest_run_id
    from torch.utils.tensorboard import SummaryWriter

    folder = str(Path(tb_dir) / f"{tb_log_name}_{max(get_latest_run_id(tb_dir, tb_log_name), 1)}")
    output = TensorBoardOutputFormat(folder)
    output.writer.close()
    output.writer = SummaryWriter(log_dir=folder, purge_step=model.num_timesteps)
    model.set_logger(Logger(folder=folder, output_formats=[output]))


def truncate_episode_csv(path: Path, max_timesteps: int) -> int:
    """Drop rows logged after ``max_timesteps`` (written by a run killed after its last checkpoint) and rows that are
    not episode rows (a line torn by a kill mid-write, a stray edit); returns how many of the latter were dropped."""
    if not path.exists():
        return 0
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return 0

    def step(row: list[str]) -> float | None:
        try:
            return float(row[0]) if len(row) == len(rows[0]) else None
        except ValueError:
            return None

    valid = [r for r in rows[1:] if r and step(r) is not None]
    kept = [rows[0]] + [r for r in valid if step(r) <= max_timesteps]
    atomic_write_text(path, "".join(",".join(r) + "\n" for r in kept))
    return sum(1 for r in rows[1:] if r) - len(valid)


def evaluate_model(
    model: PPO,
    game: str,
    n_episodes: int,
    seed: int,
    sticky_prob: float,
    *,
    num_threads: int | None = None,
    max_episode_frames: int = MAX_EPISODE_FRAMES,
) -> dict[str, Any]:
    """Full games (raw scores, sticky actions, argmax actions, cut at ``max_episode_frames``) with the model, their
    emulators stepped by ``num_threads`` threads (None: one per core); a JSON-ready summary."""
    n_envs = min(n_episodes, 8)
    env = make_atari_env(game, n_envs, training=False, sticky_prob=sticky_prob, seed=seed, num_threads=num_threads,
                         max_episode_frames=max_episode_frames)
    try:
        start = time.time()
        stats = run_episodes(lambda obs: model.predict(obs, deterministic=True)[0], env, n_episodes)
    finally:
        env.close()
    return {
        **stats.summary(),
        "returns": stats.returns,
        "sticky_prob": sticky_prob,
        "deterministic": True,
        "env_seeds": [seed + i for i in range(n_envs)],
        "eval_wall_time_s": round(time.time() - start, 1),
    }


def default_run_dir(game: str, seed: int) -> Path:
    """``runs/ppo/<Game>_s<seed>/``."""
    return Path("runs") / "ppo" / f"{display_name(rom_id(game))}_s{seed}"


def extend_schedule_history(run_meta: dict[str, Any], step: int, total_timesteps: int) -> list[dict[str, int]]:
    """The run's schedule history after resuming at ``step`` with target ``total_timesteps``.

    Each entry ``{"from_step", "total_timesteps"}`` starts a segment in which the linear schedules decay towards 0
    at ``total_timesteps``; a resume that changes the target adds one, so the exact commands that made a run can be
    written out again (one command with the final target would restart the schedules differently). Checkpoints
    saved before this history existed get one from their saved target.
    """
    previous = int(run_meta.get("total_timesteps", total_timesteps))
    saved = run_meta.get("schedule_history") or [{"from_step": 0, "total_timesteps": previous}]
    history = [dict(entry) for entry in saved]
    if history[-1]["total_timesteps"] != total_timesteps:
        history.append({"from_step": int(step), "total_timesteps": int(total_timesteps)})
    return history


def train_expert(
    env: str,
    out: str | Path | None = None,
    *,
    seed: int = 0,
    total_timesteps: int | None = None,
    n_envs: int | None = None,
    resume: bool = False,
    device: str = "cpu",
    config: str | Path | ExpertConfig | None = None,
    eval_episodes: int = 10,
    progress_bar: bool = True,
    threads: int | None = None,
    ale_threads: int | None = None,
    eval_max_episode_frames: int = MAX_EPISODE_FRAMES,
) -> dict[str, Any]:
    """Train (or resume) a PPO expert; write checkpoints, TensorBoard logs, ``final.zip`` and ``eval.json``.

    The run directory holds ``checkpoints/latest.zip`` (everything ``resume`` needs: weights, optimizer,
    step count, schedules' progress), ``episodes.csv`` (every training game's raw score), ``tb/``,
    and at the end ``final.zip`` and ``eval.json``. Resuming continues the same step count and schedules;
    the environments restart (emulator states are not saved) with seeds derived from ``seed`` and the
    step count, so a resumed run is deterministic given its checkpoint.

    ``config`` is a YAML file (default ``configs/ppo_atari.yaml``) or the :class:`ExpertConfig` itself (a resumed run
    keeps its own unless one is given). ``threads``: torch intra-op threads (None: all cores); ``ale_threads``: the
    emulators' threads (None: one per core, at most one per env); ``eval_max_episode_frames`` cuts the final
    evaluation's games (ALE's 108,000).
    """
    game = rom_id(env)
    device = str(resolve_device(device))
    cfg = dataclasses.replace(config) if isinstance(config, ExpertConfig) else load_expert_config(config, game)
    if total_timesteps is not None:
        cfg.total_timesteps = total_timesteps
    if n_envs is not None:
        cfg.n_envs = n_envs
    cfg.validate()
    if eval_episodes <= 0:
        raise UserError(f"eval episodes must be a positive integer, got {eval_episodes}")

    run_dir = Path(out) if out is not None else default_run_dir(game, seed)
    checkpoint = run_dir / "checkpoints" / "latest.zip"
    if resume and not checkpoint.is_file():
        raise UserError(f"nothing to resume: {checkpoint} does not exist (run without --resume to start)")
    if not resume and checkpoint.is_file():
        raise UserError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another --out")
    lock = RunDirLock(run_dir)  # one live process per run directory; released when this function returns
    ensure_writable_dir(run_dir / "checkpoints")
    threads = tune_cpu(threads)
    tb_dir = str(run_dir / "tb")

    if resume:
        model = load_model(checkpoint, device=device, game=game, fast=False)  # the run goes on with its own classes
        if n_envs is not None and n_envs != model.n_envs:
            raise UserError(f"{checkpoint} trains with {model.n_envs} envs; a resumed run keeps them (drop --n-envs)")
        run_meta = meta(model)
        seed = int(run_meta.get("seed", seed))
        if config is None and "config" in run_meta:  # the run's own settings, unless told otherwise
            cfg = build_dataclass(ExpertConfig, run_meta["config"], f"{checkpoint} metadata")
        cfg.total_timesteps = int(total_timesteps or run_meta.get("total_timesteps", cfg.total_timesteps))
        run_meta["schedule_history"] = extend_schedule_history(run_meta, model.num_timesteps, cfg.total_timesteps)
        env_seed = seed + model.num_timesteps
        vec_env = make_atari_env(game, model.n_envs, training=True, sticky_prob=cfg.sticky_prob, seed=env_seed,
                                 num_threads=ale_threads)
        model.set_env(vec_env)
        model.set_random_seed(env_seed)
        model.tensorboard_log = tb_dir
        resumed_tensorboard_logger(model, tb_dir)
        dropped = truncate_episode_csv(run_dir / "episodes.csv", model.num_timesteps)
        if dropped:
            print(f"note: dropped {dropped} malformed row(s) from {run_dir / 'episodes.csv'}", file=sys.stderr)
    else:
        vec_env = make_atari_env(game, cfg.n_envs, training=True, sticky_prob=cfg.sticky_prob, seed=seed,
                                 num_threads=ale_threads)
        model = build_ppo(vec_env, cfg, seed, device, tb_dir)
        run_meta = {
            "game": game,
            "seed": seed,
            "total_timesteps": cfg.total_timesteps,
            "config": dataclasses.asdict(cfg),
            "wall_time_s": 0.0,
            "schedule_history": [{"from_step": 0, "total_timesteps": cfg.total_timesteps}],
        }

    prior_wall = float(run_meta.get("wall_time_s", 0.0))
    session_start = time.time()
    start_steps = model.num_timesteps

    def wall_time() -> float:
        return prior_wall + time.time() - session_start

    def update_meta() -> None:
        run_meta["wall_time_s"] = round(wall_time(), 1)
        run_meta["total_timesteps"] = cfg.total_timesteps
        setattr(model, META_ATTR, dict(run_meta))

    update_meta()
    remaining = cfg.total_timesteps - model.num_timesteps
    if remaining > 0:
        callbacks = CallbackList(
            [
                AtomicCheckpointCallback(checkpoint, cfg.checkpoint_every, update_meta),
                EpisodeCsvCallback(run_dir / "episodes.csv", wall_time),
            ]
        )
        # SB3 adds the current step count to `total_timesteps` when not resetting: pass what remains so
        # that the linear schedules keep decaying towards the same end point.
        model.learn(
            remaining,
            callback=callbacks,
            reset_num_timesteps=not resume,
            tb_log_name="PPO",
            progress_bar=progress_bar,
        )
    session_steps = model.num_timesteps - start_steps
    session_time = time.time() - session_start
    update_meta()
    save_model_atomic(model, checkpoint)
    save_model_atomic(model, run_dir / "final.zip")
    vec_env.close()

    evaluation = evaluate_model(model, game, eval_episodes, seed + EVAL_SEED_OFFSET, cfg.sticky_prob,
                                num_threads=ale_threads, max_episode_frames=eval_max_episode_frames)
    result = {
        "game": game,
        "timesteps": model.num_timesteps,
        "wall_time_s": run_meta["wall_time_s"],
        "steps_per_s": round(session_steps / session_time, 1) if session_steps else None,
        "torch_threads": threads,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        **evaluation,
    }
    atomic_write_json(run_dir / "eval.json", result)
    lock.release()
    return result


def mean_recent_return(run_dir: str | Path, last: int = 100) -> float | None:
    """Mean raw score of the last ``last`` training games logged in ``episodes.csv`` (None if none)."""
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    return float(np.mean([float(r["return"]) for r in rows[-last:]]))
