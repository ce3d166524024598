"""Tests of ee_rl.rl.publish and scripts/publish_expert.py on a tiny PPO (few steps) and a small episodes.csv."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticCnnPolicy

from ee_rl.errors import UserError
from ee_rl.rl import publish
from ee_rl.rl.checkpoint import META_ATTR, load_model, save_model_atomic
from ee_rl.rl.envs import make_atari_env
from ee_rl.rl.expert import ExpertConfig, build_ppo, evaluate_model
from ee_rl.rl.expert_card import training_commands_text
from ee_rl.rl.learning_curve import learning_curve_csv, read_episode_log, rolling_mean
from ee_rl.rl.provenance import resume_commands, train_command
from ee_rl.rl.publish import ReturnBelowMinimum, expert_bytes, publish_expert

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "publish_expert.py"
TINY = ExpertConfig(n_envs=1, n_steps=64, batch_size=64, n_epochs=1)
#: Training games logged by the fake run; the last two come after the checkpoint's 64 steps.
EPISODE_ROWS = [(16, -21.0, 760, 1.5), (40, -20.0, 800, 3.0), (64, -19.0, 820, 4.25), (96, -18.0, 700, 6.0), (128, -15.0, 900, 8.0)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run directory: ``checkpoints/latest.zip`` (64 steps of PPO, so Adam has state) and ``episodes.csv``."""
    run = tmp_path_factory.mktemp("run")
    env = make_atari_env("pong", 1, training=True, seed=0, num_threads=1)
    try:
        model = build_ppo(env, TINY, 0, "cpu", str(run / "tb"))
        model.learn(64)
    finally:
        env.close()
    setattr(model, META_ATTR, {"game": "pong", "seed": 0, "total_timesteps": 64,
                               "config": {**TINY.__dict__, "total_timesteps": 64}, "wall_time_s": 5.0})
    save_model_atomic(model, run / "checkpoints" / "latest.zip")
    with open(run / "episodes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timesteps", "return", "length", "wall_time_s"])
        writer.writerows(EPISODE_ROWS)
    return run


