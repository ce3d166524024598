"""SelfXit on an agent: a fresh (untrained) PPO expert with random SDN heads in tmp_path, games cut short."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ee_rl.core.exits import MaxProbExit
from ee_rl.errors import UserError
from ee_rl.rl import sweep
from ee_rl.rl.policy import agent_paths, load_early_exit_agent
from ee_rl.selfxit.rl import append_to_sweep_csv, collect_expert_states, play, run_rl_experiment
from ee_rl.selfxit.settings import SelfXitSettings
from tests.rl.tiny_agent import write_tiny_agent

SHORT_GAME_FRAMES = 240  # 60 agent steps


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> Path:
    return write_tiny_agent(tmp_path_factory.mktemp("agent") / "Pong")


@pytest.fixture(scope="module")
def sdn(agent_dir):
    paths = agent_paths(agent_dir, "sdn")
    return load_early_exit_agent(paths.expert, paths.heads, game="Pong")


def test_collect_expert_states_keeps_every_stride_th_decision(sdn) -> None:
    states = collect_expert_states(sdn, "pong", 10, n_envs=2, stride=3, seed=5,
                                   max_episode_frames=SHORT_GAME_FRAMES)
    assert states.shape == (10, 4, 84, 84) and states.dtype == np.uint8
    again = collect_expert_states(sdn, "pong", 10, n_envs=2, stride=3, seed=5,
                                   max_episode_frames=SHORT_GAME_FRAMES)
    assert np.array_equal(states, again)


def test_play_matches_the_sweeps_evaluation_for_the_same_rule(sdn) -> None:
    games = sweep.PlaySettings(episodes=1, n_envs=1, seed=77, sticky_prob=0.1, max_episode_frames=SHORT_GAME_FRAMES)
    mine = play(sdn, MaxProbExit(0.5), "pong", games, method="sdn", threshold=0.5, label="max_prob>0.5")
    theirs = sweep.evaluate_setting(sdn, "sdn", 0.5, "pong", games)
    for field in ("returns", "inference_time", "agreement", "decisions", "exit_rates", "rule"):
        assert getattr(mine, field) == getattr(theirs, field), field


def test_rl_experiment_writes_the_report_and_the_sweep_row(agent_dir, tmp_path) -> None:
    settings = SelfXitSettings(
        tolerance=0.2, states=24, state_stride=2, episodes=1, n_envs=1, batch_size=16, timing_repeats=1,
        max_episode_frames=SHORT_GAME_FRAMES,
    ).validate()
    csv_path = tmp_path / "sweep.csv"
    # The latency table has its own test (test_latency.py).
    report = run_rl_experiment(
        "Pong", agent_dir, tmp_path / "out", settings, latency=False, command="test", sweep_csv=csv_path
    )
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("tolerance", "temperatures", "thresholds", "subset", "inference_time", "expert_return", "return"):
        assert key in saved
    assert saved["split_sizes"] == {"validation": 10, "test": 14}
    assert len(saved["thresholds"]) == 2 and saved["validation"]["estimated_accuracy_drop"] < 0.2
    assert saved["latency"] is None
    assert report["games"]["expert"]["inference_time"] == 1.0
    rows = sweep.read_csv(csv_path)
    assert [(r.method, r.threshold) for r in rows] == [("selfxit", 0.2)]
    assert len(rows[0].exit_rates) == 3 and sum(rows[0].exit_rates) == pytest.approx(1.0)
    append_to_sweep_csv(rows[0], csv_path)  # replaces, does not duplicate
    assert len(sweep.read_csv(csv_path)) == 1
    assert (tmp_path / "out" / "sweep_rows.csv").is_file()
    # The headline cost is the games' decisions; the test states' cost is a separate, labelled row.
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"decisions in the games) | **{100 * saved['inference_time']:.2f} %** |" in md
    assert f"| inference time on the test split's states | {100 * saved['test']['inference_time']:.2f} % |" in md


def test_rl_experiment_needs_the_sdn_heads(tmp_path) -> None:
    with pytest.raises(UserError, match="agent file not found"):
        run_rl_experiment("Pong", tmp_path / "missing", tmp_path / "out", SelfXitSettings())
