"""Bad command lines through the real commands (subprocesses): one line on stderr, exit code 2, no traceback, and
nothing created. Bounds come from one place (ee_rl.cli.args), so each kind of value is checked in every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    # (script, arguments, words the message must hold)
    ("sweep", ["--seed=-1"], "seed must be an integer in [0, 4,294,967,295], got -1"),
    ("sweep", ["--seed", "4294967296"], "seed must be an integer in [0, 4,294,967,295]"),
    ("sweep", ["--threads", "100000"], "threads must be an integer in [0, "),
    ("sweep", ["--workers", "100000"], "workers must be an integer in [1, "),
    ("sweep", ["--workers", "0"], "workers must be an integer in [1, "),
    ("sweep", ["--budget", "7"], "must be a fraction in (0, 1] (0.5 = 50 %), got 7"),
    ("sweep", ["--max-drop", "-1"], "must be ≥ 0, got -1"),
    ("sweep", ["--episodes", "0"], "episodes must be an integer in [1, "),
    ("sweep", ["--n-envs", "many"], "expected an integer, got 'many'"),
    ("sweep", ["--executor", "ray", "--ray-address", "head"], "--ray-address: must be 'auto', HOST:PORT or ray://"),
    ("sweep", ["--ray-address", "auto"], "--ray-address needs --executor ray"),
    ("sweep", ["--executor", "serial", "--workers", "2"], "--workers 2 plays settings in local processes"),
    ("sweep", ["--max-episode-frames", "0"], "max_episode_frames must be an integer in [1, 108,000]"),
    ("grid", ["--games", "Pong", "--executor", "ray", "--ray-address", "ray://head"], "--ray-address: must be"),
    ("grid", ["--games", "Pong", "--seeds", "-1"], "seed must be an integer"),
    ("grid", ["--games", "Pong", "--stages", "exits"], "Pong has no expert"),
    ("eval_vision", ["--dataset", "digits", "--executor", "process", "--ray-address", "auto"],
     "--ray-address needs --executor ray"),
    ("record_video", ["--seed=-1"], "seed must be an integer"),
    ("train_policy", ["--seed=-1"], "seed must be an integer"),
    ("train_policy", ["--total-timesteps", "0"], "timesteps must be an integer in [1, "),
    ("train_exits", ["--expert", "x.zip", "--seed=-1"], "seed must be an integer"),
    ("train_exits", ["--expert", "x.zip", "--threads", "-1"], "threads must be an integer in [0, "),
    ("train_vision", ["--dataset", "digits", "--seed=-1"], "seed must be an integer"),
    ("publish_expert", ["--env", "Pong", "--checkpoint", "x.zip", "--out", "o", "--episodes", "0"], "episodes must"),
    ("selfxit", ["--env", "Pong", "--threads", "100000"], "threads must be an integer in [0, "),
    ("selfxit", ["--env", "Pong", "--guarantee", "1"], "must be a probability in (0, 1) (0.1 = 10 %), got 1"),
    ("selfxit", ["--env", "Pong", "--guarantee", "0.1", "--risk", "accuracy-gap"], "RL has none"),
    ("selfxit", ["--dataset", "digits", "--risk", "consistency"], "give --guarantee DELTA too"),
    ("risk_check", ["--dataset", "Pong", "--epsilons", "0.05,2"], "each ε must be a fraction in (0, 1)"),
    ("risk_check", ["--dataset", "Pong", "--methods", "magic"], "unknown magic; accepted: point-estimate"),
    ("risk_check", ["--dataset", "Pong", "--risks", "accuracy-gap"], "Pong has no labels"),
    ("risk_check", ["--dataset", "Pong", "--n-cal", "19000", "--n-test", "2000"], "exceeds the Pong pool"),
    ("reproduce", ["--env", "Pong", "--workers", "100000"], "workers must be an integer in [1, "),
    ("bench_latency", ["--threads", "100000"], "threads must be an integer in [0, "),
    ("serve", ["--random-nature-cnn", "--threads", "100000"], "threads must be an integer in [0, "),
    ("record_video", ["--threshold", "1.5"], "--threshold must be a probability in [0, 1] or 'full' for ztw"),
    ("record_video", ["--out", "/etc/passwd/game.mp4"], "output path /etc/passwd exists and is not a directory"),
    ("sweep", ["--from-csv", str(ROOT / "agents" / "Pong" / "sweep.csv"), "--env", "Qbert", "--max-drop", "1"],
     "is a sweep of Pong, not of Qbert"),
    ("load_test", ["--url", "ws://127.0.0.1:9/stream", "--random-nature-cnn", "--json", "/etc/passwd/report.json"],
     "output path /etc/passwd exists and is not a directory"),
    ("selfxit", ["--dataset", "cifar10"], "dataset 'cifar10' is read from local files: pass --data-dir"),
    ("selfxit", ["--dataset", "cifar10", "--data-dir", "/nonexistent"], "--data-dir '/nonexistent' is not a folder"),
    ("train_vision", ["--dataset", "cifar10", "--data-dir", "/nonexistent"], "--data-dir '/nonexistent' is not a"),
    ("eval_vision", ["--dataset", "digits", "--arch", "small_cnn"], "seed 0: runs/vision/digits_small_cnn_s0 lacks"),
]


@pytest.mark.parametrize(("script", "argv", "words"), CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_bad_values_are_one_line_errors_before_any_work(script, argv, words, tmp_path) -> None:
    # From an empty directory: default outputs (runs/..., the run directory of a trainer) would land here.
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *argv],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the run directory


def test_committed_results_are_replaced_only_when_asked(tmp_path) -> None:
    # selfxit's default output is runs/selfxit/<name>/ (results/ only with --publish); an --out that holds a report
    # needs --overwrite. Both are refused before any work, with nothing written.
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("{}")
    cases = [
        (["--dataset", "digits", "--out", str(out)], "already holds a SelfXit report: --overwrite to replace it"),
        (["--dataset", "digits", "--publish", "--out", str(out)], "give it or --out, not both"),
    ]
    for argv, words in cases:
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "selfxit.py"), *argv],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"] and (out / "report.json").read_text() == "{}"


@pytest.mark.parametrize(("script", "argv"), [
    ("sweep", ["--env", "Pong", "--agent", str(ROOT / "agents" / "Pong"), "--preset", "quick", "--no-progress-bar"]),
    ("train_vision", ["--dataset", "digits", "--arch", "small_cnn"]),
])
def test_a_run_directory_in_use_by_a_live_process_is_refused(script, argv, tmp_path) -> None:
    # Another process holds the directory's lock (as a live sweep or training would): a second run on it must stop
    # at once with one line, without touching what is there.
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("theirs")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from ee_rl.io import RunDirLock; l = RunDirLock({str(run)!r}); print('held', flush=True); "
                               "import time; time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *argv, "--out", str(run)],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"is in use by another process (pid {holder.pid})" in lines[0], result.stderr
    assert sorted(p.name for p in run.iterdir()) == [".lock", "keep.txt"]


def test_risk_check_replaces_its_outputs_only_when_asked(tmp_path) -> None:
    out = tmp_path / "risk"
    out.mkdir()
    (out / "summary.json").write_text("[]")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "risk_check.py"), "--dataset", "Pong", "--out",
                             str(out)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "already holds summary.json: --overwrite to replace them" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["risk"] and (out / "summary.json").read_text() == "[]"
