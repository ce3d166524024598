"""Tests of ee_rl.rl.video and scripts/record_video.py: writer, lockstep screen, overlay, a recorded (short) game."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

import ee_rl.rl.envs as envs
from ee_rl.core import MaxProbExit
from ee_rl.errors import UserError
from ee_rl.rl import video
from ee_rl.rl.policy import agent_paths, load_early_exit_agent
from tests.rl.tiny_agent import shared_tiny_agent



def read_frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path) as reader:
        return [np.asarray(f) for f in reader]


def random_frames(n: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def test_write_video_mp4_and_gif(tmp_path):
    frames = random_frames(7)
    assert video.write_video(frames, tmp_path / "clip.mp4", fps=10) == 7
    back = read_frames(tmp_path / "clip.mp4")
    assert len(back) == 7 and back[0].shape == (48, 64, 3)
    few_colours = [(f >= 128).astype(np.uint8) * 255 for f in frames[:4]]  # 8 colours: no palette loss
    assert video.write_video(iter(few_colours), tmp_path / "clip.gif", fps=10) == 4
    back = read_frames(tmp_path / "clip.gif")
    assert len(back) == 4 and np.array_equal(back[2][..., :3], few_colours[2])
    with pytest.raises(UserError, match=r"\.mp4 or \.gif"):
        video.write_video(frames, tmp_path / "clip.avi")


def test_write_video_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "clip.mp4"
    video.write_video(random_frames(3), path, fps=10)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="even"):
        video.write_video(random_frames(3, height=47), path, fps=10)
    with pytest.raises(ValueError, match="frame 2 has shape"):
        video.write_video([*random_frames(2), random_frames(1, width=32)[0]], path, fps=10)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_lockstep_screen_plays_the_agents_game():
    """Configured like the agent's observations, the second emulator reproduces them exactly, across a reset."""
    cap = 320  # 80 agent steps per game, so the run crosses an automatic reset
    agent_env = envs.make_atari_env("Pong", 1, training=False, sticky_prob=0.0, seed=11, num_threads=1,
                                    max_episode_frames=cap)
    twin = video.LockstepScreen("Pong", grayscale=True, size=(84, 84), stack=4, max_pool=True, max_episode_frames=cap)
    colour = video.LockstepScreen("Pong", max_episode_frames=cap)
    rng = np.random.default_rng(1)
    obs, same, rgb = agent_env.reset(), twin.reset(11), colour.reset(11)
    assert rgb.shape == (1, 210, 160, 3) and rgb.dtype == np.uint8
    assert np.array_equal(obs, same)
    resets = 0
    for _ in range(100):
        action = rng.integers(0, 6, 1)
        obs, _, done, _ = agent_env.step(action)
        same, rgb = twin.step(action), colour.step(action)
        assert np.array_equal(obs, same)
        resets += int(done[0])
    assert resets == 1 and rgb.shape == (1, 210, 160, 3)
    for env in (agent_env, twin, colour):
        env.close()


def test_overlay_frame_keeps_the_screen_and_marks_the_exit():
    screen = random_frames(1, 210, 160)[0]
    info = video.DecisionOverlay(exit_index=1, num_ics=2, confidence=0.83, compute_saved=0.4, score=3.0,
                                 decision=9, exit_rates=(0.5, 0.2, 0.3))
    frame = video.overlay_frame(screen, info, scale=2)
    assert frame.shape == (420 + video.PANEL_HEIGHT, 320, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[:420], video.upscale(screen, 2))
    assert np.array_equal(frame[421, 5], video.exit_colour(1, 2))  # the strip under the screen: IC 2's colour
    expert = video.overlay_frame(screen, video.DecisionOverlay(2, 2, 0.9, 0.0, 0.0, 0), scale=2)
    assert np.array_equal(expert[421, 5], video.EXPERT_COLOUR)
    with pytest.raises(ValueError, match="RGB"):
        video.overlay_frame(screen[..., 0], info)


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory) -> Path:
    return shared_tiny_agent(tmp_path_factory)


def test_record_game_writes_one_frame_per_decision_and_a_summary(agent_dir, tmp_path):
    paths = agent_paths(agent_dir, "ztw")
    policy = load_early_exit_agent(paths.expert, paths.heads, game="Pong")
    whole = video.record_game(policy, MaxProbExit(0.9), "Pong", tmp_path / "game.mp4", seed=5, fps=10, scale=2,
                              summary_seconds=0.5, max_episode_frames=100)  # the game ends after 25 decisions
    assert whole.finished and whole.decisions == 25 and whole.frames == 25 + 5
    frames = read_frames(tmp_path / "game.mp4")
    assert len(frames) == 30 and frames[0].shape == (420 + video.PANEL_HEIGHT, 320, 3)
    assert sum(whole.exit_rates) == pytest.approx(1.0) and 0 < whole.inference_time
    cut = video.record_game(policy, MaxProbExit(2.0), "Pong", tmp_path / "cut.mp4", seed=5, fps=10, scale=2,
                            max_seconds=1.2, summary_seconds=0.2)
    assert not cut.finished and cut.decisions == 12 and cut.frames == 14
    assert cut.inference_time == 1.0 and cut.agreement == 1.0 and cut.exit_rates == (0.0, 0.0, 1.0)


def run_script(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    module = importlib.import_module("ee_rl.cli.record_video")
    monkeypatch.setattr(sys, "argv", ["record_video.py", *args])
    try:
        module.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_cli_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no agents/Pong here
    code, err = run_script(["--env", "Pong", "--method", "ztw", "--threshold", "0.8"], monkeypatch, capsys)
    assert code == 2 and err.strip() == "error: agent file not found: agents/Pong/expert.zip (needed for method ztw)"
    code, err = run_script(["--method", "pbee", "--threshold", "0.5"], monkeypatch, capsys)
    assert code == 2 and "patience values" in err and err.count("\n") == 1
    code, err = run_script(["--threshold", "high"], monkeypatch, capsys)
    assert code == 2 and "--threshold must be a number or 'full'" in err
    code, err = run_script(["--out", "x.avi"], monkeypatch, capsys)
    assert code == 2 and ".mp4 or .gif" in err
    assert not (tmp_path / "runs").exists()
