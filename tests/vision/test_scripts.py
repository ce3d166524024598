"""End to end through the CLIs (run in-process): fake CIFAR-10 pickles and Tiny ImageNet folders, a tiny backbone,
IC and ensemble training, evaluation over seeds, report files, resume and every user error as one line."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ee_rl.errors import UserError
from ee_rl.vision.checkpoint import load_exit_model
from ee_rl.vision.config import load_vision_config
from ee_rl.vision.train import RunSpec, train_run
from tests.vision.conftest import write_cifar10, write_tiny_imagenet

TINY = ["--set", "backbone.epochs=1", "--set", "ics.epochs=1", "--set", "ensembles.epochs=3",
        "--set", "eval_every=0", "--set", "backbone.batch_size=16", "--no-progress-bar", "--threads", "1"]


def load_script(name: str) -> ModuleType:
    return importlib.import_module(f"ee_rl.cli.{name}")


def run_script(name: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", [f"scripts/{name}.py", *args])
    code = 0
    try:
        load_script(name).main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def test_cifar10_train_resume_and_errors(tmp_path, monkeypatch, capsys):
    write_cifar10(tmp_path / "data", per_batch=8, test=10)
    out = tmp_path / "run"
    args = ["--dataset", "cifar10", "--arch", "small_cnn", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    code, stdout, stderr = run_script("train_vision", args + TINY, monkeypatch, capsys)
    assert code == 0, stderr
    brief = json.loads(stdout.strip().splitlines()[-1])
    assert set(brief["exit_test_accuracy"]) == {"ztw", "sdn"} and len(brief["exit_test_accuracy"]["ztw"]) == 5
    assert {p.name for p in out.iterdir()} >= {"backbone.pt", "exits-ztw.pt", "exits-sdn.pt", "tb",
                                               "train_summary.json"}
    assert not list(out.glob("*.ckpt")) and list((out / "tb").glob("events.out.tfevents.*"))
    model, record = load_exit_model(out / "exits-ztw.pt")
    assert record["method"] == {"method": "ztw", "cascade": True, "ensemble": "geometric", "detach_cascade": True}
    # Everything recorded beside the heads (config, test summary) is plain: the file loads without unpickling code.
    assert torch.load(out / "exits-ztw.pt", weights_only=True)["config"] == record["config"]
    assert model.ensembles is not None and len(model.heads) == 5

    # again without --resume: refuses to overwrite; with --resume: nothing left to train
    code, _, stderr = run_script("train_vision", args + TINY, monkeypatch, capsys)
    assert code == 2 and stderr.count("\n") == 1 and "--resume" in stderr
    before = (out / "exits-sdn.pt").stat().st_mtime_ns
    code, _, stderr = run_script("train_vision", args + TINY + ["--resume"], monkeypatch, capsys)
    assert code == 0, stderr and (out / "exits-sdn.pt").stat().st_mtime_ns == before

    code, _, stderr = run_script("train_vision", ["--dataset", "cifar100", "--data-dir", str(tmp_path / "data"),
                                                  "--out", str(tmp_path / "x"), *TINY], monkeypatch, capsys)
    assert code == 2 and stderr.startswith("error: CIFAR-100 not found: expected ") and stderr.count("\n") == 1
    for bad in (["--set", "ics.epochs=-1"], ["--set", "ics.optimizer=rmsprop"], ["--set", "bogus=1"],
                ["--method", "sdn", "--additive"], ["--arch", "nope"], ["--transfer"]):
        code, _, stderr = run_script("train_vision", ["--dataset", "digits", "--out", str(tmp_path / "y"),
                                                      *TINY, *bad], monkeypatch, capsys)
        assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, (bad, stderr)


def test_eval_refuses_cuda_without_a_gpu_before_writing_the_report_dir(tmp_path, monkeypatch, capsys):
    """``--device cuda`` on a CPU-only machine is one line and leaves no empty report directory (by default
    ``results/vision/<dataset>/``) behind, as train_vision.py already does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same refusal on a machine with a GPU
    out = tmp_path / "report"
    code, _, stderr = run_script("eval_vision", ["--dataset", "digits", "--runs", str(tmp_path / "runs"),
                                                 "--out", str(out), "--device", "cuda", "--no-progress-bar"],
                                 monkeypatch, capsys)
    assert code == 2 and stderr.startswith("error: --device cuda: ") and stderr.count("\n") == 1, stderr
    assert not out.exists()


