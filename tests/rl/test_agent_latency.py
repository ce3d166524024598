"""Tests of ee_rl.rl.agent_latency and the trained-agent mode of scripts/bench_latency.py (tiny agent, few passes)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ee_rl.core import MaxProbExit, forced_exit_rule
from ee_rl.rl import agent_latency
from ee_rl.rl.checkpoint import load_model
from ee_rl.rl.policy import agent_paths, load_early_exit_agent
from tests.rl.tiny_agent import shared_tiny_agent



@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> Path:
    return shared_tiny_agent(tmp_path_factory)


#: FLOPs of one decision of the Nature CNN expert, by hand (2 per multiply-add, biases and ReLUs not counted):
#: conv 8x8/4 4->32 on 84x84 (20x20 out), conv 4x4/2 32->64 (9x9 out), conv 3x3/1 64->64 (7x7 out), 3136->512, 512->6.
CONV1 = 2 * 20 * 20 * 32 * 4 * 8 * 8
CONV2 = 2 * 9 * 9 * 64 * 32 * 4 * 4
CONV3 = 2 * 7 * 7 * 64 * 64 * 3 * 3
NATURE_CNN_FLOPS = CONV1 + CONV2 + CONV3 + 2 * 3136 * 512 + 2 * 512 * 6


class FakeClock:
    """A ns clock that only moves when a wrapped call charges it: timings become exact, known numbers."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def charging(self, fn, cost_ns):
        """``fn`` that first advances the clock by ``cost_ns(obs, *args)``."""
        def call(obs, *args, **kwargs):
            self.ns += cost_ns(obs, *args)
            return fn(obs, *args, **kwargs)
        return call


def test_latency_rows_and_costs_on_recorded_states(agent_dir, monkeypatch):
    paths = agent_paths(agent_dir, "ztw")
    policy = load_early_exit_agent(paths.expert, paths.heads, game="Pong")
    expert = load_model(paths.expert, device="cpu")
    rule = MaxProbExit(0.9)
    states = agent_latency.record_states(policy, rule, "Pong", n_envs=2, steps=3, seed=4)
    assert states.shape == (3, 2, 4, 84, 84) and states.dtype == np.uint8
    flat = states.reshape(6, 4, 84, 84)
    # Per-state answers, one state per call: an independent path to the shares the report gives for the batch.
    singles = [policy.act(s[None], rule) for s in flat]

    # Each path costs 400 ns per call plus its own ns per observation (the early-exit agent: 200 ns for this rule;
    # forced out at IC 1 / IC 2: 250 / 450 ns).
    per_obs = {"sb3_predict": 900, "expert_runner": 600, "exit1": 250, "exit2": 450, "early_exit": 200}
    forced = {repr(forced_exit_rule(2, m)): f"exit{m + 1}" for m in range(2)}

    def act_cost(obs, r):
        path = "early_exit" if r is rule else forced.get(repr(r), "expert_runner")
        return 400 + per_obs[path] * len(obs)

    clock = FakeClock()
    monkeypatch.setattr(expert, "predict", clock.charging(expert.predict, lambda obs: 400 + 900 * len(obs)))
    monkeypatch.setattr(policy, "act", clock.charging(policy.act, act_cost))
    report = agent_latency.measure_agent_latency(
        policy, expert, rule, states, threads=(1, 2), repeats=2, warmup=0, clock=clock
    )
    paths = ("sb3_predict", "expert_runner", "exit1", "exit2", "early_exit")
    assert [(r.path, r.threads, r.batch) for r in report.rows] == [
        (p, t, b) for t in (1, 2) for b in (1, 2) for p in paths
    ]
    assert {r.runtime for r in report.rows} == {"sb3", "torch"}
    summary = report.summary()[0]
    assert summary["exit_us"] == pytest.approx([(400 + 250) / 1e3, (400 + 450) / 1e3])
    assert summary["exit_speedup_vs_full"] == pytest.approx([1000 / 650, 1000 / 850])
    for r in report.rows:
        # batch 1: 6 calls of 1 state; batch 2: 3 calls of 2 states; 6 decisions either way
        expected_us = (400 + per_obs[r.path] * r.batch) / r.batch / 1e3
        assert r.us_per_decision == pytest.approx(expected_us)
        sb3, runner = ((400 + per_obs[name] * r.batch) / r.batch / 1e3 for name in ("sb3_predict", "expert_runner"))
        assert r.speedup_vs_sb3 == pytest.approx(sb3 / expected_us)
        assert r.speedup_vs_expert_runner == pytest.approx(runner / expected_us)

    assert report.decisions == 6 and report.repeats == 2
    exits = np.array([int(a.exit_index[0]) for a in singles])
    assert report.exit_rates == pytest.approx([np.mean(exits == m) for m in range(3)])
    assert all(a.backbone_flops == NATURE_CNN_FLOPS for a in singles)
    # An IC-1 answer runs conv 1 at least, an IC-2 answer convs 1-2, the expert's all of it (heads cost extra).
    floor = sum(report.exit_rates[m] * c for m, c in enumerate((CONV1, CONV1 + CONV2, NATURE_CNN_FLOPS)))
    assert floor / NATURE_CNN_FLOPS <= report.inference_time
    # The three paths answer the same states; with no early exit the agent is the expert.
    assert np.array_equal(expert.predict(flat, deterministic=True)[0], policy.act(flat, MaxProbExit(2.0)).actions)


def test_bench_script_agent_mode(agent_dir, tmp_path, monkeypatch, capsys):
    module = importlib.import_module("ee_rl.cli.bench_latency")
    out = tmp_path / "bench.json"
    args = ["--agent", str(agent_dir), "--method", "sdn", "--threshold", "0.5", "--steps", "2", "--n-envs", "2",
            "--repeats", "1", "--warmup", "0", "--thread-counts", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", ["bench_latency.py", *args])
    module.main()
    data = json.loads(out.read_text())
    # per batch size (1, 2): SB3's predict, the full network, IC 1 and IC 2 forced, the agent's rule
    assert data["method"] == "sdn" and data["threshold"] == 0.5 and len(data["rows"]) == 10
    assert "early_exit" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["bench_latency.py", "--agent", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as exc:
        module.main()
    assert exc.value.code == 2 and "agent file not found" in capsys.readouterr().err
