"""Threshold-vs-return sweeps of early-exit agents on full Atari games, budget selection, and their CSV/JSON/plot.

For each method (``ztw``, ``sdn``, ``pbee``) and threshold (patience for PBEE), the agent plays full games
(evaluation mode: no life-loss terminals, raw scores, sticky actions) in parallel envs, every decision answered by
batch-shrinking inference (:meth:`ee_rl.rl.policy.EarlyExitPolicy.act`). Per setting it reports the return, the
*inference time* (mean FLOPs per decision as a fraction of the expert's, from the exits really taken, counted by
:mod:`ee_rl.core.flops`: a decision answered by the final exit paid the backbone plus every IC it passed), the exit
rate of every exit, the agreement with the expert's argmax action on the same states, and measured µs per decision.

The *full policy* (threshold ``inf``: no head runs) is the expert itself and costs exactly 1.0. It is played once
and reported as every method's ``inf`` row. Every setting plays the same env seeds, so the same seeds give the same
numbers (except the µs).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ee_rl.config import CONFIG_DIR, build_dataclass, merged_section, read_yaml, require_positive_ints
from ee_rl.core import (
    ExitRule,
    MaxProbExit,
    OperatingPoint,
    PatienceExit,
    select_cheapest_within_drop,
    select_within_budget,
)
from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.evaluate import EpisodeStats, run_episodes
from ee_rl.rl.games import display_name, rom_id
from ee_rl.rl.policy import AGENT_METHODS, ActResult, EarlyExitPolicy, agent_paths, load_early_exit_agent

DEFAULT_CONFIG = CONFIG_DIR / "sweep.yaml"
#: The threshold of the full policy (no early exit, no head runs): the expert.
FULL = math.inf
#: The rule of the full policy.
FULL_RULE = MaxProbExit(FULL)
#: Methods thresholded by confidence (``max_i q_i > tau``); PBEE is thresholded by patience.
CONFIDENCE_METHODS = ("ztw", "sdn")
#: Every CSV has these columns, then ``exit_rate_1 .. exit_rate_M`` and ``exit_rate_final``.
CSV_COLUMNS = (
    "method",
    "threshold",
    "rule",
    "episodes",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "inference_time",
    "agreement",
    "us_per_decision",
    "decisions",
)


# --- settings -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SweepSettings:
    """What to sweep and how to play (``configs/sweep.yaml``).

    Attributes:
        methods: agents to sweep (``ztw``, ``sdn``, ``pbee``).
        thresholds: confidence thresholds for ztw/sdn, each in [0, 1]; the full policy is always added.
        patience: patience values for pbee; empty = ``1 .. M``.
        episodes: full games per setting.
        n_envs: parallel envs (at most ``episodes`` are used).
        sticky_prob: agent-level sticky action probability (paper: 0.1).
        seed: env seed; env ``i`` plays seed ``seed + i``, the same for every setting.
        torch_threads: torch intra-op threads while playing (the µs per decision depend on it).
        workers: settings played at once, each in its own process (returns, costs and exit rates do not depend on
            it; the µs per decision do, as the workers share the machine: use 1 for clean timings).
    """

    methods: list[str] = dataclasses.field(default_factory=lambda: ["ztw", "sdn", "pbee"])
    thresholds: list[float] = dataclasses.field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])
    patience: list[int] = dataclasses.field(default_factory=list)
    episodes: int = 10
    n_envs: int = 8
    sticky_prob: float = 0.1
    seed: int = 10_000
    torch_threads: int = 1
    workers: int = 1

    def validate(self) -> SweepSettings:
        """Check every field; a bad value is a one-line :class:`UserError`. Returns ``self``."""
        if not isinstance(self.methods, list) or not self.methods:
            raise UserError(f"methods must be a non-empty list of {', '.join(AGENT_METHODS)}, got {self.methods!r}")
        for method in self.methods:
            if method not in AGENT_METHODS:
                raise UserError(f"unknown method {method!r}; accepted: {', '.join(AGENT_METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise UserError(f"methods must not repeat, got {self.methods}")
        if not isinstance(self.thresholds, list) or not self.thresholds:
            raise UserError(f"thresholds must be a non-empty list of numbers in [0, 1], got {self.thresholds!r}")
        for t in self.thresholds:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
                raise UserError(f"thresholds must be numbers in [0, 1] (the full policy is added), got {t!r}")
        if not isinstance(self.patience, list):
            raise UserError(f"patience must be a list of non-negative integers (empty = 1..M), got {self.patience!r}")
        for p in self.patience:
            if isinstance(p, bool) or not isinstance(p, int) or p < 0:
                raise UserError(f"patience values must be non-negative integers, got {p!r}")
        require_positive_ints(self, ("episodes", "n_envs", "torch_threads", "workers"))
        if not 0.0 <= self.sticky_prob < 1.0:
            raise UserError(f"sticky_prob must be in [0, 1), got {self.sticky_prob}")
        return self


def load_sweep_settings(path: str | Path | None, game: str, preset: str | None = None) -> SweepSettings:
    """The ``sweep`` section of a YAML config, updated by the section named after ``game`` then by ``preset``."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_yaml(path)
    values = merged_section(data, "sweep", display_name(rom_id(game)))
    if preset is not None:
        if preset not in data:
            presets = [k for k in data if k != "sweep" and not k[:1].isupper()]
            raise UserError(f"config {path} has no preset '{preset}' (presets: {', '.join(presets) or 'none'})")
        values.update(data[preset] or {})
    return build_dataclass(SweepSettings, values, str(path)).validate()


