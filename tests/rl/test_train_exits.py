"""scripts/train_exits.py end to end: a run killed with SIGKILL resumes its step count; bad input is one line."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ee_rl.rl.checkpoint import META_ATTR, load_model, save_model_atomic, weights_sha256
from ee_rl.rl.distill import load_checkpoint
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.expert import ExpertConfig, build_ppo
from ee_rl.rl.policy import load_early_exit_agent

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_exits.py"
LONG = """
exits:
  total_timesteps: 1_000_000
  n_envs: 2
  n_steps: 8
  n_epochs: 1
  ic_batch_size: 8
  ensemble_batch_size: 16
"""


@pytest.fixture(scope="module")
def expert_zip(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    env = make_atari_env("Pong", 1, seed=0, num_threads=1)
    try:
        model = build_ppo(env, ExpertConfig(n_steps=64, batch_size=64), 0, "cpu", None)
    finally:
        env.close()
    setattr(model, META_ATTR, {"game": "pong", "seed": 0})
    return save_model_atomic(model, tmp_path_factory.mktemp("agent") / "expert.zip")


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--no-progress-bar"],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def test_kill_9_then_resume_continues_the_step_count(tmp_path, expert_zip) -> None:
    config = tmp_path / "long.yaml"
    config.write_text(LONG)
    out = tmp_path / "run"
    checkpoint = out / "checkpoints" / "latest.pt"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--env", "Pong", "--expert", str(expert_zip), "--method", "sdn",
         "--out", str(out), "--config", str(config), "--no-progress-bar"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 240
        while not checkpoint.is_file():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint written in time"
            time.sleep(0.2)
        # While it runs, a second process on the same directory is refused (it would truncate the live run's rows).
        second = run_script("--env", "Pong", "--expert", str(expert_zip), "--method", "sdn", "--out", str(out),
                            "--resume")
        assert second.returncode == 2 and f"in use by another process (pid {proc.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    steps = load_checkpoint(checkpoint)["state"]["num_timesteps"]
    assert steps > 0 and steps % 16 == 0
    shrink = run_script("--env", "Pong", "--expert", str(expert_zip), "--method", "sdn", "--out", str(out),
                        "--resume", "--total-timesteps", "1")
    assert shrink.returncode == 2 and "would end before it started" in shrink.stderr
    done = run_script("--env", "Pong", "--expert", str(expert_zip), "--method", "sdn", "--out", str(out),
                      "--resume", "--total-timesteps", str(steps + 16))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["timesteps"] == steps + 16 and printed["method"] == "sdn"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timesteps"] == steps + 16 and summary["rounds"] == steps // 16 + 1
    assert summary["config"]["n_steps"] == 8  # the run's own settings, kept by the checkpoint
    agent = load_early_exit_agent(expert_zip, out / "exits-sdn.pt", game="Pong")
    assert agent.method.name == "sdn" and agent.expert_sha256 == weights_sha256(load_model(expert_zip, device="cpu"))


def _load_script():
    return importlib.import_module("ee_rl.cli.train_exits")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expert", "{missing}"], "checkpoint not found"),
        (["--expert", "{expert}", "--env", "Breakout"], "was trained on 'pong', not 'breakout'"),
        (["--expert", "{expert}", "--env", "Pongg"], "unknown Atari game 'Pongg'; did you mean Pong"),
        (["--expert", "{expert}", "--method", "sdn", "--additive"], "ablations of ztw"),
        (["--expert", "{expert}", "--cascade-only", "--ensemble-only"], "exclude each other"),
        (["--expert", "{expert}", "--resume", "--out", "{tmp}/nothing"], "nothing to resume"),
        (["--expert", "{expert}", "--config", "{tmp}/none.yaml"], "config file not found"),
        (["--expert", "{expert}", "--device", "gpu0"], "unknown device 'gpu0'"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, expert_zip, capsys, monkeypatch, args, message) -> None:
    script = _load_script()
    values = {"missing": str(tmp_path / "missing.zip"), "expert": str(expert_zip), "tmp": str(tmp_path)}
    argv = [a.format(**values) for a in args]
    monkeypatch.setattr(sys, "argv", ["train_exits.py", "--no-progress-bar", "--out", str(tmp_path / "o"), *argv])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "o" / "checkpoints" / "latest.pt").exists()
