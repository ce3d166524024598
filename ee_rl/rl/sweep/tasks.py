"""Sweep settings as executor tasks: the agent travels as bytes, each setting comes back as a :class:`SweepRow`.

Every setting seeds its own envs, so a setting's returns, costs and exit rates do not depend on where or in which
order it is played (only its µs per decision do, as workers share machines). The task reads no file: the driver
reads the agent once and ships its bytes (on Ray, stored once in the object store), so workers need no shared
filesystem.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ee_rl.devices import torch_threads
from ee_rl.exec import Executor
from ee_rl.rl.policy import EarlyExitPolicy, agent_paths
from ee_rl.rl.sweep.agents import EXPERT, check_agent_files, load_agents
from ee_rl.rl.sweep.play import evaluate_setting
from ee_rl.rl.sweep.rows import SweepRow
from ee_rl.rl.sweep.settings import PlaySettings

#: A setting to play: ``(method, threshold)``; method :data:`~ee_rl.rl.sweep.agents.EXPERT` = the full policy.
Job = tuple[str, float]


@dataclasses.dataclass(frozen=True)
class AgentBytes:
    """An agent's files as bytes: the expert's zip, and the heads file each method plays (PBEE: the SDN heads)."""

    expert: bytes
    heads: dict[str, bytes]

    @classmethod
    def read(cls, agent_dir: str | Path, methods: Sequence[str], heads_dir: str | Path | None = None) -> AgentBytes:
        """Read the files of ``methods``' agents (see :func:`~ee_rl.rl.policy.agent_paths`); a missing one is a
        :class:`~ee_rl.errors.UserError`."""
        check_agent_files(agent_dir, methods, heads_dir)
        paths = {m: agent_paths(agent_dir, m, heads_dir) for m in methods}
        files = {p: p.read_bytes() for p in {path.heads for path in paths.values()}}  # a file shared is read once
        expert = next(iter(paths.values())).expert.read_bytes()
        return cls(expert, {m: files[p.heads] for m, p in paths.items()})


@functools.lru_cache(maxsize=4)
def load_player(
    expert: bytes, heads: bytes | None, method: str, game: str, runtime: str = "torch", threads: int = 1
) -> EarlyExitPolicy:
    """The agent that plays ``method``'s settings, from the bytes of its files (kept for the next setting of this
    worker), answering with ``runtime`` (ONNX Runtime: ``threads`` threads, graphs cached in the user's cache, as the
    files here are temporary). ``heads`` None: the full policy, which runs no head (untrained SDN heads stand in
    for them)."""
    return _load_player(expert, heads, method, game).use_runtime(runtime, threads=threads)


def _load_player(expert: bytes, heads: bytes | None, method: str, game: str) -> EarlyExitPolicy:
    from ee_rl.core.method import exit_method
    from ee_rl.rl.checkpoint import load_model, weights_sha256
    from ee_rl.rl.games import rom_id

    with tempfile.TemporaryDirectory(prefix="ee_rl-agent-") as folder:
        if heads is None:
            path = Path(folder) / "expert.zip"
            path.write_bytes(expert)
            model = load_model(path, device="cpu", game=game)
            return EarlyExitPolicy.from_expert(
                model.policy, exit_method("sdn"), game=rom_id(game), expert_sha256=weights_sha256(model), seed=0
            ).eval()
        paths = agent_paths(folder, method)
        paths.expert.write_bytes(expert)
        paths.heads.write_bytes(heads)
        return load_agents(folder, [method], game)[method]


def play_setting(
    expert: bytes, heads: bytes | None, method: str, threshold: float, game: str, play: PlaySettings
) -> SweepRow:
    """Task: play one setting of a sweep (``heads`` None for the full policy, method :data:`EXPERT`) and measure it,
    with ``play.torch_threads`` intra-op threads."""
    with torch_threads(play.torch_threads):
        player = load_player(expert, heads, method, game, play.runtime, play.torch_threads)
        return evaluate_setting(player, method, threshold, game, play)


def play_settings(
    jobs: Sequence[Job], agent: AgentBytes, game: str, play: PlaySettings, executor: Executor
) -> Iterator[tuple[Job, SweepRow]]:
    """Play every ``(method, threshold)`` job on ``executor`` and yield ``(job, row)`` as each finishes.

    Each task asks for ``play.cpus`` CPUs (its torch and emulator threads).
    """
    expert = executor.put(agent.expert)
    stored: dict[int, object] = {}
    for data in agent.heads.values():
        stored.setdefault(id(data), executor.put(data))
    handles = {}
    for method, threshold in jobs:
        heads = None if method == EXPERT else stored[id(agent.heads[method])]
        handle = executor.submit(play_setting, expert, heads, method, threshold, game, play, cpus=play.cpus,
                                 name=f"sweep {method} {threshold:g}")
        handles[handle] = (method, threshold)
    for handle, row in executor.as_completed(list(handles)):
        yield handles[handle], row