def make_rule(method: str, threshold: float) -> ExitRule:
    """The exit rule of one sweep setting: ``inf`` = the full policy; PBEE = patience; else max-probability."""
    if threshold == FULL:
        return FULL_RULE
    if method == "pbee":
        if float(threshold) != int(threshold) or threshold < 0:
            raise UserError(f"pbee thresholds are patience values (non-negative integers), got {threshold!r}")
        return PatienceExit(int(threshold))
    if method not in CONFIDENCE_METHODS:
        raise UserError(f"unknown method {method!r}; accepted: {', '.join(AGENT_METHODS)}")
    return MaxProbExit(float(threshold))


def rule_label(method: str, threshold: float) -> str:
    """Human-readable rule of a setting: ``full``, ``patience=2`` or ``max_prob>0.8``."""
    if threshold == FULL:
        return "full"
    if method == "pbee":
        return f"patience={int(threshold)}"
    return f"max_prob>{threshold:g}"


def setting_thresholds(method: str, settings: SweepSettings, num_ics: int) -> list[float]:
    """Thresholds swept for ``method`` (ascending), the full policy last."""
    if method == "pbee":
        values = [float(p) for p in (settings.patience or range(1, num_ics + 1))]
    else:
        values = [float(t) for t in settings.thresholds]
    return sorted(set(values)) + [FULL]