def test_digits_noisy_two_seeds_end_to_end_report(tmp_path, monkeypatch, capsys):
    report = tmp_path / "report"
    args = ["--dataset", "digits-noisy", "--arch", "small_cnn", "--seeds", "2", "--train",
            "--runs", str(tmp_path / "runs"), "--out", str(report), *TINY]
    code, stdout, stderr = run_script("eval_vision", args, monkeypatch, capsys)
    assert code == 0, stderr
    assert "| Algo | 25% | 50% | 75% | 100% | Max |" in stdout
    columns, rows = read_csv(report / "budget_table.csv")
    assert columns == ["method", "budget", "accuracy_mean", "accuracy_se", "n_seeds"]
    assert [(r["method"], r["budget"]) for r in rows] == [
        (m, b) for m in ("sdn", "pbee", "ztw") for b in ("0.25", "0.5", "0.75", "1.0", "max")
    ]
    for r in rows:
        assert r["n_seeds"] in ("0", "1", "2")
        if r["accuracy_mean"]:
            assert 0.0 <= float(r["accuracy_mean"]) <= 100.0
        else:
            assert r["n_seeds"] == "0"  # an empty cell is shown as empty, not as a number
    assert next(r for r in rows if r["method"] == "sdn" and r["budget"] == "max")["n_seeds"] == "2"
    columns, rows = read_csv(report / "paired_vs_sdn.csv")
    assert columns == ["method", "budget", "diff_mean", "diff_se", "n_seeds"]
    assert {r["method"] for r in rows} == {"pbee", "ztw"}
    columns, rows = read_csv(report / "hindsight.csv")
    assert columns == ["method", "ic", "hi"]
    assert {r["method"] for r in rows} == {"sdn", "ztw"} and {r["ic"] for r in rows} == {"1", "2", "3", "4", "5"}
    assert all(r["hi"] == "" or 0.0 <= float(r["hi"]) <= 1.0 for r in rows)
    for name in ("accuracy_vs_inference_time.png", "hindsight.png", "budget_table.md", "seeds.json", "summary.json"):
        assert (report / name).stat().st_size > 100, name
    summary = json.loads((report / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["backbone_accuracy"]) == 2
    assert "eval_vision.py --dataset digits-noisy --arch small_cnn --seeds 2" in summary["command"]
    seeds = json.loads((report / "seeds.json").read_text())
    costs = seeds[0]["methods"]["ztw"]["relative_costs"]
    assert costs == sorted(costs) and costs[-1] > 1.0  # answering at the final head pays for every IC too

    # the report re-renders from seeds.json alone, to the same numbers
    before = {name: (report / name).read_text() for name in ("budget_table.csv", "paired_vs_sdn.csv", "hindsight.csv")}
    (report / "budget_table.csv").unlink()
    code, _, stderr = run_script("eval_vision", ["--dataset", "digits-noisy", "--out", str(report), "--report-only"],
                                 monkeypatch, capsys)
    assert code == 0, stderr
    assert {name: (report / name).read_text() for name in before} == before

    # an existing report is replaced only when asked (checked before any evaluation)
    code, _, stderr = run_script(
        "eval_vision", ["--dataset", "digits-noisy", "--arch", "small_cnn", "--seeds", "2", "--runs",
                        str(tmp_path / "runs"), "--out", str(report), *TINY], monkeypatch, capsys)
    assert code == 2 and "already holds a report (seeds.json): --overwrite to replace it" in stderr

    # heads trained on one backbone refuse another (seed 1's)
    with pytest.raises(UserError, match="different backbone"):
        load_exit_model(tmp_path / "runs" / "digits-noisy_small_cnn_s0" / "exits-ztw.pt",
                        tmp_path / "runs" / "digits-noisy_small_cnn_s1" / "backbone.pt")

    # evaluation alone (no --train) reuses the runs; a missing seed names the training command
    code, _, stderr = run_script(
        "eval_vision",
        ["--dataset", "digits-noisy", "--arch", "small_cnn", "--seed", "5", "--runs", str(tmp_path / "runs"),
         "--out", str(report), "--overwrite", *TINY],
        monkeypatch, capsys,
    )
    assert code == 2 and "train_vision.py --dataset digits-noisy" in stderr and stderr.count("\n") == 1


def test_tiny_imagenet_folders_train_with_stride_2_ics(tmp_path):
    write_tiny_imagenet(tmp_path / "data", classes=3, per_class=2, val_per_class=1)
    cfg = load_vision_config(None, "tinyimagenet", "small_cnn", [
        "backbone.epochs=1", "ics.epochs=1", "ensembles.epochs=2", "num_workers=0", "eval_every=0",
    ])
    assert cfg.ic_downsample and cfg.ics.milestones == [15, 40]
    summary = train_run(RunSpec(dataset="tinyimagenet", arch="small_cnn", out_dir=tmp_path / "run", config=cfg,
                                data_dir=tmp_path / "data", progress=False))
    assert summary["train_size"] == 6 and summary["test_size"] == 3
    model, _ = load_exit_model(tmp_path / "run" / "exits-ztw.pt")
    strides = [h.conv.stride for h in model.heads]
    assert strides == [(2, 2)] * 5  # every IC input is at least 16x16 (> 8 in both dims)
    with torch.no_grad():
        assert model.all_exits(torch.rand(2, 3, 64, 64)).ic_logits.shape == (5, 2, 3)
