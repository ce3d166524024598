"""Tests of ee_rl.rl.agent_latency and the trained-agent mode of scripts/bench_latency.py (tiny agent, few passes)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ee_rl.core import MaxProbExit
from ee_rl.rl import agent_latency
from ee_rl.rl.checkpoint import load_model
from ee_rl.rl.policy import agent_paths, load_early_exit_agent
from tests.rl.tiny_agent import shared_tiny_agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> Path:
    return shared_tiny_agent(tmp_path_factory)


def test_latency_rows_and_costs_on_recorded_states(agent_dir):
    paths = agent_paths(agent_dir, "ztw")
    policy = load_early_exit_agent(paths.expert, paths.heads, game="Pong")
    expert = load_model(paths.expert, device="cpu")
    rule = MaxProbExit(0.9)
    states = agent_latency.record_states(policy, rule, "Pong", n_envs=2, steps=3, seed=4)
    assert states.shape == (3, 2, 4, 84, 84) and states.dtype == np.uint8
    report = agent_latency.measure_agent_latency(policy, expert, rule, states, threads=(1, 2), repeats=2, warmup=0)
    assert [(r.path, r.threads, r.batch) for r in report.rows] == [
        (p, t, b) for t in (1, 2) for b in (1, 2) for p in agent_latency.PATHS
    ]
    for r in report.rows:
        assert r.us_per_decision > 0
        if r.path == "sb3_predict":
            assert r.speedup_vs_sb3 == 1.0
        if r.path == "expert_runner":
            assert r.speedup_vs_expert_runner == 1.0
    flat = states.reshape(6, 4, 84, 84)
    answer = policy.act(flat, rule)
    assert report.decisions == 6 and report.inference_time == answer.flops.sum() / (6 * answer.backbone_flops)
    assert report.exit_rates == tuple(np.bincount(answer.exit_index, minlength=3) / 6)
    # The three paths answer the same states; with no early exit the agent is the expert.
    assert np.array_equal(expert.predict(flat, deterministic=True)[0], policy.act(flat, MaxProbExit(2.0)).actions)


def test_bench_script_agent_mode(agent_dir, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_latency_script", ROOT / "scripts" / "bench_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "bench.json"
    args = ["--agent", str(agent_dir), "--method", "sdn", "--threshold", "0.5", "--steps", "2", "--n-envs", "2",
            "--repeats", "1", "--warmup", "0", "--thread-counts", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", ["bench_latency.py", *args])
    module.main()
    data = json.loads(out.read_text())
    assert data["method"] == "sdn" and data["threshold"] == 0.5 and len(data["rows"]) == 6
    assert "early_exit" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["bench_latency.py", "--agent", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as exc:
        module.main()
    assert exc.value.code == 2 and "agent file not found" in capsys.readouterr().err