# --- one setting ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One method and threshold of a sweep, measured on full games.

    Attributes:
        method, threshold, rule: the setting (threshold ``inf`` = the full policy).
        episodes: games played; returns: their raw scores, in the order they finished (empty when read from CSV).
        return_mean, return_std, return_min, return_max: over those games (std: population, as SB3).
        inference_time: FLOPs of all counted decisions / (decisions × the expert's FLOPs per decision).
        agreement: fraction of decisions whose action equals the expert's argmax action on the same state.
        us_per_decision: measured wall-clock µs of ``policy.act`` per decision (batch of ``n_envs``).
        decisions: decisions counted (those of games that count towards ``episodes``).
        exit_rates: fraction of decisions answered at each exit ``1 .. M``, then the final (expert's) head.
    """

    method: str
    threshold: float
    rule: str
    episodes: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float
    inference_time: float
    agreement: float
    us_per_decision: float
    decisions: int
    exit_rates: tuple[float, ...]
    returns: tuple[float, ...] = ()

    @property
    def is_full(self) -> bool:
        """True for the full policy (the expert)."""
        return self.threshold == FULL

    def with_method(self, method: str) -> SweepRow:
        """The same measurements under another method's name (the full policy is shared by every method)."""
        return dataclasses.replace(self, method=method, rule=rule_label(method, self.threshold))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the full policy's threshold is ``null`` (JSON has no infinity)."""
        d = dataclasses.asdict(self)
        d["threshold"] = None if self.is_full else self.threshold
        d["exit_rates"] = list(self.exit_rates)
        d["returns"] = list(self.returns)
        return d


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
    policy: EarlyExitPolicy,
    rule: ExitRule,
    game: str,
    *,
    episodes: int,
    n_envs: int,
    seed: int,
    sticky_prob: float = 0.1,
) -> tuple[EpisodeStats, DecisionTally]:
    """Play ``episodes`` full games with ``policy.act(obs, rule)``: the episode stats and the decision tally.

    Games run in ``min(n_envs, episodes)`` parallel evaluation envs seeded ``seed, seed + 1, ...``; each batched
    decision is one ``policy.act`` call (batch-shrinking inference), timed on its own; the expert's action on the
    same states (for the agreement) is computed outside the timed call.
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

    env = make_atari_env(game, min(n_envs, episodes), training=False, sticky_prob=sticky_prob, seed=seed)
    try:
        stats = run_episodes(act, env, episodes, on_step=remember_counted)
    finally:
        env.close()
    return stats, tally


def evaluate_setting(
    policy: EarlyExitPolicy,
    method: str,
    threshold: float,
    game: str,
    *,
    episodes: int,
    n_envs: int,
    seed: int,
    sticky_prob: float = 0.1,
) -> SweepRow:
    """Play ``episodes`` full games with ``policy`` under the setting's rule and measure them (see :class:`SweepRow`).

    Games run in ``min(n_envs, episodes)`` parallel evaluation envs seeded ``seed, seed + 1, ...``; each batched
    decision is one ``policy.act`` call (batch-shrinking inference), timed on its own; the expert's action on the
    same states (for the agreement) is computed outside the timed call.
    """
    rule = make_rule(method, threshold)
    stats, tally = play_games(
        policy, rule, game, episodes=episodes, n_envs=n_envs, seed=seed, sticky_prob=sticky_prob
    )
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


# --- the sweep ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A whole sweep: every row, the expert's row, and what the costs are relative to.

    Attributes:
        game: ALE ROM id.
        settings: what was swept.
        rows: one per method and threshold (each method's full-policy row last).
        expert: the full policy's row (method ``expert``).
        backbone_flops: FLOPs of one plain expert decision.
        exit_costs: cost of answering at each exit ``1 .. M`` and at the final head, as fractions of the expert's
            (per method, as their heads differ).
        torch_threads: intra-op threads while playing.
        wall_time_s: how long the sweep took.
    """

    game: str
    settings: SweepSettings
    rows: tuple[SweepRow, ...]
    expert: SweepRow
    backbone_flops: int
    exit_costs: dict[str, tuple[float, ...]]
    torch_threads: int
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "game": self.game,
            "settings": dataclasses.asdict(self.settings),
            "backbone_flops": self.backbone_flops,
            "exit_costs": {m: list(c) for m, c in self.exit_costs.items()},
            "torch_threads": self.torch_threads,
            "wall_time_s": round(self.wall_time_s, 1),
            "expert": self.expert.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
        }


def check_agent_files(agent_dir: str | Path, methods: Sequence[str]) -> None:
    """Raise a one-line :class:`UserError` naming the first file of ``methods``' agents that does not exist."""
    for method in methods:
        paths = agent_paths(agent_dir, method)
        for path in (paths.expert, paths.heads):
            if not path.is_file():
                raise UserError(f"agent file not found: {path} (needed for method {method})")


def load_agents(agent_dir: str | Path, methods: Sequence[str], game: str) -> dict[str, EarlyExitPolicy]:
    """Load every method's agent first (pbee shares the sdn heads), so a missing file fails before any game."""
    check_agent_files(agent_dir, methods)
    loaded: dict[Path, EarlyExitPolicy] = {}
    policies = {}
    for method in methods:
        paths = agent_paths(agent_dir, method)
        if paths.heads not in loaded:
            loaded[paths.heads] = load_early_exit_agent(paths.expert, paths.heads, game=game)
        policies[method] = loaded[paths.heads]
    return policies


#: The agents of a sweep's worker processes (set before they fork, or loaded by :func:`_init_worker`).
_WORKER_AGENTS: dict[str, EarlyExitPolicy] = {}


def _init_worker(agent_dir: str, methods: Sequence[str], game: str, torch_threads: int) -> None:
    """Worker start-up: one intra-op thread budget, and the agents (inherited when forked, else loaded)."""
    torch.set_num_threads(torch_threads)
    if not _WORKER_AGENTS:
        _WORKER_AGENTS.update(load_agents(agent_dir, methods, game))


