"""SelfXit on a vision backbone: no label reaches the label-free path; the report has what the issue asks for."""

from __future__ import annotations

import copy
import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from ee_rl.selfxit.pipeline import Guarantee
from ee_rl.selfxit.report import render_markdown, write_report
from ee_rl.selfxit.settings import SelfXitSettings
from ee_rl.selfxit.vision import run_vision_selfxit, split_tensors, vision_report
from ee_rl.vision.backbones import build_backbone
from ee_rl.vision.data import load_dataset



def _tiny_settings() -> SelfXitSettings:
    return SelfXitSettings(
        tolerance=0.05, tolerance_sweep=[0.05, 0.3], search_trials=2, max_convs=1, kernels=[3], strides=[2],
        widths=[8], head_epochs=2, head_batch_size=32, batch_size=64, timing_repeats=1,
    ).validate()


@pytest.fixture(scope="module")
def digits() -> tuple:
    data = load_dataset("digits", seed=0)
    images, labels = split_tensors(data.test)
    net = build_backbone("small_cnn", 10, data.input_shape, data.mean, data.std, seed=0).eval()
    return net, images[:160], labels[:160]


def test_no_label_is_read_in_the_label_free_path(digits) -> None:
    net, images, labels = digits
    settings = _tiny_settings()
    right = run_vision_selfxit(net, images, labels, settings)
    wrong = run_vision_selfxit(net, images, (labels + 1) % 10, settings)  # every label wrong
    for a, b in zip(right.heads.heads, wrong.heads.heads):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ca, cb = right.calibration, wrong.calibration
    assert ca.temperatures == cb.temperatures and ca.thresholds == cb.thresholds
    assert ca.subset.subset == cb.subset.subset and ca.subset.score == cb.subset.score
    assert right.heads.chosen == wrong.heads.chosen
    # Only the final scoring reads labels.
    assert right.test.agreement == wrong.test.agreement
    assert right.test.backbone_accuracy != wrong.test.backbone_accuracy
    assert right.split_sizes == (80, 32, 48)
    # The sweep reuses the heads: at the run's own tolerance it reproduces the run.
    same, same_result = right.sweep[0]
    assert same.thresholds == ca.thresholds and same.subset.subset == ca.subset.subset
    assert same_result.accuracy_drop == right.test.accuracy_drop
    loose = right.sweep[1][0]
    assert all(a >= b for a, b in zip(ca.thresholds, loose.thresholds))  # more tolerance, lower thresholds


def test_a_guarantee_on_consistency_reads_no_label_and_is_reported(digits, tmp_path: Path) -> None:
    net, images, labels = digits
    settings = _tiny_settings()
    guarantee = Guarantee(delta=0.2, seed=settings.seed)
    right = run_vision_selfxit(net, images, labels, settings, guarantee)
    wrong = run_vision_selfxit(net, images, (labels + 1) % 10, settings, guarantee)
    assert right.calibration.thresholds == wrong.calibration.thresholds
    assert right.calibration.guarantee.control.p_values == wrong.calibration.guarantee.control.p_values
    # The sweep certifies each of its tolerances as ε on the same path.
    assert [c.guarantee.control.epsilon for c, _ in right.sweep] == [0.05, 0.3]
    assert all(c.guarantee.control.path == right.calibration.guarantee.control.path for c, _ in right.sweep)
    report = vision_report(right, dataset="digits", arch="small_cnn", backbone_record={"seed": 0}, settings=settings)
    _, md_path = write_report(report, tmp_path)
    saved = report["guarantee"]
    assert (saved["epsilon"], saved["delta"], saved["risk"]) == (0.05, 0.2, "consistency")
    assert saved["n_cal"] + saved["n_fit"] == right.split_sizes[1]
    assert "## Guarantee: P(consistency risk ≤ ε) ≥ 1 − δ" in md_path.read_text()
    # The accuracy gap reads the validation labels: where they are the backbone's own answers, its loss is the
    # disagreement; where the backbone is never right, no early answer can lose anything.
    gap = Guarantee(delta=0.2, risk="accuracy-gap", seed=settings.seed)
    with torch.no_grad():
        backbone_answers = net(images).argmax(dim=-1)
    as_consistency = run_vision_selfxit(net, images, backbone_answers, settings, gap).calibration.guarantee
    assert torch.equal(as_consistency.losses, right.calibration.guarantee.losses)
    never_right = run_vision_selfxit(net, images, (backbone_answers + 1) % 10, settings, gap).calibration.guarantee
    assert right.calibration.guarantee.losses.any() and not never_right.losses.any()


