"""End-to-end tests of scripts/train_policy.py: tiny runs, resume after kill -9, and every bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ee_rl.rl.checkpoint import load_model, meta
from ee_rl.rl.expert import extend_schedule_history

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_policy.py"
TINY = """
atari:
  total_timesteps: 512
  n_envs: 2
  learning_rate: lin_2.5e-4
  n_steps: 64
  batch_size: 64
  n_epochs: 1
  clip_range: lin_0.1
  checkpoint_every: 128
"""


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--no-progress-bar"],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_tiny_training_run_leaves_all_outputs(tmp_path, tiny_config):
    out = tmp_path / "run"
    proc = run("--env", "Pong", "--out", str(out), "--config", str(tiny_config), "--eval-episodes", "1")
    assert proc.returncode == 0, proc.stderr
    assert (out / "final.zip").is_file() and (out / "checkpoints" / "latest.zip").is_file()
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    result = json.loads((out / "eval.json").read_text())
    assert result["timesteps"] == 512 and result["episodes"] == 1 and result["game"] == "pong"
    assert {"return_mean", "return_std", "wall_time_s", "steps_per_s"} <= set(result)
    model = load_model(out / "final.zip", game="pong")
    assert model.num_timesteps == 512 and meta(model)["seed"] == 0
    assert os.path.getsize(out / "final.zip") < 20e6


def test_resume_after_kill_continues_the_step_count(tmp_path, tiny_config):
    out = tmp_path / "run"
    config = tmp_path / "long.yaml"
    config.write_text(TINY.replace("total_timesteps: 512", "total_timesteps: 1000000"))
    checkpoint = out / "checkpoints" / "latest.zip"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--env", "Pong", "--out", str(out), "--config", str(config), "--no-progress-bar"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "no checkpoint was written before the kill"
    saved = load_model(checkpoint).num_timesteps
    assert saved >= 128
    proc = run("--env", "Pong", "--out", str(out), "--resume", "--total-timesteps", str(saved + 256), "--eval-episodes", "1")
    assert proc.returncode == 0, proc.stderr
    model = load_model(out / "final.zip")
    assert model.num_timesteps == saved + 256
    # The schedules' end point is the run's target, not target + steps already done (SB3's default when
    # resuming without resetting the count), so learning rate and clip range keep decaying from where they were.
    assert model._total_timesteps == saved + 256
    assert model._current_progress_remaining == 0.0
    # The resume moved the target, so the checkpoint records both segments (publish_expert writes both commands).
    assert meta(model)["schedule_history"] == [
        {"from_step": 0, "total_timesteps": 1000000}, {"from_step": saved, "total_timesteps": saved + 256}
    ]
    # One TensorBoard run; the resumed writer starts with a purge marker at the checkpoint's step, so TensorBoard
    # drops what the killed run logged after its checkpoint instead of showing those steps twice.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    assert [p.name for p in (out / "tb").iterdir()] == ["PPO_1"]
    purges = [
        event.step
        for path in sorted((out / "tb" / "PPO_1").glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        if event.HasField("session_log") and event.session_log.status == event.session_log.START
    ]
    assert purges == [saved]


def _assert_user_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--env", "Pongg"], "did you mean Pong"),
        (["--env", "CartPole-v1"], "not an Atari game"),
        (["--env", "Pong", "--total-timesteps", "0"], "timesteps must be an integer in [1, "),
        (["--env", "Pong", "--total-timesteps", "-5"], "timesteps must be an integer in [1, "),
        (["--env", "Pong", "--n-envs", "0"], "n_envs must be an integer in [1, "),
        (["--env", "Pong", "--eval-episodes", "0"], "positive"),
    ],
)
def test_bad_arguments(tmp_path, args, fragment):
    _assert_user_error(run(*args, "--out", str(tmp_path / "o")), fragment)


def test_resume_with_nothing_to_resume(tmp_path):
    _assert_user_error(run("--env", "Pong", "--out", str(tmp_path / "empty"), "--resume"), "nothing to resume")


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _assert_user_error(run("--env", "Pong", "--out", str(blocker / "sub")), "cannot create output directory")


def test_corrupt_checkpoint_is_reported_and_kept(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "latest.zip"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"garbage, not a zip")
    _assert_user_error(run("--env", "Pong", "--out", str(tmp_path / "run"), "--resume"), "corrupt")
    assert checkpoint.read_bytes() == b"garbage, not a zip"


def test_wrong_game_checkpoint_and_existing_checkpoint_are_never_overwritten(tmp_path, tiny_config):
    out = tmp_path / "run"
    assert run("--env", "Pong", "--out", str(out), "--config", str(tiny_config), "--eval-episodes", "1").returncode == 0
    checkpoint = out / "checkpoints" / "latest.zip"
    before = checkpoint.read_bytes()
    _assert_user_error(run("--env", "Qbert", "--out", str(out), "--resume"), "trained on 'pong', not 'qbert'")
    _assert_user_error(run("--env", "Pong", "--out", str(out)), "already holds a checkpoint")
    _assert_user_error(run("--env", "Pong", "--out", str(out), "--resume", "--n-envs", "3"), "a resumed run keeps them")
    assert checkpoint.read_bytes() == before


def test_episode_csv_keeps_writing_to_the_path_when_the_file_is_replaced(tmp_path) -> None:
    import csv

    from ee_rl.rl.expert import EpisodeCsvCallback

    path = tmp_path / "episodes.csv"
    callback = EpisodeCsvCallback(path, wall_time=lambda: 1.25)
    callback._on_training_start()

    def finish_games(step: int, returns: list[float]) -> None:
        callback.num_timesteps = step
        callback.locals = {"infos": [{"episode": {"r": r, "l": 10}} for r in returns] + [{}]}
        callback._on_step()

    finish_games(100, [-21.0, 3.0])
    # e.g. `git stash` / `git checkout` of a tracked run directory: a new file takes the old one's name
    replacement = tmp_path / "replacement.csv"
    replacement.write_bytes(path.read_bytes())
    os.replace(replacement, path)
    finish_games(200, [5.0])
    rows = list(csv.reader(path.open()))
    assert rows == [
        list(EpisodeCsvCallback.FIELDS),
        ["100", "-21.0", "10", "1.2"],
        ["100", "3.0", "10", "1.2"],
        ["200", "5.0", "10", "1.2"],
    ]


def test_episode_csv_has_one_line_ending_across_a_resume(tmp_path) -> None:
    from ee_rl.rl.expert import EpisodeCsvCallback, truncate_episode_csv

    path = tmp_path / "episodes.csv"
    callback = EpisodeCsvCallback(path, wall_time=lambda: 2.0)
    callback._on_training_start()
    for step in (100, 200, 300):
        callback.num_timesteps = step
        callback.locals = {"infos": [{"episode": {"r": 1.0, "l": 5}}]}
        callback._on_step()
    truncate_episode_csv(path, 200)  # resume from a checkpoint at step 200: the row at 300 goes
    callback._on_training_start()
    callback.num_timesteps = 250
    callback._on_step()
    data = path.read_bytes()
    assert b"\r" not in data
    assert data.decode().splitlines() == [
        ",".join(EpisodeCsvCallback.FIELDS), "100,1.0,5,2.0", "200,1.0,5,2.0", "250,1.0,5,2.0",
    ]


def test_resume_drops_stray_and_torn_rows_of_the_episode_log(tmp_path) -> None:
    from ee_rl.rl.expert import truncate_episode_csv

    path = tmp_path / "episodes.csv"
    path.write_text("timesteps,return,length,wall_time_s\n100,1.0,5,2.0\nsome stray note\n200,2.0,6,3.0\n"
                    "300,3.0,7,4.0\n40")  # a hand-edited line, and the last one torn by a kill mid-write
    assert truncate_episode_csv(path, 250) == 2
    assert path.read_text().splitlines() == ["timesteps,return,length,wall_time_s", "100,1.0,5,2.0", "200,2.0,6,3.0"]


def test_schedule_history_adds_a_segment_only_when_the_target_moves() -> None:
    start = {"total_timesteps": 100, "schedule_history": [{"from_step": 0, "total_timesteps": 100}]}
    assert extend_schedule_history(start, 60, 100) == start["schedule_history"]
    moved = extend_schedule_history(start, 60, 150)
    assert moved == [{"from_step": 0, "total_timesteps": 100}, {"from_step": 60, "total_timesteps": 150}]
    assert start["schedule_history"] == [{"from_step": 0, "total_timesteps": 100}]  # the saved metadata is not edited
    # A checkpoint from before the history: its saved target is taken as the one it started with.
    assert extend_schedule_history({"total_timesteps": 100}, 100, 150)[0] == {"from_step": 0, "total_timesteps": 100}


@pytest.mark.parametrize(
    "line, fragment",
    [("batch_size: 0", "batch_size must be a positive integer, got 0"),
     ("gamma: 1.5", "gamma must be a number in (0, 1], got 1.5"),
     ("sticky_prob: -0.1", "sticky_prob must be a number in [0, 1], got -0.1"),
     ("max_grad_norm: -1", "max_grad_norm must be a number ≥ 0, got -1")],
)
def test_bad_config_values_are_refused_before_anything_is_built(tmp_path, line, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(f"atari:\n  {line}\n")
    _assert_user_error(run("--env", "Pong", "--out", str(tmp_path / "o"), "--config", str(config)), fragment)
    assert not (tmp_path / "o").exists()
