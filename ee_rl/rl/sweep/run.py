"""A whole sweep: load the agents, play the full policy once and every method's thresholds, gather the rows.

The *full policy* (threshold ``inf``: no head runs) is the expert itself and costs exactly 1.0. It is played once
and reported as every method's ``inf`` row. Every setting plays the same env seeds, so the same seeds give the same
numbers (except the µs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from ee_rl.core import FULL
from ee_rl.exec import Executor, SerialExecutor
from ee_rl.rl.games import display_name, rom_id
from ee_rl.rl.sweep.agents import EXPERT, load_agents, player_for
from ee_rl.rl.sweep.rows import SweepResult, SweepRow
from ee_rl.rl.sweep.settings import SweepSettings, setting_thresholds
from ee_rl.rl.sweep.tasks import AgentBytes, Job, play_settings


def run_sweep(
    env: str,
    agent_dir: str | Path,
    settings: SweepSettings | None = None,
    *,
    progress: bool = True,
    on_row: Callable[[SweepRow], None] | None = None,
    heads_dir: str | Path | None = None,
    done: Sequence[SweepRow] = (),
    executor: Executor | None = None,
) -> SweepResult:
    """Sweep every method and threshold of ``settings`` with the agent in ``agent_dir`` on game ``env``.

    The agent directory holds ``expert.zip`` and ``exits-<method>.pt`` (see :func:`ee_rl.rl.policy.agent_paths`);
    ``heads_dir``, if given, holds the heads files instead (e.g. ZTW ablations kept outside the agent folder).
    ``done`` are rows of settings already played (an interrupted sweep's): those settings are not played again
    (``on_row`` is called only for the new ones). The result's ``wall_time_s`` counts this call only.
    Settings are played as tasks of ``executor`` (default: one after another in this process), each with
    ``settings.torch_threads`` intra-op threads and ``settings.ale_threads`` emulator threads. ``on_row`` is called
    with every finished row as it finishes (e.g. to log it).
    """
    settings = (settings or SweepSettings()).validate()
    game = rom_id(env)
    policies = load_agents(agent_dir, settings.methods, game, heads_dir)
    agent = AgentBytes.read(agent_dir, settings.methods, heads_dir)
    jobs = [(m, t) for m in settings.methods for t in setting_thresholds(m, settings, policies[m].num_ics)[:-1]]
    expert_player = player_for(policies, EXPERT)
    start = time.time()
    measured: dict[Job, SweepRow] = {(r.method, r.threshold): r for r in done}
    todo = [job for job in [(EXPERT, FULL), *jobs] if job not in measured]
    bar = tqdm(total=len(todo), desc=f"sweep {display_name(game)}", unit="setting", disable=not progress)
    with bar:
        for job, row in play_settings(todo, agent, game, settings.play(), executor or SerialExecutor()):
            measured[job] = row
            bar.set_postfix_str(f"{row.method} {row.rule}")
            bar.update()
            if on_row is not None:
                on_row(row)
    expert = measured[(EXPERT, FULL)]
    rows = []
    for method in settings.methods:
        rows += [measured[(m, t)] for m, t in jobs if m == method]
        rows.append(expert.with_method(method))
    return SweepResult(
        game=game,
        settings=settings,
        rows=tuple(rows),
        expert=expert,
        backbone_flops=expert_player.exit_costs.backbone,
        exit_costs={m: policies[m].exit_costs.relative for m in settings.methods},
        torch_threads=settings.torch_threads,
        wall_time_s=time.time() - start,
    )