def _player(agents: dict[str, EarlyExitPolicy], method: str) -> EarlyExitPolicy:
    """The agent that plays ``method``'s settings; the full policy (``expert``, no head runs) is the first one."""
    return next(iter(agents.values())) if method == "expert" else agents[method]


def _play_in_worker(method: str, threshold: float, game: str, play: dict[str, Any]) -> SweepRow:
    return evaluate_setting(_player(_WORKER_AGENTS, method), method, threshold, game, **play)


def _play_settings(
    jobs: Sequence[tuple[str, float]],
    policies: dict[str, EarlyExitPolicy],
    game: str,
    play: dict[str, Any],
    settings: SweepSettings,
    agent_dir: str | Path | None = None,
) -> Iterable[tuple[tuple[str, float], SweepRow]]:
    """Play every ``(method, threshold)`` job (method ``expert`` = the full policy) and yield ``(job, row)`` as each
    finishes: in order in this process with one worker, else in a pool of ``settings.workers`` processes."""
    if settings.workers == 1 or len(jobs) == 1:
        for method, threshold in jobs:
            yield (method, threshold), evaluate_setting(_player(policies, method), method, threshold, game, **play)
        return
    # Fork where the OS has it: the children inherit the loaded agents (and the parent's module state); elsewhere
    # each worker loads them again. Every setting seeds its own envs, so the order of completion does not matter.
    methods = list(policies)
    forking = "fork" in multiprocessing.get_all_start_methods()
    _WORKER_AGENTS.clear()
    if forking:
        _WORKER_AGENTS.update(policies)
    context = multiprocessing.get_context("fork" if forking else "spawn")
    try:
        with ProcessPoolExecutor(
            max_workers=min(settings.workers, len(jobs)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(str(agent_dir), methods, game, settings.torch_threads),
        ) as pool:
            futures = {pool.submit(_play_in_worker, m, t, game, play): (m, t) for m, t in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()
    finally:
        _WORKER_AGENTS.clear()


def run_sweep(
    env: str,
    agent_dir: str | Path,
    settings: SweepSettings | None = None,
    *,
    progress: bool = True,
    on_row: Callable[[SweepRow], None] | None = None,
) -> SweepResult:
    """Sweep every method and threshold of ``settings`` with the agent in ``agent_dir`` on game ``env``.

    The agent directory holds ``expert.zip`` and ``exits-<method>.pt`` (see :func:`ee_rl.rl.policy.agent_paths`).
    Sets torch's intra-op threads to ``settings.torch_threads`` while playing (restored after). ``on_row`` is
    called with every finished row (e.g. to log it).
    """
    settings = (settings or SweepSettings()).validate()
    game = rom_id(env)
    policies = load_agents(agent_dir, settings.methods, game)
    jobs = [(m, t) for m in settings.methods for t in setting_thresholds(m, settings, policies[m].num_ics)[:-1]]
    play = dict(
        episodes=settings.episodes, n_envs=settings.n_envs, seed=settings.seed, sticky_prob=settings.sticky_prob
    )
    expert_player = _player(policies, "expert")
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.torch_threads)
    start = time.time()
    measured: dict[tuple[str, float], SweepRow] = {}
    try:
        bar = tqdm(total=len(jobs) + 1, desc=f"sweep {display_name(game)}", unit="setting", disable=not progress)
        with bar:
            for job, row in _play_settings(
                [("expert", FULL), *jobs], policies, game, play, settings, agent_dir
            ):
                measured[job] = row
                bar.set_postfix_str(f"{row.method} {row.rule}")
                bar.update()
                if on_row is not None:
                    on_row(row)
    finally:
        torch.set_num_threads(threads)
    expert = measured[("expert", FULL)]
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


# --- budget selection -----------------------------------------------------------------------------------------


def _choose(
    rows: Iterable[SweepRow], select: Callable[[list[OperatingPoint]], OperatingPoint | None]
) -> SweepRow | None:
    """Apply a core selection rule to rows seen as operating points (cost = inference time, score = return)."""
    pairs = [(OperatingPoint(r.threshold, r.inference_time, r.return_mean, r.exit_rates), r) for r in rows]
    point = select([p for p, _ in pairs])
    return next((r for p, r in pairs if p is point), None)


def _by_method(rows: Sequence[SweepRow]) -> dict[str, list[SweepRow]]:
    groups: dict[str, list[SweepRow]] = {}
    for r in rows:
        groups.setdefault(r.method, []).append(r)
    return groups


def select_by_budget(rows: Sequence[SweepRow], budget: float) -> dict[str, SweepRow | None]:
    """Per method, the paper's rule: the highest threshold whose measured inference time ≤ ``budget``.

    ``budget`` is a fraction of the expert's FLOPs (0.5 = 50 %). None for a method no setting fits.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise UserError(f"--budget must be a positive fraction of the expert's FLOPs (e.g. 0.5), got {budget!r}")
    return {
        method: _choose(group, lambda points: select_within_budget(points, float(budget)))
        for method, group in _by_method(rows).items()
    }


def expert_return(rows: Sequence[SweepRow], method: str | None = None) -> float:
    """Mean return of the full policy (the expert) in ``rows``: ``method``'s own full row, if given and present.

    Rows appended by other tools (``selfxit.py`` adds one ``selfxit`` row) have no full row of their own; the
    expert is the same for every method, so they are compared with the sweep's.
    """
    full = [r for r in rows if r.is_full and (method is None or r.method == method)]
    full = full or [r for r in rows if r.is_full]
    if not full:
        raise UserError("the sweep has no full-policy row (threshold inf) to compare returns with")
    return full[0].return_mean


def select_by_max_drop(rows: Sequence[SweepRow], max_drop: float) -> dict[str, SweepRow | None]:
    """Per method, the cheapest setting whose mean return is within ``max_drop`` points of the expert's.

    The expert's return is the method's full-policy row (so the full policy itself always qualifies).
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise UserError(f"--max-drop must be a non-negative number of points (e.g. 1.0), got {max_drop!r}")
    chosen: dict[str, SweepRow | None] = {}
    for method, group in _by_method(rows).items():
        reference = expert_return(rows, method)
        chosen[method] = _choose(group, lambda points: select_cheapest_within_drop(points, reference, float(max_drop)))
    return chosen


# --- writers --------------------------------------------------------------------------------------------------


def csv_columns(num_ics: int) -> list[str]:
    """The CSV header for agents with ``num_ics`` internal exits."""
    return [*CSV_COLUMNS, *(f"exit_rate_{m + 1}" for m in range(num_ics)), "exit_rate_final"]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if value == FULL else repr(round(value, 6))
    return str(value)


def write_csv(rows: Sequence[SweepRow], path: str | Path) -> Path:
    """Write one line per row (columns: :func:`csv_columns`), atomically."""
    if not rows:
        raise ValueError("write_csv needs at least one row")
    num_ics = len(rows[0].exit_rates) - 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(num_ics))
    for r in rows:
        values = [getattr(r, c) for c in CSV_COLUMNS] + list(r.exit_rates)
        writer.writerow([_format(v) for v in values])
    return atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[SweepRow]:
    """Read a sweep CSV written by :func:`write_csv`; a missing or malformed file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep table not found: {path}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in (*CSV_COLUMNS, "exit_rate_final") if c not in header]
        if missing:
            raise UserError(f"{path} is not a sweep table: missing column(s) {', '.join(missing)}")
        exits = [c for c in header if c.startswith("exit_rate_") and c != "exit_rate_final"] + ["exit_rate_final"]
        rows = []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(
                    SweepRow(
                        method=record["method"],
                        threshold=float(record["threshold"]),
                        rule=record["rule"],
                        episodes=int(record["episodes"]),
                        **{c: float(record[c]) for c in CSV_COLUMNS[4:-1]},
                        decisions=int(record["decisions"]),
                        exit_rates=tuple(float(record[c]) for c in exits),
                    )
                )
            except (TypeError, ValueError) as exc:
                raise UserError(f"{path} line {line}: bad value ({exc})") from None
    if not rows:
        raise UserError(f"{path} holds no rows")
    return rows


def selection_summary(
    rows: Sequence[SweepRow], budget: float | None = None, max_drop: float | None = None
) -> dict[str, Any]:
    """JSON-ready budget selections: per method the chosen row (or None) for ``budget`` and ``max_drop``."""
    out: dict[str, Any] = {}
    if budget is not None:
        out["budget"] = {
            "budget": budget,
            "selected": {m: (r.to_dict() if r else None) for m, r in select_by_budget(rows, budget).items()},
        }
    if max_drop is not None:
        out["max_drop"] = {
            "max_drop": max_drop,
            "expert_return": expert_return(rows),
            "selected": {m: (r.to_dict() if r else None) for m, r in select_by_max_drop(rows, max_drop).items()},
        }
    return out


def write_json(result: SweepResult, path: str | Path, selections: dict[str, Any] | None = None) -> Path:
    """Write the whole sweep (and any budget selections) as JSON, atomically."""
    return atomic_write_json(path, {**result.to_dict(), "selections": selections or {}})


def plot_sweep(rows: Sequence[SweepRow], path: str | Path, title: str | None = None) -> Path:
    """Return vs inference time: one line per method (mean, ±std band), the expert as a horizontal reference.

    Points are ordered by inference time; the full-policy rows form the expert line, not a method's point.
    Written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r.is_full]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        if full:
            e = full[0]
            ax.axhline(e.return_mean, color="black", linestyle="--", linewidth=1, label="expert (100 %)")
            ax.axhspan(e.return_mean - e.return_std, e.return_mean + e.return_std, color="black", alpha=0.07)
        for method, group in _by_method([r for r in rows if not r.is_full]).items():
            group = sorted(group, key=lambda r: (r.inference_time, r.threshold))
            x = np.array([100 * r.inference_time for r in group])
            mean = np.array([r.return_mean for r in group])
            std = np.array([r.return_std for r in group])
            (line,) = ax.plot(x, mean, marker="o", markersize=4, label=method.upper())
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("inference time (% of the expert's FLOPs per decision)")
        ax.set_ylabel("return (mean ± std over games)")
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def default_out_dir(game: str) -> Path:
    """``runs/sweep/<Game>/``."""
    return Path("runs") / "sweep" / display_name(rom_id(game))


