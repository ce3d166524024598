"""Tests of ee_rl.rl.evaluate (run_episodes, record_observations) on scripted vector envs (no emulator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ee_rl.rl.evaluate import episode_quota, record_observations, run_episodes


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


class ScriptedGamesEnv:
    """Envs whose g-th game lasts ``lengths[env][g]`` steps (cyclically) and scores ``100 * env + g`` (an SB3 Monitor's info)."""

    def __init__(self, lengths: list[list[int]]) -> None:
        self.lengths = lengths
        self.num_envs = len(lengths)
        self.game = [0] * self.num_envs
        self.t = [0] * self.num_envs

    def reset(self) -> np.ndarray:
        return np.zeros((self.num_envs, 1))

    def step(self, actions: np.ndarray) -> tuple:
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for i in range(self.num_envs):
            self.t[i] += 1
            if self.t[i] == self.lengths[i][self.game[i] % len(self.lengths[i])]:
                dones[i] = True
                infos[i]["episode"] = {"r": 100 * i + self.game[i], "l": self.t[i]}
                self.game[i] += 1
                self.t[i] = 0
        return np.zeros((self.num_envs, 1)), np.zeros(self.num_envs), dones, infos


def test_returns_are_in_slot_order_whatever_order_the_games_finish_in() -> None:
    # Env 1's games are short and env 0's long, so games finish in the order 100, 101, 0, 102, 1, ...; the
    # stats list each env's first game, then each env's second game (the quota for 5 games on 2 envs is [2, 3]).
    env = ScriptedGamesEnv([[7], [2]])
    stats = run_episodes(lambda obs: np.zeros(2, dtype=np.int64), env, 5)
    assert episode_quota(5, 2).tolist() == [2, 3]
    assert stats.returns == [0, 100, 1, 101, 102]
    assert stats.lengths == [7, 2, 7, 2, 2]
    assert stats.steps == 2 * 14  # env 1 keeps stepping (uncounted) until env 0's second game ends
