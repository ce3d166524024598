"""Train a vision backbone, then ZTW and/or SDN exit heads on it (one run directory per seed).

Example: ``python scripts/train_vision.py --dataset cifar10 --arch resnet56 --data-dir data --device cuda``
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
    parser.add_argument("--method", default="both", choices=("ztw", "sdn", "both"),
                        help="exit heads to train (PBEE uses the SDN heads); default both")
    parser.add_argument("--cascade-only", action="store_true", help="ZTW ablation: cascade, no ensembles")
    parser.add_argument("--ensemble-only", action="store_true", help="ZTW ablation: ensembles of independent ICs")
    parser.add_argument("--additive", action="store_true", help="ZTW ablation: additive instead of geometric")
    parser.add_argument("--no-stop-gradient", action="store_true", help="ZTW ablation: gradients through cascade")
    parser.add_argument("--seed", type=argtypes.seed, default=0,
                        help="seed (for digits it also picks the train/test split)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="train seeds 0..N-1, each in <runs>/<dataset>_<arch>_s<seed>/ (instead of --seed)")
    parser.add_argument("--out", default=None, help="run directory (default <runs>/<dataset>_<arch>_s<seed>/)")
    parser.add_argument("--runs", default="runs/vision", help="parent of the default run directories")
    parser.add_argument("--resume", action="store_true", help="reuse finished phases in --out and continue")
    parser.add_argument("--weights", default=None,
                        help="pretrained backbone: torchvision ResNet-50 state dict (.pth) or an ee_rl backbone.pt")
    parser.add_argument("--transfer", action="store_true",
                        help="with --weights: train a new linear head for this dataset first (ZTW B.3)")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.core.method import SDN, exit_method  # heavy imports after argument parsing
    from ee_rl.vision.backbones import default_arch
    from ee_rl.vision.config import load_vision_config
    from ee_rl.vision.experiment import run_dir_for
    from ee_rl.vision.train import RunSpec, train_run

    apply_threads(args.threads)
    arch = args.arch or default_arch(args.dataset)
    if args.seeds is not None and (args.seeds < 1 or args.out is not None):
        raise UserError("--seeds N needs N >= 1 and writes to <runs>/<dataset>_<arch>_s<seed>/: do not pass --out")
    flags = dict(cascade_only=args.cascade_only, ensemble_only=args.ensemble_only, additive=args.additive,
                 no_stop_gradient=args.no_stop_gradient)
    if args.method == "both":
        variants = (exit_method("ztw", **flags), SDN)
    else:
        variants = (exit_method(args.method, **flags),)
    config = load_vision_config(args.config, args.dataset, arch, args.overrides)
    seeds = range(args.seeds) if args.seeds is not None else [args.seed]
    command = shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    for seed in seeds:
        out = Path(args.out) if args.out is not None else run_dir_for(Path(args.runs), args.dataset, arch, seed)
        summary = train_run(RunSpec(
            dataset=args.dataset, arch=arch, out_dir=out, config=config,
            data_dir=Path(args.data_dir) if args.data_dir else None, seed=seed, variants=variants,
            device=args.device, resume=args.resume, weights=Path(args.weights) if args.weights else None,
            transfer=args.transfer, progress=not args.no_progress_bar, extra_info={"command": command},
        ))
        brief = {
            "run_dir": str(out),
            "seed": seed,
            "backbone_test_accuracy": summary["backbone_test_accuracy"],
            "exit_test_accuracy": {k: [round(a, 2) for a in v["exit_test_accuracy"]]
                                   for k, v in summary["variants"].items()},
            "wall_time_s": {k: round(v, 1) for k, v in summary["wall_time_s"].items()},
        }
        print(json.dumps(brief))


if __name__ == "__main__":
    main()
