"""Playing many sweep settings: one after another in this process, or at once in a pool of worker processes.

Every setting seeds its own envs, so a setting's returns, costs and exit rates do not depend on where or in which
order it is played (only its µs per decision do, as workers share the machine).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from ee_rl.rl.policy import EarlyExitPolicy
from ee_rl.rl.sweep.agents import load_agents, player_for
from ee_rl.rl.sweep.play import evaluate_setting
from ee_rl.rl.sweep.rows import SweepRow

#: A setting to play: ``(method, threshold)``; method :data:`~ee_rl.rl.sweep.agents.EXPERT` = the full policy.
Job = tuple[str, float]

#: The agents of a worker process (set before it forks, or loaded by :func:`_init_worker`). Module state, as the
#: pool's functions must be picklable by name.
_WORKER_AGENTS: dict[str, EarlyExitPolicy] = {}


def play_setting(
    agents: dict[str, EarlyExitPolicy], method: str, threshold: float, game: str, play: dict[str, Any]
) -> SweepRow:
    """Play one setting with the loaded ``agents``; ``play`` holds :func:`evaluate_setting`'s keyword arguments."""
    return evaluate_setting(player_for(agents, method), method, threshold, game, **play)


def play_settings(
    jobs: Sequence[Job],
    agents: dict[str, EarlyExitPolicy],
    game: str,
    play: dict[str, Any],
    *,
    workers: int = 1,
    torch_threads: int = 1,
    agent_dir: str | Path | None = None,
    heads_dir: str | Path | None = None,
) -> Iterable[tuple[Job, SweepRow]]:
    """Play every ``(method, threshold)`` job and yield ``(job, row)`` as each finishes: in order in this process
    with one worker, else in a pool of ``workers`` processes (each with ``torch_threads`` intra-op threads).

    ``agent_dir`` (and ``heads_dir``, see :func:`~ee_rl.rl.sweep.agents.load_agents`) is where a worker that cannot
    inherit ``agents`` (no ``fork`` on this OS) loads them from.
    """
    if not jobs:
        return
    if workers == 1 or len(jobs) == 1:
        for method, threshold in jobs:
            yield (method, threshold), play_setting(agents, method, threshold, game, play)
        return
    # Fork where the OS has it: the children inherit the loaded agents (and the parent's module state); elsewhere
    # each worker loads them again. Every setting seeds its own envs, so the order of completion does not matter.
    methods = list(agents)
    forking = "fork" in multiprocessing.get_all_start_methods()
    _WORKER_AGENTS.clear()
    if forking:
        _WORKER_AGENTS.update(agents)
    context = multiprocessing.get_context("fork" if forking else "spawn")
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(str(agent_dir), methods, game, torch_threads, None if heads_dir is None else str(heads_dir)),
        ) as pool:
            futures = {pool.submit(_play_in_worker, m, t, game, play): (m, t) for m, t in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()
    finally:
        _WORKER_AGENTS.clear()


def _init_worker(
    agent_dir: str, methods: Sequence[str], game: str, torch_threads: int, heads_dir: str | None = None
) -> None:
    """Worker start-up: one intra-op thread budget, and the agents (inherited when forked, else loaded)."""
    torch.set_num_threads(torch_threads)
    if not _WORKER_AGENTS:
        _WORKER_AGENTS.update(load_agents(agent_dir, methods, game, heads_dir))


def _play_in_worker(method: str, threshold: float, game: str, play: dict[str, Any]) -> SweepRow:
    return play_setting(_WORKER_AGENTS, method, threshold, game, play)
