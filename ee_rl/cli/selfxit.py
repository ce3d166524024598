"""SelfXit: label-free exits, calibrated per-exit thresholds from a tolerance, exit-subset selection.

Vision: ``python scripts/selfxit.py --dataset digits --arch small_cnn --tolerance 0.02``
RL:     ``python scripts/selfxit.py --env Pong --agent agents/Pong --tolerance 0.02``
With a guarantee: ``--tolerance 0.02 --guarantee 0.1``: the risk is ≤ 2 % with probability ≥ 90 % (Learn then Test).

Writes ``report.json`` and ``report.md`` into ``--out`` (default ``results/selfxit/<dataset or game>/``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main

if TYPE_CHECKING:  # heavy modules: imported after argument parsing
    from ee_rl.selfxit.pipeline import Guarantee
    from ee_rl.selfxit.settings import SelfXitSettings


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", help="vision dataset (digits, digits-noisy, cifar10, ...)")
    what.add_argument("--env", help="Atari game (Pong, ...): calibrate the agent's SDN heads")
    parser.add_argument("--arch", default=None, help="vision backbone architecture (default: the dataset's, "
                                                     "resnet20_w8 on digits, resnet56 on CIFAR)")
    parser.add_argument("--backbone", default=None, help="vision: an ee_rl backbone.pt (default: train one into "
                                                         "runs/selfxit/<dataset>_<arch>_s<seed>/, reused if there)")
    parser.add_argument("--data-dir", default=None, help="vision: the dataset's local files (not needed for digits; "
                        "see ee_rl.vision.data for the layouts)")
    parser.add_argument("--agent", default=None, help="RL: directory with expert.zip and exits-sdn.pt "
                                                      "(default agents/<Env>)")
    parser.add_argument("--tolerance", type=float, default=None, help="tolerated accuracy drop T as a fraction "
                                                                       "(config: 0.02)")
    parser.add_argument("--guarantee", type=argtypes.probability, default=None, metavar="DELTA",
                        help="risk-controlled thresholds: the risk is <= T with probability >= 1 - DELTA over the "
                             "draw of the validation split (half fits the path, half certifies it)")
    parser.add_argument("--risk", choices=("consistency", "accuracy-gap"), default=None,
                        help="with --guarantee: consistency (default; label-free disagreement with the backbone) or "
                             "accuracy-gap (vision: backbone right and early answer wrong; reads validation labels)")
    parser.add_argument("--out", default=None,
                        help="output directory (default runs/selfxit/<name>/; with --publish results/selfxit/<name>/)")
    parser.add_argument("--publish", action="store_true",
                        help="write into the committed results/selfxit/<name>/ (replacing the report there)")
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    parser.add_argument("--config", default=None, help="YAML config (default configs/selfxit.yaml)")
    parser.add_argument("--vision-config", default=None, help="vision recipe for the backbone "
                                                              "(default configs/vision.yaml)")
    parser.add_argument("--seed", type=argtypes.seed, default=None, help="split / heads / search seed (config: 0)")
    parser.add_argument("--search-trials", type=int, default=None, help="Optuna trials per exit, 0 = no search")
    parser.add_argument("--threads", type=argtypes.threads, default=None, help="torch intra-op threads (config: 1)")
    parser.add_argument("--episodes", type=argtypes.episodes, default=None,
                        help="RL: full games per agent (config: 10)")
    parser.add_argument("--sweep-csv", default=None, help="RL: also append the SelfXit row to this sweep.csv")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency-vs-batch-size table")
    argtypes.add_runtime_arg(parser, "deployed model on the test part and in the games (held-out numbers and "
                             "returns are the same; ms are not)", default=None)
    parser.add_argument("--no-progress-bar", action="store_true", help="for logs of background runs")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    import torch  # heavy imports after argument parsing

    from ee_rl.selfxit.settings import load_settings

    name = args.dataset
    if args.env is not None:
        from ee_rl.rl.games import display_name, rom_id

        name = display_name(rom_id(args.env))
    settings = load_settings(args.config, name)
    for flag, field in (("tolerance", "tolerance"), ("seed", "seed"), ("search_trials", "search_trials"),
                        ("threads", "threads"), ("episodes", "episodes"), ("runtime", "runtime")):
        if getattr(args, flag) is not None:
            setattr(settings, field, getattr(args, flag))
    settings.validate()
    guarantee = _guarantee(args, settings)
    torch.set_num_threads(settings.threads)
    if args.publish and args.out is not None:
        raise UserError("--publish writes results/selfxit/<name>/; give it or --out, not both")
    # Results land in the committed results/ only when asked: a trial run must not replace a published report.
    out_dir = Path(args.out) if args.out is not None else Path("results" if args.publish else "runs") / "selfxit" / name
    if args.out is not None and (out_dir / "report.json").is_file() and not args.overwrite:
        raise UserError(f"{out_dir} already holds a SelfXit report: --overwrite to replace it")
    command = " ".join(["python", *map(shlex.quote, sys.argv)])
    if args.dataset is not None:
        if args.agent is not None or args.sweep_csv is not None:
            raise UserError("--agent and --sweep-csv are for --env (RL), not --dataset")
        from ee_rl.vision.data import check_dataset_source

        check_dataset_source(args.dataset, args.data_dir)
        from ee_rl.selfxit.vision import run_vision_experiment
        from ee_rl.vision.backbones import default_arch

        report = run_vision_experiment(
            args.dataset, args.arch or default_arch(args.dataset), out_dir, settings,
            backbone_path=Path(args.backbone) if args.backbone else None, vision_config=args.vision_config,
            latency=not args.no_latency, command=command, progress=not args.no_progress_bar, guarantee=guarantee,
            data_dir=Path(args.data_dir) if args.data_dir else None,
        )
        print(f"{report['name']}: T = {100 * settings.tolerance:g} %, accuracy drop on the test split "
              f"{100 * report['accuracy_drop']:.2f} % ({100 * report['backbone_accuracy']:.2f} % -> "
              f"{100 * report['accuracy']:.2f} %), inference time {100 * report['inference_time']:.1f} % of the "
              f"backbone's FLOPs, subset {report['subset_stages']}")
    else:
        if args.arch is not None or args.backbone is not None or args.data_dir is not None:
            raise UserError("--arch, --backbone and --data-dir are for --dataset (vision), not --env")
        from ee_rl.selfxit.rl import run_rl_experiment

        report = run_rl_experiment(
            args.env, Path(args.agent) if args.agent else Path("agents") / name, out_dir, settings,
            latency=not args.no_latency, command=command,
            sweep_csv=Path(args.sweep_csv) if args.sweep_csv else None, progress=not args.no_progress_bar,
            guarantee=guarantee,
        )
        print(f"{report['name']}: T = {100 * settings.tolerance:g} %, return {report['return']:+.2f} "
              f"(expert {report['expert_return']:+.2f}), inference time {100 * report['inference_time']:.1f} % "
              f"of the expert's FLOPs, subset {report['subset_stages']}")
    if report.get("guarantee"):
        g = report["guarantee"]
        print(f"guarantee: P({g['risk']} risk <= {g['epsilon']:g}) >= {1 - g['delta']:g} ({g['bound']}, "
              f"n_cal = {g['n_cal']}); certified {g['certified']} of {g['path_length']}, thresholds {g['thresholds']}")
    print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.md'}")


def _guarantee(args: argparse.Namespace, settings: SelfXitSettings) -> Guarantee | None:
    """The risk control asked for (None without --guarantee); a bad combination is a UserError."""
    if args.guarantee is None:
        if args.risk is not None:
            raise UserError("--risk chooses the risk of --guarantee; give --guarantee DELTA too")
        return None
    if args.risk == "accuracy-gap" and args.env is not None:
        raise UserError("--risk accuracy-gap needs labels: RL has none, use --risk consistency")
    levels = [settings.tolerance, *(settings.tolerance_sweep if args.dataset is not None else [])]
    if any(not 0 < t < 1 for t in levels):
        raise UserError(f"with --guarantee the tolerance (and the config's tolerance_sweep) is the risk level and "
                        f"must be in (0, 1), got {levels}")
    from ee_rl.selfxit.pipeline import Guarantee

    return Guarantee(args.guarantee, args.risk or "consistency", seed=settings.seed)


if __name__ == "__main__":
    main()