def test_report_has_the_required_fields(digits, tmp_path: Path) -> None:
    net, images, labels = digits
    settings = _tiny_settings()
    run = run_vision_selfxit(net, images, labels, settings)
    report = vision_report(run, dataset="digits", arch="small_cnn", backbone_record={"seed": 0}, settings=settings,
                           command="python scripts/selfxit.py --dataset digits")
    json_path, md_path = write_report(report, tmp_path)
    saved = json.loads(json_path.read_text())
    for key in ("tolerance", "temperatures", "thresholds", "subset", "inference_time", "backbone_accuracy",
                "accuracy", "accuracy_drop"):
        assert key in saved
    assert [r["tolerance"] for r in saved["tolerance_sweep"]] == [0.05, 0.3]
    assert saved["accuracy_drop"] == pytest.approx(saved["backbone_accuracy"] - saved["accuracy"])
    assert len(saved["temperatures"]) == len(saved["thresholds"]) == len(net.placement.attach_after)
    text = md_path.read_text()
    assert "accuracy drop (test split)" in text and "python scripts/selfxit.py --dataset digits" in text
    # The subset line and the exits table number the exits alike (1-based): the rows marked "yes" are the subset.
    for subset in ([], [0, 2]):
        chosen = copy.deepcopy(saved)
        chosen["subset"] = subset
        for m, row in enumerate(chosen["exits"]):
            row["selected"] = m in subset
        lines = render_markdown(chosen).splitlines()
        listed = next(line for line in lines if line.startswith("| chosen subset")).split("|")[2].split("/")[0].strip()
        table = lines[lines.index("## Exits (validation split; each exit alone)") + 4:][: len(chosen["exits"])]
        yes = [row.split("|")[1].strip() for row in table if row.endswith("| yes |")]
        assert listed == ("[" + ", ".join(yes) + "]" if yes else "none (the backbone alone)")


def _script():
    return importlib.import_module("ee_rl.cli.selfxit")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "digits", "--agent", "agents/Pong"], "--agent and --sweep-csv are for --env"),
        (["--dataset", "digits", "--tolerance", "3"], "tolerance must be a fraction"),
        (["--dataset", "nope"], "unknown dataset"),
    ],
)
def test_script_reports_bad_input_in_one_line(argv, message, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(sys, "argv", ["selfxit.py", *argv, "--out", str(tmp_path / "out"), "--no-latency"])
    with pytest.raises(SystemExit) as exit_info:
        _script().main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_script_reports_an_outdated_backbone_in_one_line(monkeypatch, capsys, tmp_path) -> None:
    from ee_rl.vision.checkpoint import backbone_record, save_torch

    net = build_backbone("small_cnn", 10, (1, 8, 8), (0.3,), (0.4,), seed=0)
    record = backbone_record(net, {"dataset": "digits", "num_classes": 10, "input_shape": [1, 8, 8],
                                   "mean": [0.3], "std": [0.4]})
    record["state_dict"]["stages.0.0.weight"] = torch.zeros(32, 1, 3, 3)  # e.g. an older, wider small_cnn
    path = save_torch(tmp_path / "backbone.pt", record)
    argv = ["--dataset", "digits", "--arch", "small_cnn", "--backbone", str(path)]
    monkeypatch.setattr(sys, "argv", ["selfxit.py", *argv, "--out", str(tmp_path / "out"), "--no-latency"])
    with pytest.raises(SystemExit) as exit_info:
        _script().main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not fit the current small_cnn definition" in err and "\n" not in err
