"""A freshly initialised PPO expert + random early-exit heads on disk, in the shipped layout (for sweep/video tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ee_rl.core.method import exit_method
from ee_rl.core.fingerprint import file_sha256
from ee_rl.rl.checkpoint import META_ATTR, save_model_atomic
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.expert import ExpertConfig, build_ppo
from ee_rl.rl.policy import EarlyExitPolicy, save_exit_heads

GAME = "pong"
#: Multiplies the random ICs' linear weights so that their confidences spread over (1/K, 1) instead of ~1/K.
HEAD_SCALE = 20.0


def write_tiny_agent(agent_dir: Path, seed: int = 0) -> Path:
    """Write ``agent_dir/expert.zip`` (untrained PPO, NatureCNN) and random ``exits-ztw.pt`` / ``exits-sdn.pt``."""
    agent_dir.mkdir(parents=True, exist_ok=True)
    env = make_atari_env(GAME, 1, training=True, seed=seed, num_threads=1)
    try:
        model = build_ppo(env, ExpertConfig(n_steps=64, batch_size=64), seed, "cpu", None)
    finally:
        env.close()
    setattr(model, META_ATTR, {"game": GAME, "seed": seed})
    expert_path = save_model_atomic(model, agent_dir / "expert.zip")
    sha = file_sha256(expert_path)
    for offset, method in enumerate(("ztw", "sdn")):
        policy = EarlyExitPolicy.from_expert(
            model.policy, exit_method(method), game=GAME, expert_sha256=sha, seed=seed + 1 + offset
        )
        with torch.no_grad():
            for head in policy.model.heads:
                head.linear.weight.mul_(HEAD_SCALE)
        save_exit_heads(agent_dir / f"exits-{method}.pt", policy)
    return agent_dir


_SHARED: dict[Path, Path] = {}


def shared_tiny_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny agent per test session (read-only for the tests that use it): written on first use."""
    base = tmp_path_factory.getbasetemp()
    if base not in _SHARED:
        _SHARED[base] = write_tiny_agent(tmp_path_factory.mktemp("tiny_agent") / "Pong")
    return _SHARED[base]
