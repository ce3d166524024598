"""The thin CLIs, run in-process: serve.py's one-line errors, and a full load_test.py run against a real server."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from ee_rl.core import MaxProbExit
from ee_rl.serve import ServerThread, ServeSettings, create_app
from ee_rl.serve.loaders import random_nature_cnn

ROOT = Path(__file__).resolve().parents[2]


def _run_script(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(ROOT / "scripts" / name), run_name="__main__")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--agent", "/nonexistent/agent"], "not found"),
        (["--random-nature-cnn", "--max-batch", "0"], "max_batch must be a positive integer"),
        (["--random-nature-cnn", "--tolerance", "0.1"], "--calibration"),
        (["--random-nature-cnn", "--port", "70000"], "port must be in 0..65535"),
        (["--random-nature-cnn", "--max-wait-ms", "inf"], "max_wait_ms must be a number of milliseconds"),
    ],
)
def test_serve_reports_user_mistakes_in_one_line(argv, words, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        _run_script("serve.py", argv, monkeypatch)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: ") and words in err and "\n" not in err


def test_load_test_script_checks_every_answer_and_writes_json(tmp_path, monkeypatch, capsys) -> None:
    served = random_nature_cnn(0, rule=MaxProbExit(0.97))
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (12, 4, 84, 84), dtype=np.uint8)
    np.save(tmp_path / "obs.npy", obs)
    with ServerThread(create_app(served, ServeSettings(max_wait_ms=2.0))) as server:
        common = ["--url", server.ws_url, "--random-nature-cnn", "--inputs", str(tmp_path / "obs.npy")]
        _run_script(
            "load_test.py",
            [*common, "--threshold", "0.97", "--clients", "4", "--batches", "2", "--batch-size", "3",
             "--json", str(tmp_path / "report.json")],
            monkeypatch,
        )
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["ok"] and report["items"] == 24 and report["answered"] == 24
        assert (report["lost"], report["duplicated"], report["wrong"]) == (0, 0, 0)
        assert report["clients"] == 4 and report["p99_ms"] >= report["p50_ms"] > 0
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:  # another rule than the server's: refused before any load
            _run_script("load_test.py", [*common, "--threshold", "0.5"], monkeypatch)
    assert info.value.code == 2 and "rule" in capsys.readouterr().err
