"""An early-exit agent with stable-baselines3's model contract: ``predict(observation, state, episode_start,
deterministic) -> (actions, None)``, so SB3's ``evaluate_policy``, rl-zoo3-style loops and anything else written
for an SB3 model can run it. Its exit rule is fixed at construction; what the last decisions computed (exit index,
FLOPs) stays readable.

``load_agent("agents/Pong", method="ztw")`` loads a shipped agent at its recommended setting: the cheapest
threshold of the agent's own sweep whose mean return is within 1 point or 5 % of the expert's, whichever is larger
(1 point on Pong, ~400 points on Q*bert).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ee_rl.core import ExitRule, rule_for_method
from ee_rl.errors import UserError
from ee_rl.rl.policy import EarlyExitPolicy, agent_paths, load_early_exit_agent

#: The recommended setting stays within this many points of the expert's return ...
RECOMMENDED_MAX_DROP = 1.0
#: ... or within this fraction of it, whichever allows more (1 point means nothing on a game scored in thousands).
RECOMMENDED_FRACTION = 0.05


class EarlyExitAgent:
    """An :class:`EarlyExitPolicy` playing one exit rule, behind SB3's ``predict``.

    Observations may come in our layout ``(4, 84, 84)`` (frame stack first, as :mod:`ee_rl.rl.envs` gives them)
    or in SB3's ``VecFrameStack`` layout ``(84, 84, 4)``, single or batched. ``deterministic=False`` samples from
    the answering exit's action distribution (SB3's meaning), with the agent's own generator.

    Attributes:
        policy, rule: what decides.
        method, threshold: the setting's name (``ztw``, ``0.1``), for reports.
        last_exit_index, last_flops: per sample of the last :meth:`predict` call, 0-based exit (``num_ics`` = the
            expert's head) and FLOPs spent.
    """

    def __init__(self, policy: EarlyExitPolicy, rule: ExitRule, *, method: str = "", threshold: float | None = None,
                 seed: int | None = None) -> None:
        self.policy = policy
        self.rule = rule
        self.method = method
        self.threshold = threshold
        self.last_exit_index = np.zeros(0, dtype=np.int64)
        self.last_flops = np.zeros(0, dtype=np.int64)
        self._rng = np.random.default_rng(seed)

    @property
    def last_cost_fraction(self) -> np.ndarray:
        """FLOPs of the last decisions as fractions of the plain expert's."""
        return self.last_flops / self.policy.exit_costs.backbone

    def _batch(self, observation: Any) -> tuple[np.ndarray, bool]:
        obs = np.asarray(observation)
        ours = tuple(self.policy.obs_shape)
        sb3 = (*ours[1:], ours[0])  # VecFrameStack stacks frames on the last axis
        if obs.ndim == len(ours):
            obs, vectorized = obs[None], False
        elif obs.ndim == len(ours) + 1:
            vectorized = True
        else:
            raise ValueError(f"observation must have shape {ours} or {sb3}, batched or not; got {obs.shape}")
        if tuple(obs.shape[1:]) == sb3 and sb3 != ours:
            obs = obs.transpose(0, 3, 1, 2)
        elif tuple(obs.shape[1:]) != ours:
            raise ValueError(f"observation must have shape {ours} or {sb3}, batched or not; got {obs.shape}")
        if obs.dtype != np.uint8:
            raise ValueError(f"observations must be uint8 pixels, got {obs.dtype}")
        return np.ascontiguousarray(obs), vectorized

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """SB3's contract: the actions for ``observation`` (batched if it is) and no recurrent state."""
        obs, vectorized = self._batch(observation)
        result = self.policy.act(obs, self.rule)
        actions = result.actions
        if not deterministic:
            probs = np.exp(result.log_probs.astype(np.float64))
            cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
            draws = self._rng.random((len(actions), 1))
            actions = np.minimum((cumulative < draws).sum(axis=1), probs.shape[1] - 1).astype(np.int64)
        self.last_exit_index, self.last_flops = result.exit_index, result.flops
        return (actions if vectorized else actions[0]), None


def recommended_max_drop(expert_return: float) -> float:
    """How far below the expert's mean return the recommended setting may be: 1 point or 5 %, whichever is larger."""
    return max(RECOMMENDED_MAX_DROP, RECOMMENDED_FRACTION * abs(expert_return))


def recommended_threshold(agent_dir: str | Path, method: str) -> float:
    """The cheapest threshold of ``method`` in ``agent_dir/sweep.csv`` within :func:`recommended_max_drop` of the
    expert's return on the sweep's games."""
    from ee_rl.rl.sweep import expert_return, read_csv, select_by_max_drop

    path = Path(agent_dir) / "sweep.csv"
    if not path.is_file():
        raise UserError(f"{path} not found: give a threshold, or sweep the agent first (scripts/sweep.py)")
    rows = read_csv(path)
    max_drop = recommended_max_drop(expert_return(rows))
    row = select_by_max_drop(rows, max_drop).get(method)
    if row is None:
        raise UserError(f"{path} has no {method} setting within {max_drop:g} point(s) of the expert: give a threshold")
    return float(row.threshold)


def load_agent(
    agent_dir: str | Path,
    method: str = "ztw",
    threshold: float | None = None,
    *,
    device: str = "cpu",
    seed: int | None = None,
) -> EarlyExitAgent:
    """Load a shipped agent (``expert.zip`` + ``exits-<method>.pt``) as an SB3-compatible :class:`EarlyExitAgent`.

    ``threshold`` (PBEE: patience) defaults to the agent's recommended setting (:func:`recommended_threshold`).
    """
    paths = agent_paths(agent_dir, method)
    if threshold is None:
        threshold = recommended_threshold(agent_dir, method)
    rule = rule_for_method(method, threshold)
    policy = load_early_exit_agent(paths.expert, paths.heads, device=device)
    return EarlyExitAgent(policy, rule, method=method, threshold=threshold, seed=seed)
