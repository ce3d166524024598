"""Play full games with any policy on a vector of Atari envs and collect raw scores."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

#: A batched policy: uint8 observations (n, 4, 84, 84) → integer actions (n,).
ActFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class EpisodeStats:
    """Raw returns and lengths (agent steps) of finished games, in game-slot order.

    Slot order is each env's first game (env 0, 1, ...), then each env's second game, and so on — not the order in
    which games finished — so that two runs with the same envs, seeds and quota list the same slot at the same
    index, and per-game (paired) differences between two policies line up.
    """

    returns: list[float]
    lengths: list[int]
    steps: int  # agent steps taken in total, including envs past their quota

    def summary(self) -> dict[str, float | int]:
        """mean/std/min/max return and mean length, as plain numbers for JSON."""
        r = np.asarray(self.returns, dtype=np.float64)
        return {
            "episodes": len(self.returns),
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "return_min": float(r.min()),
            "return_max": float(r.max()),
            "length_mean": float(np.mean(self.lengths)),
        }


def episode_quota(n_episodes: int, n_envs: int) -> np.ndarray:
    """How many games each env plays so that they add up to ``n_episodes`` (as SB3's ``evaluate_policy``).

    A fixed quota per env, rather than "the first n games to finish", avoids biasing the mean towards
    short games.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be ≥ 1, got {n_episodes}")
    return np.array([(n_episodes + i) // n_envs for i in range(n_envs)], dtype=np.int64)


def run_episodes(
    act: ActFn,
    env: VecEnv,
    n_episodes: int,
    on_step: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> EpisodeStats:
    """Play ``n_episodes`` full games with ``act`` on ``env`` (an evaluation-mode env: no life-loss terminals).

    ``on_step(obs, active)`` is called before each batched decision with the mask of envs still under
    quota, e.g. to record exit statistics only for the decisions that count. Returns are in slot order (see
    :class:`EpisodeStats`).
    """
    quota = episode_quota(n_episodes, env.num_envs)
    done_count = np.zeros(env.num_envs, dtype=np.int64)
    finished: list[tuple[int, int, float, int]] = []  # (game number on its env, env, return, length)
    obs = env.reset()
    steps = 0
    while (done_count < quota).any():
        active = done_count < quota
        if on_step is not None:
            on_step(obs, active)
        actions = act(obs)
        obs, _, dones, infos = env.step(actions)
        steps += env.num_envs
        for i in np.flatnonzero(dones):
            episode = infos[i].get("episode")
            if episode is not None and done_count[i] < quota[i]:
                finished.append((int(done_count[i]), int(i), float(episode["r"]), int(episode["l"])))
                done_count[i] += 1
    finished.sort()  # slot order, see EpisodeStats
    return EpisodeStats([f[2] for f in finished], [f[3] for f in finished], steps)


def record_observations(act: ActFn, env: VecEnv, batches: int, stride: int = 1) -> np.ndarray:
    """``(batches, n_envs, *obs_shape)``: the observations ``act`` meets while playing ``env`` from a reset.

    The envs take ``act``'s action at every step; the observation batch before every ``stride``-th decision (the
    first included) is kept, until ``batches`` are kept.
    """
    if batches < 1 or stride < 1:
        raise ValueError(f"batches and stride must be positive, got batches={batches}, stride={stride}")
    kept: list[np.ndarray] = []
    obs = env.reset()
    step = 0
    while len(kept) < batches:
        if step % stride == 0:
            kept.append(obs.copy())
        obs = env.step(act(obs))[0]
        step += 1
    return np.stack(kept)
