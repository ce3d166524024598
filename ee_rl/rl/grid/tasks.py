"""The grid's tasks: an expert training run, an exit training run and a sweep setting, each a pure function of its
arguments that hands its result back as a value (the driver writes every result file).

A training task is long; it resumes from its own checkpoint when it is run again after its worker died. The driver
names a checkpoint location (a folder under the grid's ``--out``); the task trains there (checkpoints are written
atomically after every round or every ``checkpoint_every`` steps) and, when run again, continues from what it finds.
On one machine or a local cluster that folder is the driver's; on a cluster of several machines it must be on
storage every node shares, or a retry on another node finds nothing and starts from scratch (a worker that cannot
create the folder trains in a temporary one). The expert arrives as bytes (on Ray: a dependency resolved from the
object store), so no task needs the driver's files. Arguments are positional, as executors pass them.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path
from typing import Any

from ee_rl.devices import torch_threads
from ee_rl.io import writable_dir_or_temporary
from ee_rl.rl.sweep import PlaySettings, SweepRow, play_setting


@dataclasses.dataclass(frozen=True)
class Trained:
    """What a training task hands back: the file it made, as bytes, and its summary."""

    data: bytes
    summary: dict[str, Any]


def file_bytes(value: Trained | bytes) -> bytes:
    """The bytes of a file handed over as a training result or as plain bytes."""
    return value.data if isinstance(value, Trained) else value


def train_expert_task(
    game: str,
    seed: int,
    config: Any,
    run_dir: str,
    eval_episodes: int,
    max_episode_frames: int,
    threads: int,
    ale_threads: int,
) -> Trained:
    """Task: train (or, after a retry, resume) a PPO expert in ``run_dir`` with ``config`` (an
    :class:`~ee_rl.rl.expert.ExpertConfig`); hand back its final zip and its evaluation."""
    from ee_rl.rl.expert import train_expert

    folder = writable_dir_or_temporary(run_dir)
    checkpoint = folder / "checkpoints" / "latest.zip"
    resumed = checkpoint.is_file()
    with torch_threads(threads):
        result = train_expert(
            game, folder, seed=seed, total_timesteps=config.total_timesteps, resume=resumed, config=config,
            eval_episodes=eval_episodes, progress_bar=False, threads=threads, ale_threads=ale_threads,
            eval_max_episode_frames=max_episode_frames,
        )
    return Trained((folder / "final.zip").read_bytes(), {**result, "resumed": resumed, "run_dir": str(folder)})


def train_exits_task(
    expert: Trained | bytes,
    game: str,
    method: str,
    seed: int,
    config: Any,
    run_dir: str,
    threads: int,
    ale_threads: int,
) -> Trained:
    """Task: train (or, after a retry, resume from its last round's checkpoint) ``method``'s exits on ``expert`` in
    ``run_dir`` with ``config`` (a :class:`~ee_rl.rl.distill.DistillConfig`); hand back the heads file and the run's
    summary (``resumed_from_timesteps``: the steps the checkpoint it continued had, 0 for a fresh run)."""
    from ee_rl.core.method import method_by_name
    from ee_rl.rl.distill import checkpoint_timesteps, distill_exits
    from ee_rl.rl.envs import make_atari_env

    folder = writable_dir_or_temporary(run_dir)
    checkpoint = folder / "checkpoints" / "latest.pt"
    resumed_from = checkpoint_timesteps(checkpoint)
    with tempfile.TemporaryDirectory(prefix="ee_rl-expert-") as scratch, torch_threads(threads):
        expert_path = Path(scratch) / "expert.zip"
        expert_path.write_bytes(file_bytes(expert))
        summary = distill_exits(
            game, expert_path, method_by_name(method), folder, seed=seed, total_timesteps=config.total_timesteps,
            resume=checkpoint.is_file(), config=config, threads=threads, progress_bar=False,
            make_env=functools.partial(make_atari_env, num_threads=ale_threads),
        )
    heads = (folder / f"exits-{method}.pt").read_bytes()
    return Trained(heads, {**summary, "resumed_from_timesteps": resumed_from, "run_dir": str(folder)})


def play_cell_setting(
    expert: Trained | bytes, heads: Trained | bytes | None, method: str, threshold: float, game: str,
    play: PlaySettings,
) -> SweepRow:
    """Task: one sweep setting of a grid cell (:func:`ee_rl.rl.sweep.play_setting` on trained or shipped files)."""
    return play_setting(file_bytes(expert), None if heads is None else file_bytes(heads), method, threshold, game,
                        play)
