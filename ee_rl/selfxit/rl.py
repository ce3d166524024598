"""SelfXit on a PPO expert: per-exit thresholds from a tolerated action-disagreement rate instead of one global τ.

The heads are the agent's SDN heads (``exits-sdn.pt``): independent ICs distilled from the expert's action
distribution by :mod:`ee_rl.rl.distill` — SelfXit's label-free training, already done. This driver:

1. records inference data: states the expert visits while playing (every ``state_stride``-th decision);
2. splits them 40 / 60 into validation / test (the 20 / 30 of SelfXit's 50 / 20 / 30: the 50 % training part is
   distillation's own states);
3. calibrates, thresholds (eq. 3, "accuracy" = agreement with the expert's argmax action) and picks the exit subset
   (eq. 4) on the validation states with :func:`ee_rl.selfxit.pipeline.calibrate_and_select`;
4. measures the deployed agent offline on the test states, then plays full games with it and with the expert.

The result is also a :class:`ee_rl.rl.sweep.rows.SweepRow` (method ``selfxit``, threshold = T) that can be appended to
a sweep's CSV next to ZTW / SDN / PBEE.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ee_rl.core import FULL, FULL_RULE, EarlyExitModel, ExitRule
from ee_rl.errors import UserError
from ee_rl.io import ensure_writable_dir
from ee_rl.rl.envs import MAX_EPISODE_FRAMES, make_atari_env
from ee_rl.rl.evaluate import record_observations
from ee_rl.rl.games import display_name, rom_id
from ee_rl.rl.policy import EarlyExitPolicy, agent_paths, load_early_exit_agent
from ee_rl.rl.sweep.output import read_csv, write_csv
from ee_rl.rl.sweep.play import games_row, play_games
from ee_rl.rl.sweep.rows import SweepRow
from ee_rl.rl.sweep.settings import PlaySettings
from ee_rl.selfxit.evaluate import evaluate_held_out
from ee_rl.selfxit.latency import latency_vs_batch
from ee_rl.selfxit.pipeline import Calibration, Guarantee, calibrate_and_select, split_indices
from ee_rl.selfxit.report import calibration_report, held_out_report, latency_report, write_report
from ee_rl.selfxit.settings import SelfXitSettings

METHOD = "selfxit"
#: The inference-data states are recorded in other games than the evaluation games (seeded ``env_seed``).
STATES_SEED_OFFSET = 5_000


@torch.no_grad()
def collect_expert_states(
    policy: EarlyExitPolicy,
    game: str,
    n_states: int,
    *,
    n_envs: int = 8,
    stride: int = 4,
    sticky_prob: float = 0.1,
    seed: int = 10_000,
    max_episode_frames: int = MAX_EPISODE_FRAMES,
) -> np.ndarray:
    """``(n_states, *obs_shape)`` uint8 observations the expert meets while playing (evaluation envs, argmax
    actions, games cut at ``max_episode_frames``); every ``stride``-th decision of each env is kept."""
    env = make_atari_env(game, n_envs, training=False, sticky_prob=sticky_prob, seed=seed,
                         max_episode_frames=max_episode_frames)
    try:
        kept = record_observations(policy.expert_action, env, math.ceil(n_states / n_envs), stride)
    finally:
        env.close()
    return kept.reshape(-1, *kept.shape[2:])[:n_states]


def selfxit_policy(policy: EarlyExitPolicy, calibration: Calibration) -> EarlyExitPolicy:
    """The agent with only the chosen exits, temperature-scaled (act with ``calibration.rule``)."""
    return _policy_of(policy, calibration.deployed)


def _policy_of(policy: EarlyExitPolicy, model: EarlyExitModel) -> EarlyExitPolicy:
    """A new policy (its own runtime) of ``policy``'s expert with the early-exit ``model``."""
    return EarlyExitPolicy(
        model, policy.method, game=policy.game, expert_sha256=policy.expert_sha256,
        ic_stride=policy.ic_stride, pool_size=policy.pool_size, obs_shape=policy.obs_shape,
    ).eval()


