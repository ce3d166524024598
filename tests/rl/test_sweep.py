"""Tests of ee_rl.rl.sweep and scripts/sweep.py on a fresh (untrained) PPO expert with random heads.

Games are cut at 60 agent steps (the sweep's ``max_episode_frames``), so every setting plays in about a second.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ee_rl.rl.envs as envs
from ee_rl.core import FULL_RULE, MaxProbExit, PatienceExit
from ee_rl.errors import UserError
from ee_rl.exec import SerialExecutor
from ee_rl.rl import sweep
from ee_rl.rl.checkpoint import load_model
from ee_rl.rl.evaluate import run_episodes
from ee_rl.rl.policy import agent_paths, load_early_exit_agent
from ee_rl.rl.sweep import FULL, SweepRow, SweepSettings
from tests.rl.tiny_agent import shared_tiny_agent

SHORT_GAME_FRAMES = 240  # 60 agent steps
SEED = 123
EPISODES = 2


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> Path:
    return shared_tiny_agent(tmp_path_factory)


@pytest.fixture(scope="module")
def ztw(agent_dir):
    paths = agent_paths(agent_dir, "ztw")
    return load_early_exit_agent(paths.expert, paths.heads, game="Pong")


def tiny_settings(**changes) -> SweepSettings:
    """ztw at 0.5 and pbee at patience 1 (and the expert), two short games each."""
    return SweepSettings(methods=["ztw", "pbee"], thresholds=[0.5], patience=[1], episodes=EPISODES, n_envs=2,
                         seed=SEED, max_episode_frames=SHORT_GAME_FRAMES, **changes)


@pytest.fixture(scope="module")
def result(agent_dir) -> sweep.SweepResult:
    return sweep.run_sweep("Pong", agent_dir, tiny_settings(), progress=False)


def recorded_states(n: int = 32) -> np.ndarray:
    env = envs.make_atari_env("Pong", 1, training=False, seed=7, num_threads=1)
    rng = np.random.default_rng(0)
    states = [env.reset()]
    for _ in range(n - 1):
        states.append(env.step(rng.integers(0, 6, 1))[0])
    env.close()
    return np.concatenate(states)


def hand_made_rows() -> list[SweepRow]:
    def row(method, threshold, cost, ret):
        return SweepRow(method, threshold, sweep.rule_label(method, threshold), 10, ret, 1.0, ret - 1, ret + 1,
                        cost, 0.9, 100.0, 1000, (0.5, 0.25, 0.25))

    return [
        row("ztw", 0.2, 0.30, 10.0),
        row("ztw", 0.4, 0.45, 17.5),
        row("ztw", 0.6, 0.50, 19.3),  # the highest threshold at exactly 50 %
        row("ztw", 0.8, 0.62, 20.5),
        row("ztw", 1.0, 1.06, 20.6),
        row("ztw", FULL, 1.00, 20.4),
        row("sdn", 0.5, 0.55, 12.0),
        row("sdn", 0.9, 0.80, 19.6),  # cheapest within 1 point of the expert (20.4)
        row("sdn", 1.0, 0.80, 19.6),  # same cost, same return: the higher threshold wins
        row("sdn", FULL, 1.00, 20.4),
    ]


def test_full_policy_row_is_the_expert_exactly(result, agent_dir):
    row = result.expert  # the sweep's full-policy row, shared by every method
    expert = load_model(agent_dir / "expert.zip", device="cpu")
    env = envs.make_atari_env("Pong", 2, training=False, seed=SEED, max_episode_frames=SHORT_GAME_FRAMES)
    stats = run_episodes(lambda obs: expert.predict(obs, deterministic=True)[0], env, EPISODES)
    env.close()
    assert row.returns == tuple(stats.returns) and row.return_mean == np.mean(stats.returns)
    assert row.decisions == sum(stats.lengths)
    assert row.inference_time == 1.0 and row.agreement == 1.0
    assert row.exit_rates == (0.0, 0.0, 1.0) and row.rule == "full"


def test_sweep_rows_tables_plot_and_reproducibility(result, ztw, agent_dir, tmp_path):
    rows = result.rows
    assert [(r.method, r.threshold) for r in rows] == [("ztw", 0.5), ("ztw", FULL), ("pbee", 1.0), ("pbee", FULL)]
    for r in rows:
        assert r.episodes == EPISODES and len(r.returns) == EPISODES and r.decisions > 0
        assert sum(r.exit_rates) == pytest.approx(1.0) and r.us_per_decision > 0
        # The cost is exactly the exit-rate-weighted cost of each exit, as counted by the core.
        relative = (1.0,) * 3 if r.is_full else result.exit_costs[r.method]
        assert r.inference_time == pytest.approx(sum(p * c for p, c in zip(r.exit_rates, relative)), abs=1e-12)
    for method in ("ztw", "pbee"):
        full = next(r for r in rows if r.method == method and r.is_full)
        assert full.returns == result.expert.returns and full.inference_time == 1.0
    assert result.exit_costs["ztw"][0] < 0.4 < 1.0 < result.exit_costs["ztw"][-1]  # IC 1 ~ conv1; final = +heads

    # The same seeds give the same numbers.
    again = sweep.evaluate_setting(ztw, "ztw", 0.5, "Pong", result.settings.play())
    first = rows[0]
    assert (again.returns, again.inference_time, again.agreement, again.exit_rates, again.decisions) == (
        first.returns, first.inference_time, first.agreement, first.exit_rates, first.decisions
    )

    csv_path, json_path, png_path = sweep.write_sweep(result, tmp_path, sweep.selection_summary(rows, 0.5, 1.0))
    with open(csv_path, newline="") as handle:
        header = next(csv.reader(handle))
    required = ["method", "threshold", "episodes", "return_mean", "return_std", "inference_time", "agreement",
                "us_per_decision", "exit_rate_1", "exit_rate_2"]
    assert set(required) <= set(header) and header == sweep.csv_columns(2)
    back = sweep.read_csv(csv_path)
    assert [(r.method, r.threshold, r.decisions, r.exit_rates) for r in back] == [
        (r.method, r.threshold, r.decisions, tuple(round(x, 6) for x in r.exit_rates)) for r in rows
    ]
    assert [r.return_mean for r in back] == pytest.approx([r.return_mean for r in rows], abs=1e-6)
    data = json.loads(json_path.read_text())
    assert len(data["rows"]) == 4 and data["rows"][1]["threshold"] is None
    assert data["selections"]["budget"]["selected"]["ztw"]["threshold"] in (0.5, None)
    with Image.open(png_path) as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_inference_time_never_decreases_as_the_threshold_rises(ztw):
    states = recorded_states()
    confidences = ztw.all_exits(states).exit_log_probs.exp().amax(dim=-1).flatten().numpy()
    thresholds = sorted({*np.linspace(0.0, 1.0, 21).round(3), *np.quantile(confidences, [0.1, 0.3, 0.5, 0.7, 0.9])})

    def cost(rule) -> float:
        tally = sweep.DecisionTally(ztw.num_ics)
        result = ztw.act(states, rule)
        tally.add(result, result.actions)
        return tally.inference_time

    costs = [cost(MaxProbExit(float(t))) for t in thresholds]
    assert all(a <= b for a, b in zip(costs, costs[1:])), costs
    assert len(set(costs)) >= 3  # the recorded states really exit at different places
    assert costs[-1] > 1.0  # tau = 1: every decision passes both heads, then the expert's head
    assert cost(FULL_RULE) == 1.0  # no head runs: exactly the expert
    patience = [cost(PatienceExit(p)) for p in range(4)]
    assert all(a <= b for a, b in zip(patience, patience[1:])), patience


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_expert_actions_for_equals_the_plain_expert_on_every_row(ztw, threshold):
    states = recorded_states(24)
    result = ztw.act(states, MaxProbExit(threshold))
    assert np.array_equal(sweep.expert_actions_for(ztw, states, result), ztw.expert_action(states))


def test_budget_selection_on_a_hand_made_table(tmp_path):
    rows = hand_made_rows()
    chosen = sweep.select_by_budget(rows, 0.5)
    assert chosen["ztw"].threshold == 0.6 and chosen["ztw"].return_mean == 19.3
    assert chosen["sdn"] is None  # nothing costs ≤ 50 %
    assert sweep.select_by_budget(rows, 1.0)["ztw"].threshold == FULL
    cheapest = sweep.select_by_max_drop(rows, 1.0)
    assert cheapest["ztw"].threshold == 0.8  # 0.6 is cheaper but 1.1 points below the expert's 20.4
    assert cheapest["sdn"].threshold == 1.0
    assert sweep.select_by_max_drop(rows, 1.2)["ztw"].threshold == 0.6
    assert sweep.select_by_max_drop(rows, 0.0)["sdn"].threshold == FULL
    with pytest.raises(UserError, match="budget"):
        sweep.select_by_budget(rows, 0.0)
    with pytest.raises(UserError, match="max-drop"):
        sweep.select_by_max_drop(rows, -1.0)
    with pytest.raises(UserError, match="full-policy"):
        sweep.select_by_max_drop([r for r in rows if not r.is_full], 1.0)
    # A row appended by selfxit.py (no full row of its own) is compared with the sweep's expert.
    with_selfxit = [*rows, SweepRow("selfxit", 0.02, "selfxit T=0.02", 10, 19.5, 1.0, 18.5, 20.5, 0.77, 0.98,
                                    100.0, 1000, (0.3, 0.2, 0.5))]
    chosen = sweep.select_by_max_drop(with_selfxit, 1.0)
    assert chosen["selfxit"].return_mean == 19.5 and chosen["ztw"].threshold == 0.8
    assert sweep.select_by_max_drop(with_selfxit, 0.5)["selfxit"] is None  # 0.9 below the expert's 20.4
    # The same selections from the table on disk.
    path = sweep.write_csv(rows, tmp_path / "sweep.csv")
    assert sweep.select_by_budget(sweep.read_csv(path), 0.5)["ztw"].threshold == 0.6


def test_max_drop_keeps_a_setting_exactly_that_many_points_below_the_expert():
    # Means of 10 integer game scores: 15.6 is exactly 1 point below 16.6, but in floats 16.6 - 1 > 15.6.
    expert, one_below = 166 / 10, 156 / 10
    assert not one_below >= expert - 1.0  # the rounding the selection must not trip on

    def row(threshold, cost, ret):
        return SweepRow("ztw", threshold, sweep.rule_label("ztw", threshold), 10, ret, 1.0, ret - 1, ret + 1,
                        cost, 0.9, 100.0, 1000, (0.5, 0.25, 0.25))

    rows = [row(0.1, 0.376, one_below), row(0.5, 0.70, expert - 0.5), row(FULL, 1.0, expert)]
    assert sweep.select_by_max_drop(rows, 1.0)["ztw"].threshold == 0.1
    assert sweep.select_by_max_drop(rows, 0.9)["ztw"].threshold == 0.5  # 1 point is more than 0.9
    assert sweep.select_by_max_drop(rows, 0.0)["ztw"].threshold == FULL


def load_script(name: str):
    return importlib.import_module(f"ee_rl.cli.{name}")


def run_script(name: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    try:
        load_script(name).main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_errors_and_selection_from_a_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no agents/Pong here
    code, _, err = run_script("sweep", ["--env", "Pong"], monkeypatch, capsys)
    assert code == 2 and err.strip() == "error: agent file not found: agents/Pong/expert.zip (needed for method ztw)"
    assert not (tmp_path / "runs").exists()
    code, _, err = run_script("sweep", ["--env", "Pong", "--thresholds", "0.5,1.5"], monkeypatch, capsys)
    assert code == 2 and "thresholds must be numbers in [0, 1]" in err and err.count("\n") == 1
    code, _, err = run_script("sweep", ["--methods", "ztw,foo"], monkeypatch, capsys)
    assert code == 2 and "unknown method 'foo'" in err
    code, _, err = run_script("sweep", ["--budget", "0"], monkeypatch, capsys)
    assert code == 2 and "--budget" in err

    table = sweep.write_csv(hand_made_rows(), tmp_path / "sweep.csv")
    code, out, _ = run_script("sweep", ["--from-csv", str(table), "--budget", "0.5", "--max-drop", "1"],
                              monkeypatch, capsys)
    assert code == 0
    assert "budget 50% · ztw: max_prob>0.6: return +19.30" in out and "budget 50% · sdn: no setting fits" in out
    assert "max drop 1 · sdn: max_prob>1: return +19.60" in out
    code, _, err = run_script("sweep", ["--from-csv", str(tmp_path / "nope.csv"), "--budget", "0.5"],
                              monkeypatch, capsys)
    assert code == 2 and "sweep table not found" in err


def test_settings_from_yaml(tmp_path):
    settings = sweep.load_sweep_settings(None, "Pong")
    assert settings.methods == ["ztw", "sdn", "pbee"] and settings.thresholds[0] == 0.1 and settings.episodes == 10
    assert sweep.load_sweep_settings(None, "Pong", "quick").episodes < 10
    assert sweep.setting_thresholds("pbee", settings, 2) == [1.0, 2.0, FULL]
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep:\n  episodes: 0\n")
    with pytest.raises(UserError, match="episodes must be a positive integer"):
        sweep.load_sweep_settings(bad, "Pong")
    with pytest.raises(UserError, match="no preset 'fast'"):
        sweep.load_sweep_settings(None, "Pong", "fast")
    assert math.isinf(sweep.read_csv(sweep.write_csv(hand_made_rows(), tmp_path / "t.csv"))[5].threshold)


def strip_us(rows):
    """The rows without their µs per decision (timings differ, nothing else may)."""
    return [dataclasses.replace(r, us_per_decision=0.0) for r in rows]


def test_every_executor_plays_the_same_rows(result, agent_dir, executor):
    seen = []
    again = sweep.run_sweep("Pong", agent_dir, tiny_settings(), progress=False, on_row=seen.append, executor=executor)
    assert len(seen) == 3  # expert, ztw 0.5, pbee 1: each reported once, as it finished
    assert strip_us(again.rows) == strip_us(result.rows)
    assert strip_us([again.expert]) == strip_us([result.expert])
    assert all(r.us_per_decision > 0 for r in again.rows)


def test_the_cli_plays_on_ray(result, agent_dir, local_ray, tmp_path, monkeypatch, capsys):
    args = ["--env", "Pong", "--agent", str(agent_dir), "--out", str(tmp_path), "--methods", "ztw,pbee",
            "--thresholds", "0.5", "--patience", "1", "--episodes", str(EPISODES), "--n-envs", "2", "--seed", str(SEED),
            "--max-episode-frames", str(SHORT_GAME_FRAMES), "--executor", "ray", "--no-progress-bar"]
    code, _, err = run_script("sweep", args, monkeypatch, capsys)
    assert code == 0, err
    assert strip_us(sweep.read_json(tmp_path / "sweep.json")) == strip_us(result.rows)
    assert local_ray.is_initialized()  # a Ray it did not start is left running


def test_workers_run_the_process_executor_and_are_checked():
    from ee_rl.cli.sweep import executor_name

    assert executor_name(None, 1, None) == "serial" and executor_name(None, 2, None) == "process"
    with pytest.raises(UserError, match="--workers 2 plays settings in local processes"):
        executor_name("serial", 2, None)
    with pytest.raises(UserError, match="--ray-address needs --executor ray"):
        executor_name("process", 2, "auto")
    with pytest.raises(UserError, match="workers"):
        SweepSettings(workers=0).validate()
    with pytest.raises(UserError, match="ale_threads"):
        SweepSettings(ale_threads=0).validate()
    assert tiny_settings(torch_threads=1, ale_threads=2).play().cpus == 2


def test_a_setting_played_from_the_agents_bytes_is_the_setting_played_from_its_folder(result, agent_dir):
    # What a worker does: load the agent from the bytes the driver read, then play its settings.
    agent = sweep.AgentBytes.read(agent_dir, ["ztw", "pbee"])
    assert agent.heads["pbee"] == (agent_dir / "exits-sdn.pt").read_bytes()  # pbee plays the sdn heads
    jobs = [("pbee", 1.0), (sweep.EXPERT, FULL), ("ztw", 0.5)]
    played = dict(sweep.play_settings(jobs, agent, "Pong", result.settings.play(), SerialExecutor()))
    assert list(played) == jobs  # the serial executor: in order, in this process
    assert strip_us([played[("ztw", 0.5)], played[("pbee", 1.0)], played[(sweep.EXPERT, FULL)]]) == strip_us(
        [result.rows[0], result.rows[2], result.expert])
    agents = sweep.load_agents(agent_dir, ["ztw", "pbee"], "Pong")
    assert sweep.player_for(agents, sweep.EXPERT) is agents["ztw"]  # the driver's costs: the first agent


def test_sweep_section_of_the_agent_card(result, tmp_path):
    from ee_rl.rl.sweep_card import write_sweep_section

    readme = tmp_path / "README.md"
    readme.write_text("# Pong agent\n\nbody\n\n<!-- section:exits-ztw -->\nheads\n<!-- /section:exits-ztw -->\n")
    write_sweep_section(tmp_path, result, "python scripts/sweep.py --env Pong", budget=0.5, max_drop=1.0)
    text = readme.read_text()
    assert text.startswith("# Pong agent\n\nbody") and "heads" in text  # the other sections are kept
    assert text.count("<!-- section:sweep -->") == 1 and "![return vs inference time](sweep.png)" in text
    table = [line for line in text.splitlines() if line.startswith("| ztw") or line.startswith("| pbee")]
    assert len(table) == len(result.rows)  # one table row per setting
    full = next(line for line in table if "| full |" in line)
    assert f"{result.expert.return_mean:+.2f}" in full and "100.0 %" in full
    assert "Cheapest setting within 1 point(s)" in text and "costing at most 50 %" in text
    write_sweep_section(tmp_path, result, "python scripts/sweep.py --env Pong")  # re-run: replaced, not appended
    again = readme.read_text()
    assert again.count("<!-- section:sweep -->") == 1 and "Cheapest setting" not in again


def test_cli_into_an_agent_folder_updates_its_card(agent_dir, tmp_path, monkeypatch, capsys):
    import shutil

    agent = tmp_path / "agent"
    shutil.copytree(agent_dir, agent)
    (agent / "README.md").write_text("# Pong agent\n")
    args = ["--env", "Pong", "--agent", str(agent), "--out", str(agent), "--methods", "ztw", "--thresholds", "0.5",
            "--episodes", "1", "--n-envs", "1", "--max-drop", "1", "--no-progress-bar",
            "--max-episode-frames", str(SHORT_GAME_FRAMES)]
    code, out, _ = run_script("sweep", args, monkeypatch, capsys)
    assert code == 0 and "README.md" in out
    text = (agent / "README.md").read_text()
    assert "<!-- section:sweep -->" in text and "`python scripts/sweep.py --env Pong --agent" in text
    assert {p.name for p in agent.iterdir()} >= {"sweep.csv", "sweep.json", "sweep.png", "README.md"}


def test_heads_from_another_directory_play_the_same_games(result, agent_dir, tmp_path):
    # Heads kept outside the agent folder (as ZTW ablations are) are found through heads_dir; the expert stays put.
    heads_dir = tmp_path / "heads"
    heads_dir.mkdir()
    (heads_dir / "exits-ztw.pt").write_bytes((agent_dir / "exits-ztw.pt").read_bytes())
    settings = dataclasses.replace(result.settings, methods=["ztw"])
    again = sweep.run_sweep("Pong", agent_dir, settings, progress=False, heads_dir=heads_dir)
    mine = [r for r in result.rows if r.method == "ztw"]
    assert [dataclasses.replace(r, us_per_decision=0.0) for r in again.rows] == [
        dataclasses.replace(r, us_per_decision=0.0) for r in mine
    ]


def test_ablation_methods_need_their_own_heads_file(agent_dir, tmp_path):
    settings = SweepSettings(methods=["ztw-additive"]).validate()  # an ablation is a method a sweep can play
    with pytest.raises(UserError, match=r"not found: .*exits-ztw-additive\.pt"):
        sweep.check_agent_files(agent_dir, settings.methods, tmp_path)
    # A file named for an ablation but holding other heads is refused, not swept under the wrong name.
    (tmp_path / "exits-ztw-additive.pt").write_bytes((agent_dir / "exits-ztw.pt").read_bytes())
    with pytest.raises(UserError, match="holds ztw heads, not ztw-additive"):
        sweep.load_agents(agent_dir, settings.methods, "Pong", tmp_path)
    with pytest.raises(UserError, match="unknown method 'ztw-bogus'"):
        SweepSettings(methods=["ztw-bogus"]).validate()


def test_an_existing_sweep_is_replaced_only_when_asked_and_the_progress_file_goes(
    agent_dir, tmp_path, monkeypatch, capsys
):
    import shutil

    agent = tmp_path / "agent"
    shutil.copytree(agent_dir, agent)
    args = ["--env", "Pong", "--agent", str(agent), "--out", str(agent), "--methods", "ztw", "--thresholds", "0.5",
            "--episodes", "1", "--n-envs", "1", "--no-progress-bar",
            "--max-episode-frames", str(SHORT_GAME_FRAMES)]
    assert run_script("sweep", args, monkeypatch, capsys)[0] == 0
    assert not (agent / sweep.PROGRESS_FILE).exists()  # finished: every row is in sweep.csv
    before = (agent / "sweep.csv").read_bytes()
    code, _, err = run_script("sweep", args, monkeypatch, capsys)
    assert code == 2 and "already holds a sweep (sweep.csv): --overwrite to replace it" in err
    assert (agent / "sweep.csv").read_bytes() == before
    assert run_script("sweep", [*args, "--overwrite"], monkeypatch, capsys)[0] == 0
    code, _, err = run_script("sweep", [*args, "--resume"], monkeypatch, capsys)
    assert code == 2 and "nothing to resume" in err


def test_an_interrupted_sweep_keeps_its_finished_settings_and_resume_plays_only_the_rest(
    result, agent_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    settings = result.settings
    sweep.start_progress(out, "pong", settings)
    finished: list[SweepRow] = []

    def interrupt_after_two(row: SweepRow) -> None:
        sweep.append_progress_row(out, row)
        finished.append(row)
        if len(finished) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the sweep

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep("Pong", agent_dir, settings, progress=False, on_row=interrupt_after_two)
    kept = sweep.read_progress_rows(out, "pong", settings)
    assert kept == finished
    with pytest.raises(UserError, match="progress of another sweep"):
        sweep.read_progress_rows(out, "pong", dataclasses.replace(settings, episodes=settings.episodes + 1))
    # The CLI refuses to start over it unasked; --resume plays only the settings not yet played.
    args = ["--env", "Pong", "--agent", str(agent_dir), "--out", str(out), "--methods", "ztw,pbee",
            "--thresholds", "0.5", "--patience", "1", "--episodes", str(EPISODES), "--n-envs", "2",
            "--max-episode-frames", str(SHORT_GAME_FRAMES),
            "--seed", str(SEED), "--no-progress-bar"]
    code, _, err = run_script("sweep", args, monkeypatch, capsys)
    assert code == 2 and "holds an interrupted sweep" in err
    played: list[SweepRow] = []
    monkeypatch.setattr(sweep, "append_progress_row", lambda out_dir, row: played.append(row))
    code, stdout, _ = run_script("sweep", [*args, "--resume"], monkeypatch, capsys)
    assert code == 0 and "(2 setting(s) kept from the interrupted sweep)" in stdout
    assert len(played) == len(result.rows) - len(settings.methods) + 1 - 2  # settings + the expert, minus the kept
    rows = sweep.read_json(out / "sweep.json")
    assert [dataclasses.replace(r, us_per_decision=0.0) for r in rows] == [
        dataclasses.replace(r, us_per_decision=0.0) for r in result.rows
    ]
