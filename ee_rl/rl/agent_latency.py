"""Wall-clock µs per decision of a trained early-exit agent vs its expert, on states the agent really visits.

Three paths answer the same recorded observations: the expert through SB3's ``PPO.predict`` (what a stock SB3 user
runs), the expert through ee_rl's runner (:meth:`EarlyExitPolicy.act` with no early exit: the plain backbone), and
the early-exit agent at a chosen rule (batch-shrinking inference). Each is timed at batch 1 and at the batch of the
parallel envs, at each requested thread count, in one process. One timed call is a whole pass over the recorded
states (so the mix of exits is the agent's real one); passes of all paths take turns round by round
(:func:`ee_rl.core.latency.timed_rounds`) so background load hits them alike. The median pass is reported per
decision, and speed-ups are medians of the per-round ratios (:func:`ee_rl.core.latency.paired_ratio`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from stable_baselines3 import PPO

from ee_rl.core import ExitRule, MaxProbExit
from ee_rl.core.latency import median_us, paired_ratio, timed_rounds
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.evaluate import record_observations
from ee_rl.rl.policy import EarlyExitPolicy

#: The three paths, in report order.
PATHS = ("sb3_predict", "expert_runner", "early_exit")
_NO_EXIT = MaxProbExit(float("inf"))


def record_states(
    policy: EarlyExitPolicy,
    rule: ExitRule,
    env: str,
    *,
    n_envs: int = 8,
    steps: int = 64,
    seed: int = 10_000,
    sticky_prob: float = 0.1,
) -> np.ndarray:
    """Observations ``(steps, n_envs, 4, 84, 84)`` uint8 visited by ``policy`` acting under ``rule`` (full games)."""
    if steps < 1 or n_envs < 1:
        raise ValueError(f"steps and n_envs must be positive, got steps={steps}, n_envs={n_envs}")
    vec_env = make_atari_env(env, n_envs, training=False, sticky_prob=sticky_prob, seed=seed)
    try:
        return record_observations(lambda obs: policy.act(obs, rule).actions, vec_env, steps)
    finally:
        vec_env.close()


@dataclasses.dataclass(frozen=True)
class LatencyRow:
    """µs per decision of one path at one batch size and thread count.

    Attributes:
        path: ``sb3_predict``, ``expert_runner`` or ``early_exit``.
        threads: torch intra-op threads.
        batch: observations per call (1, or the number of parallel envs).
        us_per_decision: median pass time / decisions in a pass.
        speedup_vs_sb3: ``sb3_predict``'s time / this path's (same threads and batch), median of per-round ratios.
        speedup_vs_expert_runner: ``expert_runner``'s time / this path's, likewise.
    """

    path: str
    threads: int
    batch: int
    us_per_decision: float
    speedup_vs_sb3: float
    speedup_vs_expert_runner: float


@dataclasses.dataclass(frozen=True)
class AgentLatency:
    """The whole benchmark: every row, and what the early-exit agent computed on the recorded states.

    Attributes:
        rows: one per path, batch size and thread count.
        inference_time: the early-exit agent's mean FLOPs per decision on the states / the expert's.
        exit_rates: share of the states answered at each exit (the expert's head last).
        decisions: recorded states (decisions per pass at each batch size).
        repeats: timed passes per path.
    """

    rows: tuple[LatencyRow, ...]
    inference_time: float
    exit_rates: tuple[float, ...]
    decisions: int
    repeats: int

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "inference_time": self.inference_time,
            "exit_rates": list(self.exit_rates),
            "decisions": self.decisions,
            "repeats": self.repeats,
        }


def _pass(fn: Callable[[np.ndarray], object], batches: Sequence[np.ndarray]) -> Callable[[], None]:
    def run() -> None:
        for obs in batches:
            fn(obs)

    return run


def measure_agent_latency(
    policy: EarlyExitPolicy,
    expert: PPO,
    rule: ExitRule,
    states: np.ndarray,
    *,
    threads: Sequence[int] = (1, 2),
    repeats: int = 20,
    warmup: int = 2,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> AgentLatency:
    """Time the three :data:`PATHS` on ``states`` ``(steps, n_envs, ...)`` at batch 1 and batch ``n_envs``.

    At batch 1 every recorded state is one call; at batch ``n_envs`` every recorded step is one call. Sets torch's
    threads to each of ``threads`` in turn (restored after). ``expert`` is the PPO the policy was built from.
    ``clock`` (ns) times the passes (:func:`ee_rl.core.latency.timed_rounds`).
    """
    if states.ndim != 5:
        raise ValueError(f"states must be (steps, n_envs, C, H, W), got shape {states.shape}")
    steps, n_envs = states.shape[:2]
    singles = [s[None] for s in states.reshape(-1, *states.shape[2:])]
    batched = list(states)
    decisions = steps * n_envs
    paths: dict[str, Callable[[np.ndarray], object]] = {
        "sb3_predict": lambda obs: expert.predict(obs, deterministic=True),
        "expert_runner": lambda obs: policy.act(obs, _NO_EXIT),
        "early_exit": lambda obs: policy.act(obs, rule),
    }
    sizes = [1] if n_envs == 1 else [1, n_envs]
    rows: list[LatencyRow] = []
    previous = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(int(t))
            calls = {
                (name, batch): _pass(fn, singles if batch == 1 else batched)
                for batch in sizes
                for name, fn in paths.items()
            }
            keyed = {f"{name}@{batch}": call for (name, batch), call in calls.items()}
            rounds = timed_rounds(keyed, repeats, warmup, clock=clock)
            for batch in sizes:
                timed = {name: rounds[f"{name}@{batch}"] for name in PATHS}
                rows += [
                    LatencyRow(
                        path=name,
                        threads=int(t),
                        batch=batch,
                        us_per_decision=median_us(timed[name]) / decisions,
                        # paired per round: robust to the machine's speed drifting during the run
                        speedup_vs_sb3=paired_ratio(timed["sb3_predict"], timed[name]),
                        speedup_vs_expert_runner=paired_ratio(timed["expert_runner"], timed[name]),
                    )
                    for name in PATHS
                ]
    finally:
        torch.set_num_threads(previous)
    answer = policy.act(states.reshape(-1, *states.shape[2:]), rule)
    counts = np.bincount(answer.exit_index, minlength=policy.num_ics + 1)
    return AgentLatency(
        rows=tuple(rows),
        inference_time=int(answer.flops.sum()) / (decisions * answer.backbone_flops),
        exit_rates=tuple(float(c) / decisions for c in counts),
        decisions=decisions,
        repeats=repeats,
    )


def format_latency(report: AgentLatency) -> str:
    """A plain-text table of the rows."""
    lines = [f"{'path':<15}{'threads':>8}{'batch':>7}{'µs/decision':>13}{'vs SB3':>9}{'vs expert':>11}"]
    for r in report.rows:
        lines.append(
            f"{r.path:<15}{r.threads:>8}{r.batch:>7}{r.us_per_decision:>13.1f}"
            f"{r.speedup_vs_sb3:>8.2f}x{r.speedup_vs_expert_runner:>10.2f}x"
        )
    shares = ", ".join(f"{100 * x:.1f} %" for x in report.exit_rates)
    lines.append(
        f"early-exit agent on these {report.decisions} states: {100 * report.inference_time:.1f} % of the "
        f"expert's FLOPs; exit shares {shares}"
    )
    return "\n".join(lines)
