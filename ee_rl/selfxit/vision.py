"""SelfXit on a vision backbone (e.g. ``small_cnn`` on scikit-learn's digits), built on :mod:`ee_rl.vision`.

The backbone is trained (with labels, as any pre-trained model) on the dataset's training split by
:func:`ee_rl.vision.train.train_run`. SelfXit's *inference data* is the dataset's test split, which the backbone
never saw: it is split 50/20/30 into the heads' train / validation / test parts, and its labels are read only to
score the test part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ee_rl.core.model import EarlyExitModel
from ee_rl.errors import UserError
from ee_rl.io import ensure_writable_dir
from ee_rl.selfxit.evaluate import HeldOutResult, evaluate_held_out
from ee_rl.selfxit.latency import LatencyTable, latency_vs_batch
from ee_rl.selfxit.pipeline import (
    Calibration,
    Guarantee,
    TrainedHeads,
    calibrate_and_select,
    select_for_tolerance,
    select_with_guarantee,
    split_indices,
    train_heads,
)
from ee_rl.selfxit.report import (
    calibration_report,
    held_out_report,
    latency_report,
    tolerance_row,
    write_report,
)
from ee_rl.selfxit.settings import SelfXitSettings
from ee_rl.vision.backbones import StagedNet
from ee_rl.vision.checkpoint import load_backbone
from ee_rl.vision.data import ImageSplit, check_dataset_source, load_dataset


def split_tensors(split: ImageSplit, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as ``(images, labels)`` tensors, in the split's order, as the model receives them."""
    parts = list(split.batches(batch_size))
    if not parts:
        raise UserError("the inference split is empty")
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


#: Where backbones trained by SelfXit runs go (ignored by git, reused by later runs).
BACKBONE_RUNS = Path("runs") / "selfxit"


def prepare_backbone(
    dataset: str,
    arch: str,
    *,
    runs_dir: Path = BACKBONE_RUNS,
    backbone_path: Path | None = None,
    seed: int = 0,
    config: str | None = None,
    progress: bool = False,
    data_dir: Path | None = None,
) -> tuple[StagedNet, dict]:
    """Load ``backbone_path`` (an ee_rl ``backbone.pt``), or train one with the vision recipe for ``dataset`` and
    ``arch`` into ``runs_dir / <dataset>_<arch>_s<seed>/`` (reused when already there) from the files in
    ``data_dir`` (not needed for digits)."""
    if backbone_path is None:
        from ee_rl.vision.config import load_vision_config
        from ee_rl.vision.train import RunSpec, train_run

        run_dir = runs_dir / f"{dataset}_{arch}_s{seed}"
        cfg = load_vision_config(config, dataset, arch)
        train_run(RunSpec(dataset, arch, run_dir, cfg, seed=seed, variants=(), resume=True, progress=progress,
                          data_dir=data_dir))
        backbone_path = run_dir / "backbone.pt"
    # A missing, unreadable or outdated file (weights of an older definition) is a one-line UserError there.
    net, record = load_backbone(backbone_path)
    if record.get("dataset") != dataset:
        raise UserError(f"{backbone_path} was trained on {record.get('dataset')!r}, not on {dataset!r}")
    if record.get("arch") != arch:
        raise UserError(f"{backbone_path} holds a {record.get('arch')} backbone, not --arch {arch}")
    return net, record


@dataclass
class VisionSelfXit:
    """A SelfXit run on vision data: the trained heads, their calibration and the held-out result.

    Attributes:
        heads: the label-free heads and their search trials.
        calibration: temperatures, thresholds, subset and the deployed model.
        test: the deployed model on the test part of the inference data (with labels).
        split_sizes: samples in the train / validation / test parts.
        test_inputs: the test part's images (for latency measurements).
        sweep: the same heads at each tolerance of ``settings.tolerance_sweep`` (calibration, test result).
    """

    heads: TrainedHeads
    calibration: Calibration
    test: HeldOutResult
    split_sizes: tuple[int, int, int]
    test_inputs: torch.Tensor
    sweep: list[tuple[Calibration, HeldOutResult]] = dataclasses.field(default_factory=list)


