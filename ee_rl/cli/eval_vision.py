"""Evaluate SDN, PBEE and ZTW over one or more seeds and write the report (budget table CSV/Markdown, paired
differences to SDN, hindsight improvability, plots).

Example (trains what is missing, then evaluates 8 seeds):
``python scripts/eval_vision.py --dataset digits-noisy --seeds 8 --train``
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main
from ee_rl.vision.cli import add_common_args, apply_threads


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--seeds", type=int, default=1, help="evaluate seeds 0..N-1 (default 1)")
    parser.add_argument("--seed", type=argtypes.seed, default=None, help="evaluate this one seed only")
    parser.add_argument("--methods", default="sdn,pbee,ztw",
                        help="comma list: sdn, pbee, ztw, ztw-<ablation> (default sdn,pbee,ztw)")
    parser.add_argument("--runs", default="runs/vision", help="parent of the per-seed run directories")
    parser.add_argument("--out", default=None,
                        help="report directory (default runs/vision/report/<dataset>/; with --publish "
                             "results/vision/<dataset>/)")
    parser.add_argument("--publish", action="store_true",
                        help="write the report into the committed results/vision/<dataset>/")
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    parser.add_argument("--train", action="store_true", help="train (or finish) what a seed's run lacks first")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-render the tables and plots in --out from its seeds.json (no evaluation)")
    parser.add_argument("--weights", default=None, help="with --train: pretrained backbone weights")
    parser.add_argument("--transfer", action="store_true", help="with --train --weights: new linear head first")
    argtypes.add_executor_args(parser, "seeds' training runs (with --train)")
    argtypes.add_runtime_arg(parser, "evaluation passes (the exported graphs a deployment runs)")
    parser.add_argument("--cpus", type=argtypes.workers, default=None,
                        help="with --executor process: CPUs the runs may use (default: all of this machine's)")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.core.method import method_by_name  # heavy imports after argument parsing
    from ee_rl.vision.backbones import default_arch
    from ee_rl.vision.config import load_vision_config
    from ee_rl.vision.experiment import ExperimentSpec, evaluate_experiment, rewrite_report

    from ee_rl.cli.args import cpu_count
    from ee_rl.exec import check_executor, make_executor

    executor = args.executor or "serial"
    check_executor(executor, args.ray_address)
    if args.cpus is not None and executor != "process":
        raise UserError("--cpus sizes the process executor: use it with --executor process")
    apply_threads(args.threads)
    if args.seed is None and args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods is empty; e.g. --methods sdn,pbee,ztw")
    for m in methods:
        if m != "pbee":
            method_by_name(m)
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods lists a method twice: {args.methods}")
    arch = args.arch or default_arch(args.dataset)
    config = load_vision_config(args.config, args.dataset, arch, args.overrides)
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    if args.publish and args.out:
        raise UserError("--publish writes results/vision/<dataset>/; give it or --out, not both")
    # Reports land in the committed results/ only when asked; an existing report is replaced only when asked.
    out = Path(args.out) if args.out else Path("results/vision" if args.publish else "runs/vision/report") / args.dataset
    if not args.report_only and (out / "seeds.json").is_file() and not args.overwrite:
        raise UserError(f"{out} already holds a report (seeds.json): --overwrite to replace it, or --report-only "
                        "to re-render it")
    if args.report_only:
        rewrite_report(out, config)
        print((out / "budget_table.md").read_text())
        return
    experiment = ExperimentSpec(
        dataset=args.dataset, arch=arch, seeds=seeds, runs_dir=Path(args.runs), out_dir=out, config=config,
        methods=methods, data_dir=Path(args.data_dir) if args.data_dir else None, device=args.device,
        progress=not args.no_progress_bar, train_missing=args.train,
        weights=Path(args.weights) if args.weights else None, transfer=args.transfer,
        command=shlex.join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), runtime=args.runtime,
    )
    with make_executor(executor, cpus=args.cpus or cpu_count(), ray_address=args.ray_address) as pool:
        summary = evaluate_experiment(experiment, pool)
    print((out / "budget_table.md").read_text())
    print(json.dumps({"out": str(out), "wall_time_s": round(summary["wall_time_s"]["total"], 1)}))


if __name__ == "__main__":
    main()
