"""The fast PPO path must be the same model as SB3's stock CnnPolicy, only laid out differently."""

import numpy as np
import torch
from stable_baselines3 import PPO

from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.expert import ExpertConfig, build_ppo
from ee_rl.rl.fast_ppo import Uint8RolloutBuffer, scale_pixels_channels_last


def _pair():
    env = make_atari_env("Pong", 2, seed=0)
    ours = build_ppo(env, ExpertConfig(n_steps=16, batch_size=16, n_epochs=1), 0, "cpu", None)
    stock = PPO("CnnPolicy", env, device="cpu", seed=0)
    return env, ours, stock


def test_same_architecture_as_stock_cnn_policy():
    # A custom extractor class makes SB3 default to two extra tanh layers (which do not learn Pong).
    _, ours, stock = _pair()
    shapes = {k: tuple(v.shape) for k, v in ours.policy.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in stock.policy.state_dict().items()}
    assert not any(k.startswith("mlp_extractor.") for k in shapes)


def test_same_outputs_as_stock_cnn_policy_with_the_same_weights():
    env, ours, stock = _pair()
    stock.policy.load_state_dict(ours.policy.state_dict())
    obs = env.reset()
    for _ in range(5):
        obs, *_ = env.step(np.random.default_rng(0).integers(0, 6, 2))
    with torch.no_grad():
        a = ours.policy.get_distribution(ours.policy.obs_to_tensor(obs)[0]).distribution.logits
        b = stock.policy.get_distribution(stock.policy.obs_to_tensor(obs)[0]).distribution.logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pixel_scaling_matches_sb3_bit_for_bit():
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    y = scale_pixels_channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, x.float() / 255.0)


def test_rollout_buffer_keeps_uint8_observations():
    _, ours, _ = _pair()
    ours.learn(32)
    assert isinstance(ours.rollout_buffer, Uint8RolloutBuffer)
    assert ours.rollout_buffer.observations.dtype == np.uint8
