"""Loading what to serve: a vision checkpoint and an Atari agent on disk (real formats), inputs, and model flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from ee_rl.core import MaxProbExit, PerExitThresholds
from ee_rl.core.heads_file import write_heads_file
from ee_rl.core.method import ZTW
from ee_rl.errors import UserError
from ee_rl.serve.codecs import InputSpec
from ee_rl.serve.loaders import (
    add_model_arguments,
    load_agent,
    load_vision,
    read_inputs,
    served_model_from_args,
    vision_images,
)
from ee_rl.vision.backbones import build_backbone
from ee_rl.vision.checkpoint import backbone_record, exits_record, save_torch
from ee_rl.vision.methods import build_model
from tests.rl.tiny_agent import write_tiny_agent
from tests.vision.conftest import write_cifar10


def _write_vision_checkpoint(out: Path) -> Path:
    """An untrained CIFAR-10 small_cnn backbone + ZTW heads, saved as the vision trainer saves them."""
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    net = build_backbone("small_cnn", 10, (3, 32, 32), mean, std, seed=0)
    record = backbone_record(net, {
        "dataset": "cifar10", "num_classes": 10, "input_shape": [3, 32, 32], "mean": mean, "std": std,
        "class_names": [f"c{i}" for i in range(10)], "seed": 0,
    })
    save_torch(out / "backbone.pt", record)
    model = build_model(ZTW, net.frozen(), net.placement, 10, torch.zeros(1, 3, 32, 32))
    return write_heads_file(out / "exits-ztw.pt", exits_record(model, ZTW, record, {"seed": 0}))


def test_vision_checkpoint_serves_images_to_classes(tmp_path: Path) -> None:
    served = load_vision(_write_vision_checkpoint(tmp_path / "run"), rule=MaxProbExit(0.2))
    assert served.input_spec == InputSpec((3, 32, 32), "float32", low=0.0, high=1.0)
    assert served.label_name == "class" and list(served.class_names) == [f"c{i}" for i in range(10)]
    write_cifar10(tmp_path / "data", test=10)
    images = vision_images(served, tmp_path / "data", 8)  # the first test images, as the model sees them
    assert images.shape == (8, 3, 32, 32) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    out = served.model.infer(torch.from_numpy(images), served.rule)
    expected = served.offline_answers(images)
    assert np.array_equal(expected["exit_index"], out.exit_index.numpy())
    np.testing.assert_allclose(expected["probs"], out.log_probs.exp().numpy(), atol=1e-6)


def test_agent_directory_serves_observations_to_actions(tmp_path: Path) -> None:
    from ee_rl.rl.policy import agent_paths, read_agent_heads

    write_tiny_agent(tmp_path)
    served = load_agent(tmp_path, "ztw", rule=MaxProbExit(0.5))
    assert served.input_spec == InputSpec((4, 84, 84), "uint8") and served.label_name == "action"
    assert served.info["method"] == "ztw" and served.info["game"] == "pong"
    saved = read_agent_heads(agent_paths(tmp_path, "ztw").heads)["heads"]
    state = served.model.heads.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    obs = np.random.default_rng(0).integers(0, 256, (6, 4, 84, 84), dtype=np.uint8)
    expected = served.offline_answers(obs)
    with torch.no_grad():  # the last exit is the expert's own action head
        full = served.model.backbone(torch.from_numpy(obs)).softmax(-1).numpy()
    final = expected["exit_index"] == served.num_ics
    np.testing.assert_allclose(expected["probs"][final], full[final], atol=1e-6)


def test_read_inputs_checks_the_file(tmp_path: Path) -> None:
    spec = InputSpec((2, 2), "uint8")
    good = np.zeros((3, 2, 2), np.uint8)
    np.save(tmp_path / "good.npy", good)
    assert np.array_equal(read_inputs(tmp_path / "good.npy", spec), good)
    np.save(tmp_path / "shape.npy", np.zeros((3, 2), np.uint8))
    (tmp_path / "text.npy").write_text("hello")
    for name, words in [("missing.npy", "not found"), ("shape.npy", "shape"), ("text.npy", "not a .npy")]:
        with pytest.raises(UserError, match=words):
            read_inputs(tmp_path / name, spec)


def test_read_inputs_refuses_an_npz_archive_or_a_0d_array_in_one_line(tmp_path: Path) -> None:
    spec = InputSpec((2, 2), "uint8")
    np.savez(tmp_path / "archive.npz", x=np.zeros((3, 2, 2), np.uint8))
    np.save(tmp_path / "scalar.npy", np.uint8(7))
    for name, words in [("archive.npz", "an .npz archive"), ("scalar.npy", "a 0-d array")]:
        with pytest.raises(UserError, match=words) as info:
            read_inputs(tmp_path / name, spec)
        message = str(info.value)
        assert name in message and "uint8 (N, 2, 2)" in message and "\n" not in message
    with pytest.raises(UserError, match="calibration file .*archive.npz"):
        read_inputs(tmp_path / "archive.npz", spec, what="calibration file")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args(list(argv))


def test_model_flags_choose_the_rule(tmp_path: Path) -> None:
    served = served_model_from_args(_args("--random-nature-cnn", "--threshold", "0.95"), 0.9)
    assert served.rule == MaxProbExit(0.95) and served.input_spec.shape == (4, 84, 84)
    assert served_model_from_args(_args("--random-nature-cnn"), 0.7).rule == MaxProbExit(0.7)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, 256, (32, 4, 84, 84), dtype=np.uint8))
    tolerant = served_model_from_args(
        _args("--random-nature-cnn", "--tolerance", "0.1", "--calibration", str(tmp_path / "calib.npy")), 0.9
    )
    assert isinstance(tolerant.rule, PerExitThresholds) and len(tolerant.rule.taus) == 2
    for argv, words in [
        (("--random-nature-cnn", "--tolerance", "0.1"), "calibration"),
        (("--random-nature-cnn", "--calibration", str(tmp_path / "calib.npy")), "only used with --tolerance"),
        (("--random-nature-cnn", "--threshold", "-1"), "threshold"),
    ]:
        with pytest.raises(UserError, match=words):
            served_model_from_args(_args(*argv), 0.9)


def test_an_agent_without_a_threshold_plays_its_recommended_setting(tmp_path: Path) -> None:
    from ee_rl.core import FULL, PatienceExit
    from ee_rl.rl.sweep import SweepRow, write_csv

    write_tiny_agent(tmp_path)
    served = served_model_from_args(_args("--agent", str(tmp_path)), 0.9)  # no sweep.csv: the configured default
    assert served.rule == MaxProbExit(0.9) and served.info["rule_source"] == "configs/serve.yaml threshold"

    def row(method, threshold, cost, ret):
        return SweepRow(method, threshold, "r", 10, ret, 1.0, ret, ret, cost, 0.9, 1.0, 10, (0.5, 0.2, 0.3))

    write_csv([row("ztw", 0.1, 0.4, 14.0), row("ztw", 0.3, 0.6, 17.5), row("ztw", FULL, 1.0, 18.0),
               row("pbee", 2, 0.8, 17.9), row("pbee", FULL, 1.0, 18.0)], tmp_path / "sweep.csv")
    served = served_model_from_args(_args("--agent", str(tmp_path)), 0.9)
    assert served.rule == MaxProbExit(0.3) and served.info["threshold"] == 0.3  # 17.5 ≥ 18 − 1; 14 is not
    assert "sweep.csv: cheapest within 1 point or 5 % of the expert" in served.info["rule_source"]
    assert served.describe()["rule"] == repr(MaxProbExit(0.3))  # what GET /health shows is the rule in use
    assert served_model_from_args(_args("--agent", str(tmp_path), "--method", "pbee"), 0.9).rule == PatienceExit(2)
    given = served_model_from_args(_args("--agent", str(tmp_path), "--threshold", "0.8"), 0.9)
    assert given.rule == MaxProbExit(0.8) and given.info["rule_source"] == "--threshold"
