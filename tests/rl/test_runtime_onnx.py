"""--runtime onnx through the RL paths: a sweep, a video, the server and the latency bench play the same games and
give the same answers as with eager torch (tiny agent, short games)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ee_rl.core import MaxProbExit  # noqa: E402
from ee_rl.rl import sweep, video  # noqa: E402
from ee_rl.rl.policy import agent_paths, load_early_exit_agent, onnx_cache_dir  # noqa: E402
from tests.rl.tiny_agent import shared_tiny_agent  # noqa: E402


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> Path:
    return shared_tiny_agent(tmp_path_factory)


def strip_us(rows):
    return [dataclasses.replace(r, us_per_decision=0.0) for r in rows]


def test_sweep_plays_the_same_games_on_onnx(agent_dir):
    settings = dict(methods=["ztw", "pbee"], thresholds=[0.5], patience=[1], episodes=2, n_envs=2, seed=123,
                    max_episode_frames=240)
    eager = sweep.run_sweep("Pong", agent_dir, sweep.SweepSettings(**settings), progress=False)
    compiled = sweep.run_sweep("Pong", agent_dir, sweep.SweepSettings(**settings, runtime="onnx"), progress=False)
    assert strip_us(compiled.rows) == strip_us(eager.rows)
    assert compiled.settings.runtime == "onnx"
    # the rule really used the ICs: some decisions left early
    assert any(r.exit_rates[0] + r.exit_rates[1] > 0 for r in eager.rows if r.method == "ztw" and r.rule != "full")


def test_video_records_the_same_game_on_onnx(agent_dir, tmp_path):
    paths = agent_paths(agent_dir, "ztw")
    recordings = []
    for runtime in ("torch", "onnx"):
        policy = load_early_exit_agent(paths.expert, paths.heads, game="Pong")
        policy.use_runtime(runtime, cache_dir=onnx_cache_dir(paths.heads))
        assert policy.runtime == runtime
        recordings.append(video.record_game(policy, MaxProbExit(0.5), "Pong", tmp_path / f"{runtime}.mp4", seed=5,
                                            fps=10, scale=2, summary_seconds=0.2, max_episode_frames=100))
    eager, compiled = ({k: v for k, v in r.to_dict().items() if k != "path"} for r in recordings)
    assert compiled == eager  # score, decisions, exit rates, agreement: the same game


def test_server_answers_the_same_on_onnx(agent_dir):
    from ee_rl.serve.loaders import load_agent

    served = load_agent(agent_dir, "ztw", rule=MaxProbExit(0.5))
    compiled = served.use_runtime("onnx", cache_dir=onnx_cache_dir(agent_paths(agent_dir, "ztw").heads))
    assert compiled.runtime == "onnx" and compiled.describe()["runtime"] == "onnx" and served.runtime == "torch"
    obs = np.random.default_rng(0).integers(0, 256, (40, 4, 84, 84), dtype=np.uint8)
    eager, onnx = served.offline_answers(obs, batch_size=16), compiled.offline_answers(obs, batch_size=16)
    for key in ("labels", "exit_index", "flops_fraction"):
        np.testing.assert_array_equal(onnx[key], eager[key])
    np.testing.assert_allclose(onnx["probs"], eager["probs"], atol=1e-5)
    streamed = list(compiled.answer_chunks(compiled.model_input(obs)))
    assert sorted(np.concatenate([b.items for b in streamed]).tolist()) == list(range(40))


def test_bench_times_both_runtimes_side_by_side(agent_dir, tmp_path, monkeypatch, capsys):
    module = importlib.import_module("ee_rl.cli.bench_latency")
    out = tmp_path / "bench.json"
    args = ["--agent", str(agent_dir), "--method", "ztw", "--threshold", "0.5", "--steps", "2", "--n-envs", "2",
            "--repeats", "1", "--warmup", "0", "--thread-counts", "1", "--runtime", "onnx", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", ["bench_latency.py", *args])
    module.main()
    data = json.loads(out.read_text())
    keys = [(s["runtime"], s["threads"], s["batch"]) for s in data["summary"]]
    assert keys == [("torch", 1, 1), ("onnx", 1, 1), ("torch", 1, 2), ("onnx", 1, 2)]
    for s in data["summary"]:
        assert len(s["exit_us"]) == 2 and len(s["exit_speedup_vs_full"]) == 2
        assert s["sb3_predict_us"] > 0 and s["full_us"] > 0
    paths = {(r["runtime"], r["path"]) for r in data["rows"]}
    assert {("sb3", "sb3_predict"), ("onnx", "exit1"), ("onnx", "exit2"), ("onnx", "early_exit"),
            ("torch", "expert_runner")} <= paths
