"""Training-speed benchmark: stock SB3 PPO on Atari vs ee_rl's fast setup, same hyper-parameters.

Each variant runs in its own fresh Python process, because :func:`ee_rl.rl.fast_ppo.tune_cpu` changes
process-wide settings (threads, malloc) that would otherwise leak into the stock measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

VARIANTS = ("stock", "ours")


def _stock_model(game: str, seed: int) -> Any:
    """SB3 as documented: ``make_atari_env`` (Python wrappers), ``VecFrameStack``, ``"CnnPolicy"``."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from ee_rl.rl.expert import ExpertConfig, schedule
    from ee_rl.rl.games import display_name

    gym.register_envs(ale_py)
    cfg = ExpertConfig()
    env = VecFrameStack(
        make_atari_env(
            f"ALE/{display_name(game)}-v5",
            n_envs=cfg.n_envs,
            seed=seed,
            env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0},
            wrapper_kwargs={"action_repeat_probability": cfg.sticky_prob},
        ),
        n_stack=4,
    )
    return PPO(
        "CnnPolicy",
        env,
        learning_rate=schedule(cfg.learning_rate),
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=schedule(cfg.clip_range),
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        seed=seed,
        device="cpu",
    )


def _ours_model(game: str, seed: int) -> Any:
    from ee_rl.rl.envs import make_atari_env
    from ee_rl.rl.expert import ExpertConfig, build_ppo
    from ee_rl.rl.fast_ppo import tune_cpu

    tune_cpu()
    cfg = ExpertConfig()
    env = make_atari_env(game, cfg.n_envs, training=True, sticky_prob=cfg.sticky_prob, seed=seed)
    return build_ppo(env, cfg, seed, "cpu", None)


def measure_variant(variant: str, game: str = "pong", steps: int = 8192, warmup: int = 1024, seed: int = 0) -> float:
    """Env steps per second of PPO training (rollouts + updates) for one variant, in this process."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    model = _stock_model(game, seed) if variant == "stock" else _ours_model(game, seed)
    model.learn(warmup)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def compare_training_speed(game: str = "pong", steps: int = 8192, warmup: int = 1024) -> dict[str, float]:
    """Run both variants, each in a fresh subprocess, one after the other; steps/s and the speed-up."""
    rates: dict[str, float] = {}
    for variant in VARIANTS:
        code = (
            "import json; from ee_rl.rl.bench import measure_variant; "
            f"print(json.dumps(measure_variant({variant!r}, {game!r}, {steps}, {warmup})))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        rates[variant] = float(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "stock_steps_per_s": round(rates["stock"], 1),
        "ours_steps_per_s": round(rates["ours"], 1),
        "speedup": round(rates["ours"] / rates["stock"], 2),
    }