def fit_label_free(
    net: StagedNet,
    images: torch.Tensor,
    settings: SelfXitSettings,
    *,
    guarantee: Guarantee | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[TrainedHeads, Calibration, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Heads, calibration and subset from unlabeled ``images`` alone (the 50/20/30 split is by ``settings.seed``).

    With a ``guarantee`` the thresholds are risk-controlled on the validation part; its ``accuracy-gap`` risk reads
    the validation part of ``labels`` (no other risk reads any label). Returns the heads, the calibration and the
    (train, val, test) index tensors.
    """
    train, val, test = split_indices(images.shape[0], settings.split, settings.seed)
    backbone = net.frozen()
    candidates = tuple(net.placement.attach_after)
    heads = train_heads(backbone, images[train], images[val], candidates, settings)
    model = EarlyExitModel(backbone, heads.heads, None, candidates).eval()
    val_labels = labels[val] if guarantee is not None and guarantee.risk == "accuracy-gap" else None
    calibration = calibrate_and_select(
        model, images[val], settings.tolerance, settings.batch_size, guarantee=guarantee, val_labels=val_labels
    )
    return heads, calibration, (train, val, test)


def run_vision_selfxit(
    net: StagedNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: SelfXitSettings,
    guarantee: Guarantee | None = None,
) -> VisionSelfXit:
    """SelfXit on inference data ``images``; ``labels`` only score the test part at the end (and, for a guarantee
    on the accuracy gap, the validation part)."""
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be (N,) for N = {images.shape[0]} images, got {tuple(labels.shape)}")
    net.eval()
    heads, calibration, (train, val, test) = fit_label_free(net, images, settings, guarantee=guarantee, labels=labels)
    def evaluate(cal: Calibration) -> HeldOutResult:
        return evaluate_held_out(
            cal, images[test], labels[test], batch_size=settings.batch_size, repeats=settings.timing_repeats,
            runtime=settings.runtime,
        )

    sweep = []
    for tolerance in settings.tolerance_sweep:
        if calibration.guarantee is not None:
            cal = select_with_guarantee(
                calibration.candidates, calibration.guarantee, tolerance, calibration.backbone_flops
            )
        else:
            cal = select_for_tolerance(
                calibration.candidates, calibration.temperatures, calibration.table, tolerance,
                calibration.backbone_flops,
            )
        sweep.append((cal, evaluate(cal)))
    return VisionSelfXit(
        heads, calibration, evaluate(calibration), (len(train), len(val), len(test)), images[test], sweep
    )


def vision_report(
    run: VisionSelfXit,
    *,
    dataset: str,
    arch: str,
    backbone_record: dict,
    settings: SelfXitSettings,
    latency: LatencyTable | None = None,
    command: str = "",
) -> dict:
    """The run's JSON-ready report (see :func:`ee_rl.selfxit.report.render_markdown`)."""
    test = run.test
    return {
        "name": f"{dataset} / {arch}",
        "kind": "vision",
        "command": command,
        "dataset": dataset,
        "arch": arch,
        "backbone": {
            "sha256": backbone_record.get("sha256"),
            "seed": backbone_record.get("seed"),
            "source": backbone_record.get("source"),
            "accuracy_on_whole_inference_data": backbone_record.get("test_accuracy"),
            "training_config": backbone_record.get("config"),
        },
        "split_sizes": dict(zip(("train", "validation", "test"), run.split_sizes)),
        **calibration_report(run.calibration, run.heads),
        "backbone_accuracy": test.backbone_accuracy,
        "accuracy": test.accuracy,
        "accuracy_drop": test.accuracy_drop,
        "inference_time": test.inference_time,
        "wall_clock": {
            "backbone_ms": test.backbone_ms,
            "early_exit_ms": test.early_exit_ms,
            "backbone_cpu_ms": test.backbone_cpu_ms,
            "early_exit_cpu_ms": test.early_exit_cpu_ms,
            "what": f"{test.samples} test samples in batches of {test.batch_size}, CPU, "
            f"{torch.get_num_threads()} thread(s)",
        },
        "test": held_out_report(test),
        "tolerance_sweep": [tolerance_row(cal, res) for cal, res in run.sweep],
        "latency": latency_report(latency) if latency is not None else None,
        "settings": dataclasses.asdict(settings),
    }


def run_vision_experiment(
    dataset: str,
    arch: str,
    out_dir: Path,
    settings: SelfXitSettings,
    *,
    backbone_path: Path | None = None,
    vision_config: str | None = None,
    latency: bool = True,
    command: str = "",
    progress: bool = False,
    data_dir: Path | None = None,
    guarantee: Guarantee | None = None,
) -> dict:
    """Backbone (loaded or trained), label-free SelfXit on the dataset's test split, latency table, report files.

    ``data_dir``: where the dataset's files are (not needed for digits). Writes ``report.json`` and ``report.md``
    into ``out_dir`` and returns the report.
    """
    check_dataset_source(dataset, data_dir)  # before any folder is made
    out_dir = ensure_writable_dir(out_dir)
    net, record = prepare_backbone(
        dataset, arch, backbone_path=backbone_path, seed=settings.seed, config=vision_config, progress=progress,
        data_dir=data_dir,
    )
    data = load_dataset(dataset, data_dir, seed=int(record.get("seed", settings.seed)))
    images, labels = split_tensors(data.test, settings.batch_size)
    run = run_vision_selfxit(net, images, labels, settings, guarantee)
    table = None
    if latency:
        table = latency_vs_batch(
            run.calibration.deployed, run.calibration.rule, run.test_inputs, settings.latency_batch_sizes,
            repeats=settings.latency_repeats,
        )
    report = vision_report(
        run, dataset=dataset, arch=arch, backbone_record=record, settings=settings, latency=table, command=command
    )
    write_report(report, out_dir)
    return report
