"""Vision seeds as executor tasks: a seed's training run (:class:`~ee_rl.vision.train.RunSpec` → its files as
bytes), many of them at once, the driver writing every file.

The task trains in the run directory the driver names (resuming what it finds there: a retried task continues its
finished phases and its interrupted one), or in a temporary folder on a machine that cannot write there; either way
its files come back as values, so workers need no shared filesystem.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ee_rl.devices import torch_threads
from ee_rl.exec import Executor
from ee_rl.io import atomic_write_bytes, writable_dir_or_temporary
from ee_rl.vision.train import RunSpec, train_run

#: The files of a run directory that make a seed (backbone, exit heads, training summary); checkpoints of
#: unfinished phases (``*.ckpt``) and TensorBoard logs stay with the task.
RUN_FILES = (".pt", ".json")


@dataclasses.dataclass(frozen=True)
class SeedRun:
    """A finished training run: its files by name, and how long the task took."""

    files: dict[str, bytes]
    wall_time_s: float


def train_seed(spec: RunSpec, threads: int) -> SeedRun:
    """Task: run (or continue) ``spec``'s training with ``threads`` torch threads; hand back its files."""
    folder = writable_dir_or_temporary(spec.out_dir)
    start = time.perf_counter()
    with torch_threads(threads):
        train_run(dataclasses.replace(spec, out_dir=folder, resume=True))
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in RUN_FILES}
    return SeedRun(files, time.perf_counter() - start)


def train_seeds(specs: Sequence[RunSpec], executor: Executor, threads: int) -> Iterator[tuple[RunSpec, SeedRun]]:
    """Train every spec on ``executor`` (each task asks for ``threads`` CPUs) and write each run's files into its
    ``out_dir`` as it finishes; yield ``(spec, run)`` then."""
    handles = {executor.submit(train_seed, spec, threads, cpus=threads, name=f"vision {spec.dataset} s{spec.seed}"):
               spec for spec in specs}
    for handle, run in executor.as_completed(list(handles)):
        spec = handles[handle]
        for name, data in run.files.items():
            atomic_write_bytes(Path(spec.out_dir) / name, data)
        yield spec, run
