"""ee_rl.rl.agent: the SB3 model contract (predict), both observation layouts, SB3's evaluate_policy on stock SB3
Atari envs, and load_agent's recommended setting."""

from __future__ import annotations

import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_atari_env as sb3_atari_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

import ee_rl.rl.envs as envs
from ee_rl.core import FULL_RULE, MaxProbExit
from ee_rl.errors import UserError
from ee_rl.rl.agent import EarlyExitAgent, load_agent, recommended_threshold
from ee_rl.rl.checkpoint import load_model
from ee_rl.rl.policy import agent_paths, load_early_exit_agent
from ee_rl.rl.sweep import FULL, SweepRow, write_csv
from tests.rl.tiny_agent import shared_tiny_agent


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory):
    return shared_tiny_agent(tmp_path_factory)


@pytest.fixture(scope="module")
def policy(agent_dir):
    paths = agent_paths(agent_dir, "ztw")
    return load_early_exit_agent(paths.expert, paths.heads)


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    env = envs.make_atari_env("Pong", 2, training=False, seed=3, num_threads=1)
    rng = np.random.default_rng(0)
    batches = [env.reset()]
    for _ in range(7):
        batches.append(env.step(rng.integers(0, 6, 2))[0])
    env.close()
    return np.concatenate(batches)  # (16, 4, 84, 84)


def test_predict_is_the_policys_decision_in_either_layout(policy, states) -> None:
    rule = MaxProbExit(0.5)
    agent = EarlyExitAgent(policy, rule)
    expected = policy.act(states, rule)
    actions, state = agent.predict(states)
    assert state is None and actions.tolist() == expected.actions.tolist()
    assert agent.last_exit_index.tolist() == expected.exit_index.tolist()
    assert agent.last_cost_fraction.tolist() == pytest.approx(expected.cost_fraction.tolist())
    channels_last, _ = agent.predict(states.transpose(0, 2, 3, 1))  # SB3's VecFrameStack layout
    assert channels_last.tolist() == expected.actions.tolist()
    single, _ = agent.predict(states[3])
    assert np.ndim(single) == 0 and int(single) == expected.actions[3]


def test_a_threshold_above_one_is_exactly_the_expert(agent_dir, policy, states) -> None:
    expert = load_model(agent_dir / "expert.zip", device="cpu")
    agent = EarlyExitAgent(policy, MaxProbExit(1.5))
    assert agent.predict(states)[0].tolist() == expert.predict(states, deterministic=True)[0].tolist()
    assert set(agent.last_exit_index.tolist()) == {policy.num_ics}


def test_sampling_follows_the_answering_exits_distribution(policy, states) -> None:
    agent = EarlyExitAgent(policy, FULL_RULE, seed=0)
    probs = np.exp(policy.act(states[:1], FULL_RULE).log_probs[0].astype(np.float64))
    draws = np.array([agent.predict(states[0], deterministic=False)[0] for _ in range(3000)])
    frequencies = np.bincount(draws, minlength=len(probs)) / len(draws)
    assert np.abs(frequencies - probs).max() < 0.04  # 3000 draws: binomial SE ≤ 0.009


def test_bad_observations_are_refused(policy, states) -> None:
    agent = EarlyExitAgent(policy, FULL_RULE)
    with pytest.raises(ValueError, match="shape"):
        agent.predict(states[:, :3])
    with pytest.raises(ValueError, match="uint8"):
        agent.predict(states.astype(np.float32))


def test_evaluate_policy_on_stock_sb3_atari_envs_plays_the_experts_games(agent_dir, policy) -> None:
    import ale_py

    gym.register_envs(ale_py)

    def stock_env():
        # SB3's own Atari pipeline: AtariWrapper + Monitor per env, then VecFrameStack (channels last).
        env = sb3_atari_env("PongNoFrameskip-v4", n_envs=2, seed=5, env_kwargs={"max_num_frames_per_episode": 300})
        return VecFrameStack(env, n_stack=4)

    def played(model, env):
        actions: list[list[int]] = []
        record = lambda local, _: actions.append(local["actions"].tolist())  # noqa: E731 (every step's actions)
        episodes = evaluate_policy(model, env, n_eval_episodes=2, return_episode_rewards=True, callback=record)
        return episodes, actions

    agent = EarlyExitAgent(policy, MaxProbExit(1.5))  # τ > 1: never exits early, so it is the expert
    ours, our_actions = played(agent, stock_env())
    expert = load_model(agent_dir / "expert.zip", device="cpu")
    theirs, their_actions = played(expert, VecTransposeImage(stock_env()))
    assert ours == theirs and len(ours[0]) == 2 and our_actions == their_actions

    class ChannelsFirstReference:
        """The policy's own batched decision on channels-first observations (what VecTransposeImage gives)."""

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return policy.act(obs, MaxProbExit(0.9)).actions, None

    early = EarlyExitAgent(policy, MaxProbExit(0.9))
    _, early_actions = played(early, stock_env())
    _, reference_actions = played(ChannelsFirstReference(), VecTransposeImage(stock_env()))
    assert early_actions == reference_actions
    assert len({a for step in early_actions for a in step}) > 1  # the random heads vary: a real comparison


def test_our_vector_env_reports_the_monitor_it_emulates(policy) -> None:
    from stable_baselines3.common.monitor import Monitor

    env = envs.make_atari_env("Pong", 2, training=False, seed=0, num_threads=1, max_episode_frames=240)
    try:
        assert env.env_is_wrapped(Monitor) == [True, True]
        assert env.env_is_wrapped(gym.wrappers.TimeLimit) == [False, False]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # SB3 warns when it cannot tell that scores are the Monitor's
            evaluate_policy(EarlyExitAgent(policy, FULL_RULE), env, n_eval_episodes=2)
    finally:
        env.close()


def test_load_agent_takes_the_cheapest_setting_within_one_point_of_the_sweep(agent_dir, tmp_path) -> None:
    agent = tmp_path / "Pong"
    shutil.copytree(agent_dir, agent)
    with pytest.raises(UserError, match="sweep.csv not found"):
        load_agent(agent, "ztw")

    def row(threshold, cost, ret):
        return SweepRow("ztw", threshold, f"t{threshold}", 10, ret, 1.0, ret, ret, cost, 0.9, 1.0, 10, (0.5, 0.2, 0.3))

    write_csv([row(0.1, 0.4, 15.0), row(0.2, 0.5, 17.2), row(0.3, 0.7, 18.0), row(FULL, 1.0, 18.0)],
              agent / "sweep.csv")
    assert recommended_threshold(agent, "ztw") == 0.2  # 17.2 ≥ 18 - max(1, 5 % of 18); 15.0 is not
    loaded = load_agent(agent, "ztw")
    assert loaded.threshold == 0.2 and loaded.rule == MaxProbExit(0.2)
    assert load_agent(agent, "ztw", threshold=0.7).rule == MaxProbExit(0.7)
    with pytest.raises(UserError, match="no sdn setting"):
        recommended_threshold(agent, "sdn")
    # On a game scored in thousands the tolerance is 5 % of the expert, not 1 point.
    write_csv([row(0.1, 0.4, 7300.0), row(0.5, 0.6, 7700.0), row(FULL, 1.0, 8000.0)], agent / "sweep.csv")
    assert recommended_threshold(agent, "ztw") == 0.5  # 7700 ≥ 8000 - 400; 7300 is not
