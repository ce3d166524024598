import numpy as np
import pytest

from ee_rl.errors import UserError
from ee_rl.rl.envs import AtariVecEnv, StickyActions, make_atari_env
from ee_rl.rl.games import PAPER_GAMES


@pytest.mark.parametrize("game", PAPER_GAMES)
def test_paper_games_give_stacked_uint8_frames(game):
    env = make_atari_env(game, 2, seed=0)
    try:
        obs = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert env.observation_space.shape == (4, 84, 84)
        obs, reward, done, infos = env.step(np.zeros(2, dtype=np.int64))
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert reward.dtype == np.float32 and done.shape == (2,) and len(infos) == 2
    finally:
        env.close()


def test_frame_stack_shifts_by_one_frame():
    env = make_atari_env("Pong", 1, seed=0, sticky_prob=0.0)
    obs = env.reset()
    for _ in range(60):
        new, *_ = env.step(np.array([2]))
        np.testing.assert_array_equal(new[0, :3], obs[0, 1:])
        obs = new
    env.close()


def test_sticky_actions_repeat_with_probability_p():
    sticky = StickyActions(n_envs=1000, p=0.1, seed=0)
    repeated = 0
    total = 0
    for step in range(40):
        requested = np.full(1000, 1 + step % 2)  # alternate 1, 2: any repeat is visible
        executed = sticky(requested)
        if step > 0:
            repeated += int((executed != requested).sum())
            total += 1000
    rate = repeated / total
    # P(executed != requested) = p * P(previous executed != requested) = p * (1 - p*(...)) ≈ p (1 - p/(1+p))
    expected = 0.1 * (1 - 0.1 / 1.1)
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / total)


def test_sticky_probability_zero_never_repeats_and_bad_p_rejected():
    sticky = StickyActions(4, 0.0, seed=0)
    for a in range(6):
        np.testing.assert_array_equal(sticky(np.full(4, a)), np.full(4, a))
    with pytest.raises(UserError):
        StickyActions(4, 1.0)


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_sticky_reset_at_game_start_never_rewrites_the_callers_actions(p):
    # SB3's PPO steps the env with its int64 action array and stores that same array in the rollout buffer
    # afterwards: a game ending in that step must not turn the stored action into NOOP.
    sticky = StickyActions(2, p, seed=0)
    requested = np.array([3, 4], dtype=np.int64)
    executed = sticky(requested)
    sticky.reset(np.array([True, False]))  # env 0's game ended: its next previous action is NOOP
    np.testing.assert_array_equal(requested, [3, 4])
    assert sticky.previous[0] == 0 and sticky.previous[1] == executed[1]
    always = StickyActions(1, 0.999999, seed=0)
    always(np.array([5]))
    always.reset()
    assert always(np.array([2]))[0] == 0  # a new game repeats NOOP, never the last game's action


def test_env_applies_sticky_actions_once():
    env = make_atari_env("Pong", 8, seed=3, sticky_prob=0.25)
    env.reset()
    changed = total = 0
    for step in range(300):
        requested = np.full(8, 2 + step % 2)
        env.step(requested)
        if step:
            changed += int((env.sticky.previous != requested).sum())
            total += 8
    env.close()
    expected = 0.25 * (1 - 0.25 / 1.25)
    assert abs(changed / total - expected) < 4 * np.sqrt(expected * (1 - expected) / total)


def test_max_pool_takes_the_brighter_of_the_last_two_frames():
    # Same seed, same actions, no randomness: pooled frames are pixel-wise ≥ unpooled ones (max is
    # monotone under area resizing) and differ where the ball moved.
    kwargs = dict(seed=5, sticky_prob=0.0, noop_max=0)
    pooled, plain = AtariVecEnv("Pong", 1, max_pool=True, **kwargs), AtariVecEnv("Pong", 1, max_pool=False, **kwargs)
    a, b = pooled.reset(), plain.reset()
    differs = False
    for step in range(120):
        action = np.array([2 + step % 2])
        a, *_ = pooled.step(action)
        b, *_ = plain.step(action)
        assert (a.astype(int) >= b.astype(int)).all()
        differs |= bool((a != b).any())
    assert differs
    pooled.close()
    plain.close()


def _play_until_game_over(training: bool):
    env = make_atari_env("Breakout", 1, training=training, seed=0, sticky_prob=0.0)
    env.reset()
    rng = np.random.default_rng(0)
    dones, lives_at_done, episodes = [], [], []
    for _ in range(5000):
        _, reward, done, infos = env.step(rng.integers(0, 4, 1))
        if done[0]:
            dones.append(infos[0])
            if "episode" in infos[0]:
                break
    env.close()
    return dones


def test_life_loss_is_terminal_only_in_training():
    train_dones = _play_until_game_over(training=True)
    eval_dones = _play_until_game_over(training=False)
    assert len(eval_dones) == 1 and "episode" in eval_dones[0]  # one done: the real game over
    assert len(train_dones) == 5  # Breakout: 5 lives, the last loss is the game over
    assert all("episode" not in info for info in train_dones[:-1])
    assert "episode" in train_dones[-1]


def test_rewards_are_sign_clipped_in_training_only():
    def rewards(training: bool) -> set[float]:
        env = make_atari_env("Breakout", 4, training=training, seed=1, sticky_prob=0.0)
        env.reset()
        seen: set[float] = set()
        for step in range(1500):
            _, reward, _, _ = env.step(np.full(4, 1 if step % 20 == 0 else 2 + (step // 7) % 2))
            seen.update(reward.tolist())
        env.close()
        return seen

    assert rewards(True) <= {0.0, 1.0}
    assert max(rewards(False)) >= 1.0


def test_finished_games_report_raw_episode_statistics():
    env = make_atari_env("Pong", 2, training=False, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    total = np.zeros(2)
    for _ in range(4000):
        _, reward, done, infos = env.step(rng.integers(0, 6, 2))
        total += reward
        if done.any():
            i = int(np.flatnonzero(done)[0])
            assert infos[i]["episode"]["r"] == total[i] <= -1
            assert infos[i]["terminal_observation"].shape == (4, 84, 84)
            break
    else:
        pytest.fail("no Pong game finished in 4000 steps")
    env.close()