@pytest.fixture(scope="module")
def published(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The one real publish (real evaluation: a full game of Pong) shared by the checks below."""
    out = tmp_path_factory.mktemp("agents") / "Pong"
    result = publish_expert("Pong", run_dir / "checkpoints" / "latest.zip", out, run_dir=run_dir,
                            episodes=1, seed=3, machine="test machine")
    return out, result


def fake_evaluation(mean: float):
    """A stand-in for evaluate_model (file-writing and gate tests only: the real one is checked above)."""
    def evaluate(model, game, n_episodes, seed, sticky_prob):
        return {"episodes": n_episodes, "return_mean": mean, "return_std": 0.0, "return_min": mean,
                "return_max": mean, "length_mean": 100.0, "returns": [mean] * n_episodes,
                "sticky_prob": sticky_prob, "deterministic": True, "env_seeds": [seed], "eval_wall_time_s": 0.0}
    return evaluate


def test_published_expert_loads_where_ee_rl_cannot_be_imported(published):
    out, _ = published
    code = ("import sys; sys.modules['ee_rl'] = None\n"  # any import of ee_rl now fails
            "from stable_baselines3 import PPO\n"
            f"model = PPO.load({str(out / 'expert.zip')!r}, device='cpu')\n"
            "print(type(model.policy).__module__, model.policy.action_space.n)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["stable_baselines3.common.policies", "6"]


def test_published_expert_loads_with_plain_sb3_and_acts_like_the_checkpoint(run_dir, published):
    out, result = published
    checkpoint = run_dir / "checkpoints" / "latest.zip"
    expert = PPO.load(out / "expert.zip", device="cpu")
    original = load_model(checkpoint, device="cpu")
    assert type(expert.policy) is ActorCriticCnnPolicy
    assert expert.rollout_buffer_class is RolloutBuffer  # SB3's own classes: the zip needs nothing of ee_rl
    env = make_atari_env("pong", 2, training=False, seed=11, num_threads=1)
    try:
        obs = env.reset()
        for _ in range(20):  # real observations, incl. some after the ball is served
            obs, *_ = env.step(np.random.default_rng(0).integers(0, 6, size=2))
        observations = np.concatenate([obs, env.reset()])
    finally:
        env.close()
    with torch.no_grad():
        for name in ("action_net", "value_net"):
            for a, b in zip(getattr(expert.policy, name).parameters(), getattr(original.policy, name).parameters()):
                assert torch.equal(a, b)
        dist_e = expert.policy.get_distribution(expert.policy.obs_to_tensor(observations)[0]).distribution.probs
        dist_o = original.policy.get_distribution(original.policy.obs_to_tensor(observations)[0]).distribution.probs
    assert torch.equal(dist_e, dist_o)
    np.testing.assert_array_equal(expert.predict(observations, deterministic=True)[0],
                                  original.predict(observations, deterministic=True)[0])
    size = (out / "expert.zip").stat().st_size
    assert size < checkpoint.stat().st_size * 0.6 and size < publish.MAX_AGENT_FILE_BYTES
    assert len(expert.policy.optimizer.state) == 0 and len(original.policy.optimizer.state) > 0
    assert load_model(out / "expert.zip", game="Pong").num_timesteps == 64  # ee_rl's metadata kept


def test_eval_json_is_the_real_evaluation_and_reproducible_from_the_expert(published):
    out, result = published
    on_disk = json.loads((out / "expert_eval.json").read_text())
    assert on_disk == result
    assert on_disk["episodes"] == 1 and len(on_disk["returns"]) == 1 and -21 <= on_disk["return_mean"] <= 21
    assert on_disk["return_mean"] == on_disk["return_min"] == on_disk["return_max"] == on_disk["returns"][0]
    assert on_disk["sticky_prob"] == 0.1 and on_disk["deterministic"] is True
    assert on_disk["seed"] == 3 and on_disk["env_seeds"] == [3] and on_disk["timesteps"] == 64
    assert on_disk["expert_sha256"] == hashlib.sha256((out / "expert.zip").read_bytes()).hexdigest()
    assert on_disk["expert_bytes"] == (out / "expert.zip").stat().st_size
    assert on_disk["checkpoint_sha256"] == hashlib.sha256(Path(on_disk["checkpoint"]).read_bytes()).hexdigest()
    assert {"ee_rl", "stable_baselines3", "torch", "ale_py"} <= set(on_disk["versions"])
    assert on_disk["date"][:2] == "20" and on_disk["training"]["machine"] == "test machine"
    # Same seeds, same actions → the shipped file scores exactly what was recorded.
    again = evaluate_model(PPO.load(out / "expert.zip", device="cpu"), "pong", 1, 3, 0.1)
    assert again["returns"] == on_disk["returns"]


def test_learning_curve_and_readme(published, run_dir):
    out, result = published
    with open(out / "learning_curve.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for r in EPISODE_ROWS if r[0] <= 64]  # games logged after the checkpoint are left out
    assert [int(r["timesteps"]) for r in rows] == [r[0] for r in kept]
    assert [float(r["return"]) for r in rows] == [r[1] for r in kept]
    np.testing.assert_allclose([float(r["return_mean_100"]) for r in rows], [-21.0, -20.5, -20.0])
    image = Image.open(out / "learning_curve.png")
    assert image.format == "PNG" and image.size == (960, 540)
    readme = (out / "README.md").read_text()
    assert result["training"]["wall_time_s"] == 4.25 and "4 s = 0.00 h" in readme
    assert f"python scripts/train_policy.py --env Pong --out {run_dir} --total-timesteps 64 --n-envs 1" in readme
    assert "--config" in readme  # n_steps etc. differ from configs/ppo_atari.yaml
    assert f"--checkpoint {run_dir / 'checkpoints' / 'latest.zip'} --run-dir {run_dir}" in readme
    assert f"{result['return_mean']:.2f}" in readme and "test machine" in readme and "PPO.load(" in readme
    assert "| `n_steps` | `64` |" in readme and "Env steps: 64" in readme


def test_expert_bytes_are_deterministic_and_leave_the_model_unchanged(run_dir):
    model = load_model(run_dir / "checkpoints" / "latest.zip", device="cpu")
    state_before = {k: v["exp_avg"].clone() for k, v in model.policy.optimizer.state.items()}
    last_obs = model._last_obs.copy()
    first, second = expert_bytes(model), expert_bytes(model)
    assert first == second
    assert {k: v["exp_avg"] for k, v in model.policy.optimizer.state.items()}.keys() == state_before.keys()
    assert all(torch.equal(model.policy.optimizer.state[k]["exp_avg"], v) for k, v in state_before.items())
    np.testing.assert_array_equal(model._last_obs, last_obs)
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.getinfo("policy.optimizer.pth").file_size < 10_000
        assert archive.getinfo("policy.pth").file_size > 1_000_000


def test_rolling_mean_matches_the_definition():
    values = np.random.default_rng(0).normal(size=250)
    for window in (1, 7, 100):
        expected = [values[max(0, i + 1 - window): i + 1].mean() for i in range(len(values))]
        np.testing.assert_allclose(rolling_mean(values, window), expected, rtol=1e-12, atol=1e-12)


def test_episode_log_errors(tmp_path):
    with pytest.raises(UserError, match="episodes.csv"):
        read_episode_log(tmp_path / "episodes.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("timesteps,return\n1,2\n")
    with pytest.raises(UserError, match="lacks column"):
        read_episode_log(bad)
    bad.write_text("timesteps,return,length,wall_time_s\n1,x,3,4\n")
    with pytest.raises(UserError, match="line 2"):
        read_episode_log(bad)
    bad.write_text("timesteps,return,length,wall_time_s\n100,1,3,4\n")
    with pytest.raises(UserError, match="no training game at or before step 50"):
        read_episode_log(bad, max_timesteps=50)
    log = read_episode_log(bad)
    assert learning_curve_csv(log) == "timesteps,return,length,wall_time_s,return_mean_100\n100,1.0,3,4.0,1.0\n"


def test_min_return_gate_writes_nothing(run_dir, published, monkeypatch, tmp_path):
    monkeypatch.setattr(publish, "evaluate_model", fake_evaluation(-5.0))
    checkpoint = run_dir / "checkpoints" / "latest.zip"
    fresh = tmp_path / "new" / "Pong"
    with pytest.raises(ReturnBelowMinimum, match="below --min-return 18") as caught:
        publish_expert("Pong", checkpoint, fresh, run_dir=run_dir, episodes=2, min_return=18)
    assert caught.value.evaluation["return_mean"] == -5.0
    assert not (tmp_path / "new").exists()
    out, _ = published  # an existing agent folder is left exactly as it was
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ReturnBelowMinimum):
        publish_expert("Pong", checkpoint, out, run_dir=run_dir, episodes=2, min_return=-4.5)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_no_curve_publishes_without_run_dir(run_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(publish, "evaluate_model", fake_evaluation(7.0))
    result = publish_expert("Pong", run_dir / "checkpoints" / "latest.zip", tmp_path / "Pong", episodes=2,
                            min_return=7.0, machine="m")
    assert sorted(p.name for p in (tmp_path / "Pong").iterdir()) == ["README.md", "expert.zip", "expert_eval.json"]
    assert result["return_mean"] == 7.0 and result["training"]["wall_time_s"] == 5.0  # from the checkpoint
    readme = (tmp_path / "Pong" / "README.md").read_text()
    assert "--no-curve" in readme and f"--out {run_dir} " in readme  # run dir recovered from the saved tb path


def run_script(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run scripts/publish_expert.py in this process (saves the imports of a subprocess per case)."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--checkpoint", "{run}/checkpoints/missing.zip"], "checkpoint not found"),
        (["--env", "Qbert"], "trained on 'pong', not 'qbert'"),
        (["--env", "Pongg"], "did you mean Pong"),
        (["--episodes", "0"], "episodes must be an integer in [1, "),
        (["--seed", "-1"], "seed must be an integer in [0, "),
        (["--checkpoint", "{tmp}/blocker"], "blocker is corrupt"),
        (["--out", "{tmp}/blocker/Pong"], "is not a directory"),
        (["--run-dir", "{tmp}"], "training log not found"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(run_dir, tmp_path, capsys, monkeypatch, extra, fragment):
    (tmp_path / "blocker").write_text("a file, not a folder")
    args = {"--env": "Pong", "--checkpoint": str(run_dir / "checkpoints" / "latest.zip"),
            "--run-dir": str(run_dir), "--out": str(tmp_path / "out"), "--episodes": "1"}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value.format(run=run_dir, tmp=tmp_path)
    code, _, err = run_script([x for kv in args.items() for x in kv], capsys, monkeypatch)
    one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists()


def test_script_gate_prints_the_evaluation_then_one_line(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(publish, "evaluate_model", fake_evaluation(-3.0))
    code, out, err = run_script(["--env", "Pong", "--checkpoint", str(run_dir / "checkpoints" / "latest.zip"),
                                 "--no-curve", "--out", str(tmp_path / "out"), "--min-return", "18"], capsys, monkeypatch)
    one_line_error(code, err, "mean return -3.00 over 10 games")
    assert json.loads(out)["return_mean"] == -3.0 and not (tmp_path / "out").exists()


def test_real_command_line_reports_a_missing_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--env", "Pong", "--checkpoint", str(tmp_path / "none.zip"),
         "--no-curve", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    one_line_error(proc.returncode, proc.stderr, f"checkpoint not found: {tmp_path / 'none.zip'}")


def test_a_run_resumed_with_a_new_target_is_written_as_its_real_commands() -> None:
    config = ExpertConfig()  # configs' default target: 10 M steps
    history = [{"from_step": 0, "total_timesteps": 10_000_000},
               {"from_step": 10_000_032, "total_timesteps": 15_000_000}]
    run_meta = {"seed": 0, "total_timesteps": 15_000_000, "config": {**config.__dict__, "total_timesteps": 15_000_000},
                "schedule_history": history}
    start = train_command("Pong", "agents/Pong/training", run_meta, config)
    assert start == "python scripts/train_policy.py --env Pong --out agents/Pong/training"  # 10 M is the default
    resumes = resume_commands("Pong", "agents/Pong/training", run_meta)
    assert resumes == [{**history[1], "command": "python scripts/train_policy.py --env Pong --out agents/Pong/training "
                                                 "--resume --total-timesteps 15000000"}]
    text = training_commands_text(start, resumes)
    assert f"`{start}`, then\n  at 10,000,032 env steps `{resumes[0]['command']}`" in text
    assert "reach 0 at 15,000,000 steps" in text
    # Without the history (older checkpoints) the final target is all there is.
    legacy = {k: v for k, v in run_meta.items() if k != "schedule_history"}
    assert train_command("Pong", "d", legacy, config).endswith("--total-timesteps 15000000")
    assert resume_commands("Pong", "d", legacy) == []
    assert training_commands_text("cmd", []).startswith("- Command: `cmd`; after a stop")
