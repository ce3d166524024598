"""Tests of ee_rl.rl.grid and scripts/grid.py on tiny grids: experts of 64 PPO steps, exits of a few 64-step rounds,
sweeps of two 60-step games per setting. One grid runs on a two-node local Ray cluster and has a worker killed in
the middle of an exit training run."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from ee_rl.errors import UserError
from ee_rl.exec import SerialExecutor
from ee_rl.rl.distill import DistillConfig, distill_exits
from ee_rl.rl.expert import ExpertConfig
from ee_rl.rl.grid import GridLayout, GridSpec, prepare_grid, run_grid
from ee_rl.rl.stages import EXPERT, GameSettings
from ee_rl.rl.sweep import SweepSettings, read_json
from tests.conftest import RAY_TEST_OPTIONS
from tests.rl.tiny_agent import shared_tiny_agent

SHORT_GAME_FRAMES = 240  # 60 agent steps
EXPERT_YAML = "atari: {total_timesteps: 64, n_envs: 2, n_steps: 32, batch_size: 32, n_epochs: 1, checkpoint_every: 32}\n"
EXITS_YAML = "exits: {total_timesteps: 128, n_envs: 2, n_steps: 32, n_epochs: 1, ic_batch_size: 32, " \
             "ensemble_batch_size: 32}\n"
SWEEP_YAML = f"sweep: {{thresholds: [0.5], patience: [1], n_envs: 2, seed: 5, max_episode_frames: {SHORT_GAME_FRAMES}}}\n"


def tiny_settings(exit_rounds: int = 2) -> GameSettings:
    """The tiny stage settings (what the YAML files above say), exits of ``exit_rounds`` rounds of 64 steps."""
    return GameSettings(
        ExpertConfig(total_timesteps=64, n_envs=2, n_steps=32, batch_size=32, n_epochs=1, checkpoint_every=32),
        DistillConfig(total_timesteps=64 * exit_rounds, n_envs=2, n_steps=32, n_epochs=1, ic_batch_size=32,
                      ensemble_batch_size=32),
        SweepSettings(thresholds=[0.5], patience=[1], episodes=2, n_envs=2, seed=5,
                      max_episode_frames=SHORT_GAME_FRAMES),
    )


def run_script(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["grid.py", *args])
    try:
        importlib.import_module("ee_rl.cli.grid").main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_grid_from_the_command_line_skips_finished_cells_and_adds_seeds(tmp_path, tmp_path_factory, monkeypatch,
                                                                          capsys):
    agents = tmp_path / "agents"
    shutil.copytree(shared_tiny_agent(tmp_path_factory), agents / "Pong")  # a shipped Pong expert: none is trained
    for name, text in (("ppo.yaml", EXPERT_YAML), ("exits.yaml", EXITS_YAML), ("sweep.yaml", SWEEP_YAML)):
        (tmp_path / name).write_text(text)
    out = tmp_path / "grid"
    args = ["--games", "Pong", "--methods", "ztw", "pbee", "--agents", str(agents), "--out", str(out),
            "--expert-config", str(tmp_path / "ppo.yaml"), "--exits-config", str(tmp_path / "exits.yaml"),
            "--sweep-config", str(tmp_path / "sweep.yaml"), "--episodes", "2", "--no-progress-bar"]
    code, stdout, err = run_script([*args, "--seeds", "0", "1"], monkeypatch, capsys)
    assert code == 0, err
    assert "0 expert(s), 4 exit training run(s), 2 sweep(s) to run" in stdout  # ztw and sdn (pbee's) per seed
    assert "| Pong | ztw | 2 |" in stdout and "| Pong | pbee | 2 |" in stdout
    layout = GridLayout(out, agents)
    for seed in (0, 1):
        summary = json.loads(layout.exits_summary("pong", "sdn", seed).read_text())
        assert summary["timesteps"] == 128 and summary["seed"] == seed and summary["resumed_from_timesteps"] == 0
        rows = read_json(layout.sweep_json("pong", seed))
        assert [(r.method, r.rule) for r in rows] == [("ztw", "max_prob>0.5"), ("ztw", "full"),
                                                       ("pbee", "patience=1"), ("pbee", "full")]
        assert all(r.episodes == 2 for r in rows)
    assert not layout.trained_expert("pong").exists()
    table = layout.summary("csv").read_bytes()
    swept = layout.sweep_json("pong", 0).stat().st_mtime_ns

    code, stdout, _ = run_script([*args, "--seeds", "0", "1"], monkeypatch, capsys)  # again: nothing runs
    assert code == 0 and "nothing to do: every cell is finished" in stdout
    assert layout.summary("csv").read_bytes() == table and layout.sweep_json("pong", 0).stat().st_mtime_ns == swept

    code, stdout, _ = run_script([*args, "--seeds", "0", "1", "2"], monkeypatch, capsys)  # one more seed
    assert code == 0 and "0 expert(s), 2 exit training run(s), 1 sweep(s) to run" in stdout
    assert "| Pong | ztw | 3 |" in stdout and layout.sweep_json("pong", 0).stat().st_mtime_ns == swept

    code, _, err = run_script([*args, "--seeds", "0", "--exit-timesteps", "64"], monkeypatch, capsys)
    assert code == 2 and "holds a grid of Pong with other settings (exits.total_timesteps: 128 there, 64 now)" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--games", "Pong", "--stages", "sweep"], "stage sweep of Pong seed 0 needs"),
    (["--games", "Pong", "--stages", "exits,sweep", "--agents", "nowhere"], "Pong has no expert"),
    (["--games", "Pong", "--stages", "expert,video"], "--stages: unknown stage(s) video; valid stages: expert, exits"),
    (["--games", "Pong", "--methods", "ztw", "foo"], "method must be one of ztw, sdn, pbee or a ZTW ablation"),
    (["--games", "Pong", "--cpus", "1"], "--cpus sizes the process executor"),
    (["--games", "Pong", "--ray-address", "auto"], "--ray-address needs --executor ray"),
])
def test_bad_grids_are_one_line_errors_before_any_file(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no agents/ here
    code, _, err = run_script([*argv, "--out", "grid"], monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def two_node_cluster():
    """A local Ray cluster of two nodes with one CPU each (the tests' single-node Ray, if running, is stopped first:
    the next test that needs it starts it again)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    node = {"num_cpus": 1, "object_store_memory": RAY_TEST_OPTIONS["object_store_memory"] // 2}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        ray.init(address=cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def kill_after_its_first_checkpoint(run_dir: Path, killed: list[int]) -> None:
    """SIGKILL the process training in ``run_dir`` (the pid in its lock file) once its first round's checkpoint is
    there (a Ray worker of the tests' cluster)."""
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 600  # a guard against a test that would wait forever, not a timing assertion
    while not checkpoint.is_file():
        if time.monotonic() > deadline:
            return
        time.sleep(0.002)
    pid = int((run_dir / ".lock").read_text())
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


def test_a_grid_on_a_two_node_cluster_survives_a_killed_worker_with_the_same_table(two_node_cluster, tmp_path):
    from ee_rl.exec import RayExecutor

    rounds = 6
    settings = tiny_settings(exit_rounds=rounds)
    spec = GridSpec(games=("pong",), methods=("ztw", "sdn"), seeds=(0,), settings={"pong": settings},
                    expert_eval_episodes=1)
    layout = GridLayout(tmp_path / "cluster", tmp_path / "no-agents")  # no shipped expert: the grid trains one
    killed: list[int] = []
    killer = threading.Thread(target=kill_after_its_first_checkpoint,
                              args=(layout.exits_run("pong", "ztw", 0), killed), daemon=True)
    killer.start()
    with RayExecutor() as executor:  # the cluster ray.init joined
        rows = run_grid(spec, layout, executor, progress=False)
    killer.join(timeout=1)
    assert len(killed) == 1  # the worker training ZTW's exits died mid-run ...
    summary = json.loads(layout.exits_summary("pong", "ztw", 0).read_text())
    resumed = summary["resumed_from_timesteps"]
    assert 0 < resumed < 64 * rounds and summary["timesteps"] == 64 * rounds  # ... and its retry resumed
    assert json.loads(layout.exits_summary("pong", "sdn", 0).read_text())["resumed_from_timesteps"] == 0

    # The same grid in this process, with ZTW's training stopped at the same round: the same files and table.
    reference = GridLayout(tmp_path / "serial", layout.agents)
    run_grid(dataclasses.replace(spec, stages=(EXPERT,)), reference, SerialExecutor(), progress=False)
    assert weights(reference.trained_expert("pong")) == weights(layout.trained_expert("pong"))  # the zips hold times
    distill_exits("Pong", reference.trained_expert("pong"), _ztw(), reference.exits_run("pong", "ztw", 0),
                  total_timesteps=resumed, config=settings.exits, progress_bar=False)  # the round it was killed in
    again = run_grid(spec, reference, SerialExecutor(), progress=False)
    assert again == rows
    for method in ("ztw", "sdn"):
        assert reference.heads("pong", method, 0).read_bytes() == layout.heads("pong", method, 0).read_bytes()
    strip = lambda rs: [dataclasses.replace(r, us_per_decision=0.0) for r in rs]  # noqa: E731 - timings differ
    assert strip(read_json(reference.sweep_json("pong", 0))) == strip(read_json(layout.sweep_json("pong", 0)))


def weights(expert_zip: Path) -> str:
    from ee_rl.rl.checkpoint import load_model, weights_sha256

    return weights_sha256(load_model(expert_zip, device="cpu"))


def _ztw():
    from ee_rl.core.method import method_by_name

    return method_by_name("ztw")


def test_a_plan_reads_what_is_finished(tmp_path, tmp_path_factory):
    agents = tmp_path / "agents"
    shutil.copytree(shared_tiny_agent(tmp_path_factory), agents / "Pong")
    spec = GridSpec(games=("pong", "breakout"), methods=("ztw",), seeds=(3,),
                    settings={"pong": tiny_settings(), "breakout": tiny_settings()})
    layout = GridLayout(tmp_path / "grid", agents)
    plan = prepare_grid(spec, layout)
    assert plan.experts == {"pong": agents / "Pong" / "expert.zip", "breakout": None}  # Breakout has none shipped
    assert plan.exits == [("pong", "ztw", 3), ("breakout", "ztw", 3)] and len(plan.sweeps) == 2
    assert not layout.out.exists()  # planning writes nothing
    with pytest.raises(UserError, match="Breakout has no expert"):
        prepare_grid(dataclasses.replace(spec, stages=("exits",)), layout)