def play(
    policy: EarlyExitPolicy,
    rule: ExitRule,
    game: str,
    games: PlaySettings,
    *,
    method: str,
    threshold: float,
    label: str,
    exit_columns: tuple[int, ...] | None = None,
    num_candidates: int | None = None,
) -> SweepRow:
    """Play ``games.episodes`` full games with ``policy.act(obs, rule)`` and measure them as a sweep row.

    Same protocol as :func:`ee_rl.rl.sweep.play.evaluate_setting` (seeded evaluation envs, a fixed game quota per env,
    every decision timed on its own, agreement with the expert's argmax on the same states), but with any rule.
    ``exit_columns[i]`` is the candidate exit (of ``num_candidates``) that the policy's exit ``i`` stands for, so
    the exit rates line up with the agent that has every candidate exit (the sweep's CSV columns); None keeps the
    policy's own exits.
    """
    stats, tally = play_games(policy, rule, game, games)
    rates = tally.exit_rates
    if exit_columns is not None:
        if num_candidates is None or len(exit_columns) != policy.num_ics:
            raise ValueError("exit_columns needs num_candidates and one candidate index per exit of the policy")
        columns = [0.0] * num_candidates
        for i, m in enumerate(exit_columns):
            columns[m] += rates[i]
        rates = (*columns, rates[-1])
    return games_row(method, threshold, label, stats, tally, rates)


def append_to_sweep_csv(row: SweepRow, path: Path) -> Path:
    """Add ``row`` to the sweep table at ``path`` (created if missing), replacing an earlier row of the same
    method and threshold. Rows must describe agents with the same number of candidate exits."""
    rows = read_csv(path) if path.is_file() else []
    if rows and len(rows[0].exit_rates) != len(row.exit_rates):
        raise UserError(f"{path} has {len(rows[0].exit_rates) - 1} exits per row, the SelfXit row "
                        f"{len(row.exit_rates) - 1}: not the same agent")
    rows = [r for r in rows if not (r.method == row.method and r.threshold == row.threshold)] + [row]
    return write_csv(rows, path)


@dataclasses.dataclass
class RLSelfXit:
    """A SelfXit run on an agent: calibration, offline test result, and the games of both agents."""

    calibration: Calibration
    test: Any
    expert: SweepRow
    selfxit: SweepRow
    split_sizes: tuple[int, int]
    test_states: torch.Tensor


def run_rl_selfxit(
    policy: EarlyExitPolicy, game: str, settings: SelfXitSettings, guarantee: Guarantee | None = None
) -> RLSelfXit:
    """Calibrate ``policy``'s independent heads on expert states (risk-controlled with a ``guarantee``; its risk is
    the label-free disagreement with the expert's action) and play the expert and the SelfXit agent."""
    if guarantee is not None and guarantee.risk != "consistency":
        raise UserError(f"RL has no labels: the guarantee's risk is the disagreement with the expert "
                        f"(consistency), not {guarantee.risk}")
    if policy.model.ensembles is not None or any(getattr(h, "cascade_in", 0) for h in policy.model.heads):
        raise UserError("SelfXit needs independent heads (the SDN heads, exits-sdn.pt), not cascaded ZTW heads")
    states = torch.from_numpy(collect_expert_states(
        policy, game, settings.states, n_envs=settings.n_envs, stride=settings.state_stride,
        sticky_prob=settings.sticky_prob, seed=settings.env_seed + STATES_SEED_OFFSET,
        max_episode_frames=settings.max_episode_frames,
    ))
    # The 20 / 30 parts of SelfXit's 50 / 20 / 30 split (the 50 % were distillation's states).
    val_fraction = settings.split[1] / (settings.split[1] + settings.split[2])
    val, test = split_indices(states.shape[0], [val_fraction, 1 - val_fraction], settings.seed)
    calibration = calibrate_and_select(
        policy.model, states[val], settings.tolerance, settings.batch_size, guarantee=guarantee
    )
    held_out = evaluate_held_out(calibration, states[test], batch_size=settings.batch_size,
                                 repeats=settings.timing_repeats, runtime=settings.runtime)
    agent = selfxit_policy(policy, calibration).use_runtime(settings.runtime, threads=settings.threads)
    player = policy
    if settings.runtime != "torch":  # the expert's row runs in the same runtime (its own, unchanged policy)
        player = _policy_of(policy, policy.model).use_runtime(settings.runtime, threads=settings.threads)
    # The games use the sweep's seeds, so the row appended to its CSV is played on the same games as its rows.
    games = PlaySettings(episodes=settings.episodes, n_envs=settings.n_envs, seed=settings.env_seed,
                         sticky_prob=settings.sticky_prob, max_episode_frames=settings.max_episode_frames,
                         torch_threads=settings.threads)
    expert = play(player, FULL_RULE, game, games, method="expert", threshold=FULL, label="full")
    tol = settings.tolerance
    label = f"selfxit T={tol:g}" + (f" delta={guarantee.delta:g}" if guarantee is not None else "")
    row = play(agent, calibration.rule, game, games, method=METHOD, threshold=tol, label=label,
               exit_columns=calibration.subset.subset or (0,), num_candidates=policy.num_ics)
    return RLSelfXit(calibration, held_out, expert, row, (len(val), len(test)), states[test])


