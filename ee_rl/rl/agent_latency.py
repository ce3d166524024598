"""Wall-clock µs per decision of a trained early-exit agent vs its expert, on states the agent really visits.

Paths answering the same recorded observations: the expert through SB3's ``PPO.predict`` (what a stock SB3 user
runs); and, per runtime of the agent (eager torch, ONNX Runtime segments), the full network (:meth:`EarlyExitPolicy.act`
with no early exit: the plain backbone), every decision forced out at each IC in turn, and the early-exit agent at a
chosen rule (batch-shrinking inference). Each is timed at batch 1 and at the batch of the parallel envs, at each
requested thread count, in one process. One timed call is a whole pass over the recorded states (so the mix of exits
is the agent's real one); passes of all paths take turns round by round (:func:`ee_rl.core.latency.timed_rounds`) so
background load hits them alike. The median pass is reported per decision, and speed-ups are medians of the
per-round ratios (:func:`ee_rl.core.latency.paired_ratio`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from stable_baselines3 import PPO

from ee_rl.core import ExitRule, MaxProbExit
from ee_rl.core.latency import forced_exit_rule, median_us, paired_ratio, timed_rounds
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.evaluate import record_observations
from ee_rl.rl.policy import EarlyExitPolicy

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
        path: ``sb3_predict``, ``expert_runner`` (the full network, no head), ``exit<m>`` (every decision forced out
            at IC m) or ``early_exit`` (the agent's rule).
        threads: torch (and ONNX Runtime) intra-op threads.
        batch: observations per call (1, or the number of parallel envs).
        us_per_decision: median pass time / decisions in a pass.
        speedup_vs_sb3: ``sb3_predict``'s time / this path's (same threads and batch), median of per-round ratios.
        speedup_vs_expert_runner: the same runtime's ``expert_runner`` time / this path's, likewise (SB3's row: the
            first runtime's).
        runtime: ``sb3`` for SB3's predict, else what answered (``torch`` or ``onnx``).
    """

    path: str
    threads: int
    batch: int
    us_per_decision: float
    speedup_vs_sb3: float
    speedup_vs_expert_runner: float
    runtime: str = "torch"


