"""The shared --device parser: accepted names, one-line errors for the rest, and the CLIs that use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ee_rl.devices import resolve_device
from ee_rl.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["cudax", "", "gpu0"])
def test_unknown_names_are_user_errors(name: str) -> None:
    with pytest.raises(UserError, match="accepted: cpu, cuda, cuda:N, auto"):
        resolve_device(name)


def test_other_device_types_are_refused() -> None:
    with pytest.raises(UserError, match="unsupported device 'meta'"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_user_error_not_a_silent_cpu_fallback() -> None:
    with pytest.raises(UserError, match="no usable CUDA GPU"):
        resolve_device("cuda:0")


@pytest.mark.parametrize(
    "script", ["train_policy.py", "train_exits.py", "publish_expert.py", "train_vision.py", "eval_vision.py"]
)
def test_clis_report_a_bad_device_in_one_line(script: str, tmp_path: Path) -> None:
    args = {
        "train_policy.py": ["--env", "Pong", "--out", str(tmp_path / "run")],
        "train_exits.py": ["--env", "Pong", "--expert", str(tmp_path / "expert.zip"), "--out", str(tmp_path / "x")],
        "publish_expert.py": ["--env", "Pong", "--checkpoint", str(tmp_path / "c.zip"), "--out", str(tmp_path / "a"),
                              "--no-curve"],
        "train_vision.py": ["--dataset", "digits", "--arch", "resnet20_w8", "--out", str(tmp_path / "v")],
        "eval_vision.py": ["--dataset", "digits", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r")],
    }[script]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args, "--device", "cudax"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: unknown device 'cudax'; accepted: cpu, cuda, cuda:N, auto"]
    assert not Path(args[args.index("--out") + 1]).exists()  # nothing written for a refused device