def write_sweep(result: SweepResult, out_dir: str | Path, selections: dict[str, Any] | None = None) -> list[Path]:
    """Write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    s = result.settings
    title = (
        f"{display_name(result.game)}: return vs inference time "
        f"({s.episodes} games per point, sticky p={s.sticky_prob:g})"
    )
    return [
        write_csv(result.rows, out_dir / "sweep.csv"),
        write_json(result, out_dir / "sweep.json", selections),
        plot_sweep(result.rows, out_dir / "sweep.png", title),
    ]


def format_table(rows: Sequence[SweepRow]) -> str:
    """A plain-text table of the rows (for the terminal)."""
    num_ics = len(rows[0].exit_rates) - 1 if rows else 0
    exit_names = [f"exit{m + 1}" for m in range(num_ics)] + ["final"]
    header = f"{'method':<7}{'rule':<15}{'return':>15}{'cost':>8}{'agree':>7}{'µs/dec':>9}" + "".join(
        f"{n:>7}" for n in exit_names
    )
    lines = [header]
    for r in rows:
        ret = f"{r.return_mean:+.2f}±{r.return_std:.2f}"
        lines.append(
            f"{r.method:<7}{r.rule:<15}{ret:>15}{100 * r.inference_time:>7.1f}%{100 * r.agreement:>6.1f}%"
            f"{r.us_per_decision:>9.1f}" + "".join(f"{100 * x:>6.1f}%" for x in r.exit_rates)
        )
    return "\n".join(lines)


def format_selection(rows: Sequence[SweepRow], budget: float | None, max_drop: float | None) -> str:
    """One line per method and selection, for the terminal."""
    lines = []
    if budget is not None:
        for method, r in select_by_budget(rows, budget).items():
            what = (
                f"{r.rule}: return {r.return_mean:+.2f} ± {r.return_std:.2f} at {100 * r.inference_time:.1f}% FLOPs"
                if r
                else "no setting fits"
            )
            lines.append(f"budget {100 * budget:g}% · {method}: {what}")
    if max_drop is not None:
        reference = expert_return(rows)
        for method, r in select_by_max_drop(rows, max_drop).items():
            what = (
                f"{r.rule}: return {r.return_mean:+.2f} (expert {reference:+.2f}) "
                f"at {100 * r.inference_time:.1f}% FLOPs"
                if r
                else "none"
            )
            lines.append(f"max drop {max_drop:g} · {method}: {what}")
    return "\n".join(lines)
