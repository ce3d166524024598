"""Tests of ee_rl.rl.evaluate.record_observations on a counting vector env (no emulator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ee_rl.rl.evaluate import record_observations


class CountingEnv:
    """Two envs whose observation is ``[step, last action]``; records every action batch it is stepped with."""

    num_envs = 2

    def __init__(self) -> None:
        self.t = 0
        self.actions: list[np.ndarray] = []

    def reset(self) -> np.ndarray:
        self.t = 0
        return self._obs(np.full(self.num_envs, -1))

    def step(self, actions: np.ndarray) -> tuple:
        self.t += 1
        self.actions.append(np.asarray(actions).copy())
        return self._obs(actions), np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=bool), [{}, {}]

    def _obs(self, actions: np.ndarray) -> np.ndarray:
        return np.stack([np.full(self.num_envs, self.t), actions], axis=1)


def test_keeps_every_stride_th_observation_batch_and_steps_with_act() -> None:
    env = CountingEnv()
    kept = record_observations(lambda obs: obs[:, 0] * 10 + np.arange(2), env, batches=3, stride=2)
    assert kept.shape == (3, 2, 2)
    assert kept[:, 0, 0].tolist() == [0, 2, 4]  # the observations before decisions 0, 2 and 4
    assert kept[1, :, 1].tolist() == [10, 11]  # they show the action taken on the step before
    # One step after each decision up to the last kept one; every action came from act on the current obs.
    assert [a.tolist() for a in env.actions] == [[10 * t, 10 * t + 1] for t in range(5)]


def test_stride_one_keeps_every_batch_in_order() -> None:
    kept = record_observations(lambda obs: np.zeros(2, dtype=np.int64), CountingEnv(), batches=4)
    assert kept[:, :, 0].tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]


@pytest.mark.parametrize(("batches", "stride"), [(0, 1), (2, 0)])
def test_rejects_non_positive_counts(batches: int, stride: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        record_observations(lambda obs: obs[:, 0], CountingEnv(), batches, stride)
