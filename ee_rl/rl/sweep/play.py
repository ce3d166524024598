"""Playing full games with an early-exit agent under one rule, and tallying what its decisions computed.

Games are played in evaluation mode (no life-loss terminals, raw scores, sticky actions) in parallel envs, every
decision answered by batch-shrinking inference (:meth:`ee_rl.rl.policy.EarlyExitPolicy.act`). Also used outside the
sweep: the video recorder tallies its decisions with :class:`DecisionTally`, SelfXit plays its rule with
:func:`play_games` and reports it as a :func:`games_row`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from ee_rl.core import ExitRule, rule_for_method
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.evaluate import EpisodeStats, run_episodes
from ee_rl.rl.policy import ActResult, EarlyExitPolicy
from ee_rl.rl.sweep.rows import SweepRow
from ee_rl.rl.sweep.settings import PlaySettings, rule_label


class DecisionTally:
    """Accumulates what an agent computed over many batched decisions (only rows in the ``counted`` mask)."""

    def __init__(self, num_ics: int) -> None:
        self.exit_counts = np.zeros(num_ics + 1, dtype=np.int64)
        self.decisions = 0
        self.flops = 0
        self.backbone_flops = 0
        self.agreed = 0
        self.timed_ns = 0
        self.timed_decisions = 0

    def add(self, result: ActResult, expert_actions: np.ndarray, counted: np.ndarray | None = None) -> None:
        """Record one batch: the agent's answer, the expert's actions on the same states, which rows count."""
        mask = np.ones(result.actions.shape[0], dtype=bool) if counted is None else np.asarray(counted, dtype=bool)
        self.exit_counts += np.bincount(result.exit_index[mask], minlength=self.exit_counts.shape[0])
        self.decisions += int(mask.sum())
        self.flops += int(result.flops[mask].sum())  # exact integers: the full policy costs exactly 1.0
        self.backbone_flops = result.backbone_flops
        self.agreed += int((result.actions[mask] == expert_actions[mask]).sum())

    def add_time(self, nanoseconds: int, batch: int) -> None:
        """Record the wall-clock time of one batched decision of ``batch`` rows."""
        self.timed_ns += nanoseconds
        self.timed_decisions += batch

    @property
    def inference_time(self) -> float:
        """Mean FLOPs per decision as a fraction of the expert's."""
        return self.flops / (self.decisions * self.backbone_flops) if self.decisions else math.nan

    @property
    def agreement(self) -> float:
        """Fraction of decisions agreeing with the expert's argmax action."""
        return self.agreed / self.decisions if self.decisions else math.nan

    @property
    def exit_rates(self) -> tuple[float, ...]:
        """Fraction of decisions answered at each exit (the final head last)."""
        total = max(self.decisions, 1)
        return tuple(float(c) / total for c in self.exit_counts)

    @property
    def us_per_decision(self) -> float:
        """Measured µs per decision."""
        return self.timed_ns / self.timed_decisions / 1e3 if self.timed_decisions else math.nan


def expert_actions_for(policy: EarlyExitPolicy, obs: np.ndarray, result: ActResult) -> np.ndarray:
    """The expert's argmax actions on ``obs``, given the agent's answer ``result`` on the same states.

    Rows the expert's own head answered already hold the expert's action; only rows that left early are run
    through the plain expert (at high thresholds that is few, which keeps sweeps fast).
    """
    early = result.exit_index < policy.num_ics
    expert = result.actions.copy()
    if early.any():
        expert[early] = policy.expert_action(obs[early])
    return expert


def play_games(
    policy: EarlyExitPolicy, rule: ExitRule, game: str, play: PlaySettings
) -> tuple[EpisodeStats, DecisionTally]:
    """Play ``play.episodes`` full games with ``policy.act(obs, rule)``: the episode stats and the decision tally.

    Games run in ``min(n_envs, episodes)`` parallel evaluation envs seeded ``seed, seed + 1, ...`` (stepped by
    ``play.ale_threads`` native threads, cut at ``play.max_episode_frames``); each batched decision is one
    ``policy.act`` call (batch-shrinking inference), timed on its own; the expert's action on the same states (for
    the agreement) is computed outside the timed call. Torch's threads are the caller's to set.
    """
    tally = DecisionTally(policy.num_ics)
    counted: list[np.ndarray] = []
    clock = time.perf_counter_ns

    def remember_counted(obs: np.ndarray, active: np.ndarray) -> None:
        counted[:] = [active.copy()]

    def act(obs: np.ndarray) -> np.ndarray:
        start = clock()
        result = policy.act(obs, rule)
        tally.add_time(clock() - start, obs.shape[0])
        tally.add(result, expert_actions_for(policy, obs, result), counted[0] if counted else None)
        return result.actions

    env = make_atari_env(
        game, min(play.n_envs, play.episodes), training=False, sticky_prob=play.sticky_prob, seed=play.seed,
        num_threads=play.ale_threads, max_episode_frames=play.max_episode_frames,
    )
    try:
        stats = run_episodes(act, env, play.episodes, on_step=remember_counted)
    finally:
        env.close()
    return stats, tally


def evaluate_setting(
    policy: EarlyExitPolicy, method: str, threshold: float, game: str, play: PlaySettings
) -> SweepRow:
    """Play ``play.episodes`` full games with ``policy`` under the setting's rule and measure them (see
    :class:`SweepRow` and :func:`play_games`)."""
    rule = rule_for_method(method, threshold)
    stats, tally = play_games(policy, rule, game, play)
    return games_row(method, threshold, rule_label(method, threshold), stats, tally)


def games_row(
    method: str,
    threshold: float,
    rule: str,
    stats: EpisodeStats,
    tally: DecisionTally,
    exit_rates: Sequence[float] | None = None,
) -> SweepRow:
    """The sweep row of games played by :func:`play_games`: their returns and the tally of their decisions.

    ``exit_rates`` replaces the tally's own (e.g. mapped onto another agent's exits); None keeps them.
    """
    summary = stats.summary()
    return SweepRow(
        method=method,
        threshold=float(threshold),
        rule=rule,
        episodes=int(summary["episodes"]),
        return_mean=float(summary["return_mean"]),
        return_std=float(summary["return_std"]),
        return_min=float(summary["return_min"]),
        return_max=float(summary["return_max"]),
        inference_time=tally.inference_time,
        agreement=tally.agreement,
        us_per_decision=tally.us_per_decision,
        decisions=tally.decisions,
        exit_rates=tuple(tally.exit_rates if exit_rates is None else exit_rates),
        returns=tuple(stats.returns),
    )

