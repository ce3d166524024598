"""ee_rl.rl.zoo: a shipped expert in rl-baselines3-zoo's layout; the zoo's own enjoy plays it when rl_zoo3 is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stable_baselines3 import PPO

from ee_rl.errors import UserError
from ee_rl.rl.checkpoint import load_model
from ee_rl.rl.publish import expert_bytes
from ee_rl.rl.zoo import export_zoo, names_ee_rl_classes, zoo_env_id
from tests.rl.tiny_agent import write_tiny_agent


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    """A tiny agent whose expert.zip is published as ee_rl publishes experts (a plain SB3 zip)."""
    agent = write_tiny_agent(tmp_path_factory.mktemp("zoo") / "Pong")
    assert names_ee_rl_classes(agent / "expert.zip")  # a training checkpoint names ee_rl's fast classes
    (agent / "expert.zip").write_bytes(expert_bytes(load_model(agent / "expert.zip", device="cpu")))
    (agent / "expert_eval.json").write_text(json.dumps({"game": "pong", "seed": 0}))
    return agent


def test_zoo_env_ids() -> None:
    assert zoo_env_id("Pong") == "PongNoFrameskip-v4" and zoo_env_id("ms_pacman") == "MsPacmanNoFrameskip-v4"


def test_the_export_has_the_zoo_layout_and_the_same_expert(agent, tmp_path) -> None:
    run = export_zoo(agent, tmp_path / "zoo")
    assert run == tmp_path / "zoo" / "ppo" / "PongNoFrameskip-v4_1"
    assert (run / "PongNoFrameskip-v4.zip").read_bytes() == (agent / "expert.zip").read_bytes()
    config = yaml.safe_load((run / "PongNoFrameskip-v4" / "config.yml").read_text())
    assert config["env_wrapper"] == ["stable_baselines3.common.atari_wrappers.AtariWrapper"]
    assert config["frame_stack"] == 4 and config["normalize"] is False
    assert yaml.safe_load((run / "PongNoFrameskip-v4" / "args.yml").read_text())["env_kwargs"] is None
    assert PPO.load(run / "PongNoFrameskip-v4.zip", device="cpu").observation_space.shape == (4, 84, 84)


def test_an_expert_naming_ee_rl_classes_is_refused(agent, tmp_path) -> None:
    old = tmp_path / "Old"
    write_tiny_agent(old)  # expert.zip as a training checkpoint: ChannelsLastCnnPolicy
    (old / "expert_eval.json").write_text(json.dumps({"game": "pong"}))
    with pytest.raises(UserError, match="names ee_rl classes; re-publish it"):
        export_zoo(old, tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_rl_zoo3_enjoy_plays_the_exported_expert(agent, tmp_path) -> None:
    pytest.importorskip("rl_zoo3", reason="rl_zoo3 is not installed")
    export_zoo(agent, tmp_path / "zoo")
    result = subprocess.run(
        [sys.executable, "-m", "rl_zoo3.enjoy", "--algo", "ppo", "--env", "PongNoFrameskip-v4", "-f",
         str(tmp_path / "zoo"), "--exp-id", "1", "--no-render", "--deterministic", "-n", "300"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Loading" in result.stdout and "PongNoFrameskip-v4.zip" in result.stdout