def rl_report(run: RLSelfXit, *, game: str, agent_dir: Path, settings: SelfXitSettings, latency: Any = None,
              command: str = "") -> dict[str, Any]:
    """The run's JSON-ready report."""
    test = run.test
    return {
        "name": f"{display_name(game)} / SDN heads",
        "kind": "rl",
        "command": command,
        "game": game,
        "agent": str(agent_dir),
        "split_sizes": {"validation": run.split_sizes[0], "test": run.split_sizes[1]},
        **calibration_report(run.calibration),
        "expert_return": run.expert.return_mean,
        "expert_return_std": run.expert.return_std,
        "return": run.selfxit.return_mean,
        "return_std": run.selfxit.return_std,
        "inference_time": run.selfxit.inference_time,
        "agreement_in_games": run.selfxit.agreement,
        "us_per_decision": {"expert": run.expert.us_per_decision, "selfxit": run.selfxit.us_per_decision},
        "wall_clock": {
            "backbone_ms": run.expert.us_per_decision * min(settings.n_envs, settings.episodes) / 1e3,
            "early_exit_ms": run.selfxit.us_per_decision * min(settings.n_envs, settings.episodes) / 1e3,
            "what": f"one batched decision of {min(settings.n_envs, settings.episodes)} envs in games, "
            f"{torch.get_num_threads()} thread(s)",
        },
        "games": {"expert": run.expert.to_dict(), "selfxit": run.selfxit.to_dict()},
        "test": held_out_report(test),
        "latency": latency_report(latency) if latency is not None else None,
        "settings": dataclasses.asdict(settings),
    }


def run_rl_experiment(
    env: str,
    agent_dir: Path,
    out_dir: Path,
    settings: SelfXitSettings,
    *,
    latency: bool = True,
    command: str = "",
    sweep_csv: Path | None = None,
    progress: bool = False,
    guarantee: Guarantee | None = None,
) -> dict[str, Any]:
    """Load the agent's SDN heads, run SelfXit, write ``report.json`` / ``report.md`` (and the sweep row)."""
    game = rom_id(env)
    paths = agent_paths(agent_dir, "sdn")
    for path in (paths.expert, paths.heads):
        if not path.is_file():
            raise UserError(f"agent file not found: {path} (SelfXit uses the expert and its SDN heads)")
    out_dir = ensure_writable_dir(out_dir)
    policy = load_early_exit_agent(paths.expert, paths.heads, game=game)
    run = run_rl_selfxit(policy, game, settings, guarantee)
    table = None
    if latency:
        table = latency_vs_batch(run.calibration.deployed, run.calibration.rule, run.test_states,
                                 settings.latency_batch_sizes, repeats=settings.latency_repeats)
    report = rl_report(run, game=game, agent_dir=agent_dir, settings=settings, latency=table, command=command)
    write_report(report, out_dir)
    write_csv([run.expert, run.selfxit], out_dir / "sweep_rows.csv")
    if sweep_csv is not None:
        append_to_sweep_csv(run.selfxit, sweep_csv)
    return report
