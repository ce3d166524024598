"""Multi-seed experiment: per seed one split, one frozen backbone, SDN and ZTW heads on it (PBEE reads the SDN heads);
evaluate every method from one all-exits pass and write the aggregated report (CSV, Markdown, plots, JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ee_rl.core.method import method_by_name
from ee_rl.devices import resolve_device
from ee_rl.errors import UserError
from ee_rl.exec import Executor, SerialExecutor
from ee_rl.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from ee_rl.vision.checkpoint import load_exit_model
from ee_rl.vision.config import VisionConfig
from ee_rl.vision.data import check_dataset_source, load_dataset
from ee_rl.vision.evaluate import SeedEvaluation, evaluate_seed, seed_from_json, seed_to_json
from ee_rl.vision.report import budget_markdown, plot_accuracy_vs_cost, plot_hindsight, write_csv
from ee_rl.vision.stats import (
    BUDGET_COLUMNS,
    HINDSIGHT_COLUMNS,
    HINDSIGHT_SEED_COLUMNS,
    PAIRED_COLUMNS,
    budget_rows,
    hindsight_rows,
    hindsight_seed_rows,
    paired_rows,
)
from ee_rl.vision.tasks import train_seeds
from ee_rl.vision.train import RunSpec


def run_dir_for(runs_dir: Path, dataset: str, arch: str, seed: int) -> Path:
    """``<runs_dir>/<dataset>_<arch>_s<seed>`` (the default run directory of one seed)."""
    return Path(runs_dir) / f"{dataset}_{arch}_s{seed}"


def needed_variants(methods: Sequence[str]) -> list[str]:
    """Trained variants the methods need (``pbee`` → ``sdn``), in order, without duplicates."""
    return list(dict.fromkeys("sdn" if m == "pbee" else m for m in methods))


@dataclass
class ExperimentSpec:
    """A multi-seed evaluation.

    Attributes:
        dataset / arch: what to evaluate.
        seeds: seed numbers (one split and backbone each).
        runs_dir: where the per-seed run directories are (``<dataset>_<arch>_s<seed>``).
        out_dir: where the report goes.
        config: recipe (used to train missing runs and for batch sizes).
        methods: ``sdn``, ``pbee``, ``ztw`` and/or ZTW ablation names; ``sdn`` must be among them for the paired
            differences.
        data_dir / device / progress: as for training.
        train_missing: train whatever a seed lacks (with resume) instead of failing.
        weights / transfer: passed to training of missing runs.
        command: the command line, recorded in ``summary.json``.
        runtime: what computes the evaluation passes: ``torch`` or ``onnx`` (the exported segments).
    """

    dataset: str
    arch: str
    seeds: Sequence[int]
    runs_dir: Path
    out_dir: Path
    config: VisionConfig
    methods: Sequence[str] = ("sdn", "pbee", "ztw")
    data_dir: Path | None = None
    device: str = "cpu"
    progress: bool = True
    train_missing: bool = False
    weights: Path | None = None
    transfer: bool = False
    command: str = ""
    runtime: str = "torch"
    extra_info: dict[str, Any] = field(default_factory=dict)


def evaluate_experiment(spec: ExperimentSpec, executor: Executor | None = None) -> dict[str, Any]:
    """Train (if asked) and evaluate every seed, then write the report into ``spec.out_dir``; return the summary.

    The seeds that need training are trained at once as tasks of ``executor`` (default: one after another in this
    process), each with this process's torch threads; evaluation follows here, seed by seed.
    """
    if not spec.seeds:
        raise UserError("need at least one seed")
    variants = needed_variants(spec.methods)
    for name in variants:
        method_by_name(name)  # validate early
    # The device before the report directory, so a refused --device (e.g. cuda without a GPU) leaves nothing behind.
    device = resolve_device(spec.device)
    check_dataset_source(spec.dataset, spec.data_dir)
    # Every seed's trained exits (or --train) before the report folder is made: a refused run leaves nothing.
    missing = {seed: [v for v in variants
                      if not (run_dir_for(spec.runs_dir, spec.dataset, spec.arch, seed) / f"exits-{v}.pt").is_file()]
               for seed in spec.seeds}
    for seed, lacking in missing.items():
        if lacking and not spec.train_missing:
            raise UserError(
                f"seed {seed}: {run_dir_for(spec.runs_dir, spec.dataset, spec.arch, seed)} lacks "
                f"{', '.join(f'exits-{v}.pt' for v in lacking)}; train it with scripts/train_vision.py --dataset "
                f"{spec.dataset} --arch {spec.arch} --seed {seed}, or pass --train"
            )
    out = ensure_writable_dir(spec.out_dir)
    results: list[SeedEvaluation] = []
    timings: dict[str, dict[str, float]] = {str(seed): {"train_s": 0.0} for seed in spec.seeds}
    started = time.perf_counter()
    to_train = []
    for seed in spec.seeds:
        run_dir = run_dir_for(spec.runs_dir, spec.dataset, spec.arch, seed)
        if missing[seed]:
            to_train.append(RunSpec(
                dataset=spec.dataset, arch=spec.arch, out_dir=run_dir, config=spec.config, data_dir=spec.data_dir,
                seed=seed, variants=tuple(method_by_name(v) for v in variants), device=spec.device, resume=True,
                weights=spec.weights, transfer=spec.transfer,
                progress=spec.progress and (executor is None or isinstance(executor, SerialExecutor)),
            ))
    for run_spec, run in train_seeds(to_train, executor or SerialExecutor(), torch.get_num_threads()):
        timings[str(run_spec.seed)]["train_s"] = run.wall_time_s
    for seed in spec.seeds:
        run_dir = run_dir_for(spec.runs_dir, spec.dataset, spec.arch, seed)
        t1 = time.perf_counter()
        data = load_dataset(spec.dataset, spec.data_dir, seed=seed, num_workers=spec.config.num_workers,
                            image_size=spec.config.image_size, resize=spec.config.resize)
        models = {}
        for v in variants:
            model, record = load_exit_model(run_dir / f"exits-{v}.pt")
            if record["dataset"] != spec.dataset or record["arch"] != spec.arch:
                raise UserError(f"{run_dir / f'exits-{v}.pt'} is for {record['dataset']}/{record['arch']}")
            models[v] = model.to(device)
        results.append(evaluate_seed(seed, models, data.test, spec.methods,
                                     batch_size=spec.config.eval_batch_size, device=device,
                                     runtime=spec.runtime))
        timings[str(seed)]["eval_s"] = time.perf_counter() - t1
    summary = write_report(spec, results)
    summary["wall_time_s"] = {"total": time.perf_counter() - started, "per_seed": timings}
    atomic_write_json(out / "summary.json", summary)
    return summary


def write_report(spec: ExperimentSpec, results: Sequence[SeedEvaluation]) -> dict[str, Any]:
    """Write budget_table.csv/.md, paired_vs_sdn.csv, hindsight.csv, hindsight_seeds.csv, seeds.json and the plots."""
    out = Path(spec.out_dir)
    methods = list(spec.methods)
    budget = budget_rows(results, methods)
    paired = paired_rows(results, methods) if "sdn" in methods else []
    hindsight = hindsight_rows(results, methods)
    hindsight_seeds = hindsight_seed_rows(results, methods)
    write_csv(out / "budget_table.csv", budget, BUDGET_COLUMNS)
    write_csv(out / "paired_vs_sdn.csv", paired, PAIRED_COLUMNS)
    write_csv(out / "hindsight.csv", hindsight, HINDSIGHT_COLUMNS)
    write_csv(out / "hindsight_seeds.csv", hindsight_seeds, HINDSIGHT_SEED_COLUMNS)
    title = f"{spec.dataset} / {spec.arch}"
    backbone = [r.backbone_accuracy for r in results]
    atomic_write_text(out / "budget_table.md", budget_markdown(title, budget, paired, hindsight, backbone))
    plot_accuracy_vs_cost(results, methods, out / "accuracy_vs_inference_time.png", title)
    if hindsight_seeds:
        plot_hindsight(hindsight_seeds, out / "hindsight.png", f"{title} — hindsight improvability")
    # Compact JSON: this file holds every operating point of every seed.
    atomic_write_text(out / "seeds.json", json.dumps([seed_to_json(r) for r in results], separators=(",", ":")))
    return {
        "dataset": spec.dataset,
        "arch": spec.arch,
        "seeds": list(spec.seeds),
        "methods": methods,
        "command": spec.command,
        "backbone_accuracy": backbone,
        "config": spec.config.to_dict(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **spec.extra_info,
    }


def rewrite_report(out_dir: str | Path, config: VisionConfig) -> dict[str, Any]:
    """Re-render the report files of ``out_dir`` from its ``seeds.json`` and ``summary.json`` (no training and no
    evaluation: the numbers are the recorded ones); ``summary.json`` itself is left as it is."""
    out = Path(out_dir)
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {out / 'summary.json'} (run the evaluation first): {exc}") from None
    results = load_seed_results(out / "seeds.json")
    spec = ExperimentSpec(
        dataset=summary["dataset"], arch=summary["arch"], seeds=[r.seed for r in results], runs_dir=out,
        out_dir=out, config=config, methods=summary["methods"], command=summary.get("command", ""),
    )
    write_report(spec, results)
    return summary


def load_seed_results(path: str | Path) -> list[SeedEvaluation]:
    """Read ``seeds.json`` back (to redraw plots or recompute tables without re-running)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return [seed_from_json(d) for d in data]