@dataclasses.dataclass(frozen=True)
class AgentLatency:
    """The whole benchmark: every row, and what the early-exit agent computed on the recorded states.

    Attributes:
        rows: one per path, runtime, batch size and thread count.
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

    def summary(self) -> list[dict]:
        """Per runtime, thread count and batch: ``sb3_predict_us``, ``full_us``, ``exit_us`` (per exit, forced),
        ``early_exit_us`` and the forced exits' speed-ups over SB3's predict and over the same runtime's full
        network (medians of per-round ratios)."""
        out = []
        keys = dict.fromkeys((r.runtime, r.threads, r.batch) for r in self.rows if r.runtime != "sb3")
        for runtime, threads, batch in keys:
            rows = {r.path: r for r in self.rows if (r.runtime, r.threads, r.batch) == (runtime, threads, batch)}
            sb3 = next(r for r in self.rows if (r.runtime, r.threads, r.batch) == ("sb3", threads, batch))
            exits = [rows[p] for p in sorted((p for p in rows if p.startswith("exit")), key=lambda p: int(p[4:]))]
            out.append({
                "runtime": runtime, "threads": threads, "batch": batch,
                "sb3_predict_us": sb3.us_per_decision,
                "full_us": rows["expert_runner"].us_per_decision,
                "exit_us": [r.us_per_decision for r in exits],
                "early_exit_us": rows["early_exit"].us_per_decision,
                "exit_speedup_vs_sb3": [r.speedup_vs_sb3 for r in exits],
                "exit_speedup_vs_full": [r.speedup_vs_expert_runner for r in exits],
            })
        return out

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {
            "summary": self.summary(),
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


def _policy_paths(policy: EarlyExitPolicy, rule: ExitRule) -> dict[str, Callable[[np.ndarray], object]]:
    paths: dict[str, Callable[[np.ndarray], object]] = {"expert_runner": lambda obs: policy.act(obs, _NO_EXIT)}
    for m in range(policy.num_ics):
        paths[f"exit{m + 1}"] = lambda obs, r=forced_exit_rule(policy.num_ics, m): policy.act(obs, r)
    paths["early_exit"] = lambda obs: policy.act(obs, rule)
    return paths


def measure_agent_latency(
    policy: EarlyExitPolicy | Sequence[EarlyExitPolicy],
    expert: PPO,
    rule: ExitRule,
    states: np.ndarray,
    *,
    threads: Sequence[int] = (1, 2),
    repeats: int = 20,
    warmup: int = 2,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> AgentLatency:
    """Time SB3's predict and, for each policy (e.g. the same agent on torch and on ONNX Runtime, see
    :meth:`EarlyExitPolicy.use_runtime`), the full network, every exit forced and the agent's ``rule``, on ``states``
    ``(steps, n_envs, ...)`` at batch 1 and batch ``n_envs``.

    At batch 1 every recorded state is one call; at batch ``n_envs`` every recorded step is one call. Sets torch's
    (and the policies' runtimes') threads to each of ``threads`` in turn (torch's restored after). ``expert`` is the
    PPO the policies were built from. ``clock`` (ns) times the passes (:func:`ee_rl.core.latency.timed_rounds`);
    every path of one thread count takes turns in the same rounds.
    """
    if states.ndim != 5:
        raise ValueError(f"states must be (steps, n_envs, C, H, W), got shape {states.shape}")
    policies = [policy] if isinstance(policy, EarlyExitPolicy) else list(policy)
    runtimes = [p.runtime for p in policies]
    if len(set(runtimes)) != len(runtimes):
        raise ValueError(f"give one policy per runtime, got runtimes {runtimes}")
    steps, n_envs = states.shape[:2]
    singles = [s[None] for s in states.reshape(-1, *states.shape[2:])]
    batched = list(states)
    decisions = steps * n_envs
    paths: dict[tuple[str, str], Callable[[np.ndarray], object]] = {
        ("sb3", "sb3_predict"): lambda obs: expert.predict(obs, deterministic=True),
    }
    for p in policies:
        paths.update({(p.runtime, name): fn for name, fn in _policy_paths(p, rule).items()})
    sizes = [1] if n_envs == 1 else [1, n_envs]
    rows: list[LatencyRow] = []
    previous = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(int(t))
            for p in policies:
                p.set_runtime_threads(int(t))
            keyed = {
                f"{runtime}:{name}@{batch}": _pass(fn, singles if batch == 1 else batched)
                for batch in sizes
                for (runtime, name), fn in paths.items()
            }
            rounds = timed_rounds(keyed, repeats, warmup, clock=clock)
            for batch in sizes:
                sb3 = rounds[f"sb3:sb3_predict@{batch}"]
                for runtime, name in paths:
                    timed = rounds[f"{runtime}:{name}@{batch}"]
                    # SB3's own row: against the first policy's full network, as before runtimes were added
                    full = rounds[f"{runtimes[0] if runtime == 'sb3' else runtime}:expert_runner@{batch}"]
                    rows.append(LatencyRow(
                        path=name,
                        threads=int(t),
                        batch=batch,
                        us_per_decision=median_us(timed) / decisions,
                        # paired per round: robust to the machine's speed drifting during the run
                        speedup_vs_sb3=paired_ratio(sb3, timed),
                        speedup_vs_expert_runner=paired_ratio(full, timed),
                        runtime=runtime,
                    ))
    finally:
        torch.set_num_threads(previous)
    answer = policies[0].act(states.reshape(-1, *states.shape[2:]), rule)
    counts = np.bincount(answer.exit_index, minlength=policies[0].num_ics + 1)
    return AgentLatency(
        rows=tuple(rows),
        inference_time=int(answer.flops.sum()) / (decisions * answer.backbone_flops),
        exit_rates=tuple(float(c) / decisions for c in counts),
        decisions=decisions,
        repeats=repeats,
    )


def format_latency(report: AgentLatency) -> str:
    """A plain-text table of the rows."""
    lines = [f"{'path':<15}{'runtime':>8}{'threads':>8}{'batch':>7}{'µs/decision':>13}{'vs SB3':>9}{'vs full':>9}"]
    for r in report.rows:
        lines.append(
            f"{r.path:<15}{r.runtime:>8}{r.threads:>8}{r.batch:>7}{r.us_per_decision:>13.1f}"
            f"{r.speedup_vs_sb3:>8.2f}x{r.speedup_vs_expert_runner:>8.2f}x"
        )
    shares = ", ".join(f"{100 * x:.1f} %" for x in report.exit_rates)
    lines.append(
        f"early-exit agent on these {report.decisions} states: {100 * report.inference_time:.1f} % of the "
        f"expert's FLOPs; exit shares {shares}"
    )
    return "\n".join(lines)
