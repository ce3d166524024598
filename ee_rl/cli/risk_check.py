"""Does the tolerance hold? Hundreds of random calibration / test splits of real per-exit outputs; for each way of
choosing the thresholds (SelfXit's point estimate, a shared λ with a guarantee, per-exit thresholds with a
guarantee), how often the test risk exceeds ε, and the mean inference cost.

``python scripts/risk_check.py --dataset digits-noisy``  (backbone, label-free heads and outputs made once)
``python scripts/risk_check.py --dataset Pong``          (20,000 states of the shipped agent, recorded once)

The per-exit outputs are cached in ``runs/risk/cache/<dataset>.pt``; the splits are then pure table work.
Writes ``summary.json``, ``setup.json``, ``summary.md`` and ``cost_vs_epsilon.png`` into ``--out`` (default
``runs/risk/<dataset>/``; with ``--publish`` ``results/risk/<dataset>/``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main

if TYPE_CHECKING:  # heavy modules: imported after argument parsing
    from ee_rl.risk.experiment import RiskCheckSettings
    from ee_rl.risk.record import ExitRecord

DATASETS = ("digits-noisy", "Pong")
#: As ee_rl.core.calibrate.RISKS and ee_rl.risk.experiment.METHODS (named here so that --help imports no torch).
RISK_NAMES = ("consistency", "accuracy-gap")
METHOD_NAMES = ("point-estimate", "shared-ucb", "per-exit-ucb", "per-exit-ucb-no-split")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions such as 0.02,0.05, got {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"each ε must be a fraction in (0, 1) (0.05 = 5 %), got {text!r}")
    return tuple(sorted(set(values)))


def _names(accepted: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type``: comma-separated names, each one of ``accepted``."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(v.strip() for v in text.split(",")))
        bad = [n for n in names if n not in accepted]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; accepted: {', '.join(accepted)}")
        return names

    parse.__name__ = "names"
    return parse


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--splits", type=argtypes.int_in(1, 100_000, "splits"), default=200,
                        help="random calibration / test splits (default 200)")
    parser.add_argument("--delta", type=argtypes.probability, default=0.1, help="δ of the guarantees (default 0.1)")
    parser.add_argument("--epsilons", type=_fractions, default=None,
                        help="risk levels ε, comma-separated (default: the dataset's, see ee_rl.risk.experiment)")
    parser.add_argument("--risks", type=_names(RISK_NAMES), default=None,
                        help="consistency and/or accuracy-gap (labels: digits-noisy only); default all available")
    parser.add_argument("--methods", type=_names(METHOD_NAMES), default=None,
                        help=f"default all: {', '.join(METHOD_NAMES)}")
    parser.add_argument("--n-cal", type=argtypes.int_in(2, 10**7, "n_cal"), default=None,
                        help="calibration samples per split (default: the dataset's)")
    parser.add_argument("--n-test", type=argtypes.int_in(1, 10**7, "n_test"), default=None,
                        help="test samples per split (default: every non-calibration sample)")
    parser.add_argument("--fit-fraction", type=argtypes.probability, default=0.5,
                        help="per-exit UCB: share of the calibration samples that fits the path (default 0.5)")
    parser.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the splits (default 0)")
    parser.add_argument("--states", type=argtypes.int_in(100, 200_000, "states"), default=20_000,
                        help="Pong: expert states to record (default 20000)")
    parser.add_argument("--agent", default="agents/Pong", help="Pong: agent directory with exits-sdn.pt")
    parser.add_argument("--backbone", default=None,
                        help="digits-noisy: an ee_rl backbone.pt (default: train or reuse runs/selfxit/...)")
    parser.add_argument("--cache", default=None, help="per-exit outputs (default runs/risk/cache/<dataset>.pt)")
    parser.add_argument("--recompute", action="store_true", help="record the per-exit outputs again")
    parser.add_argument("--out", default=None, help="output directory (default runs/risk/<dataset>/)")
    parser.add_argument("--publish", action="store_true", help="write into the committed results/risk/<dataset>/")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs already in the output directory")
    parser.add_argument("--threads", type=argtypes.threads, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--no-progress-bar", action="store_true", help="for logs of background runs")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    import torch  # heavy imports after argument parsing

    from ee_rl.io import ensure_writable_dir
    from ee_rl.risk.experiment import default_settings
    from ee_rl.risk.record import ExitRecord, digits_pool_size, record_digits_noisy, record_pong
    from ee_rl.risk.report import OUTPUT_FILES, write_outputs
    from ee_rl.selfxit.settings import load_settings

    torch.set_num_threads(max(args.threads, 1))
    if args.publish and args.out is not None:
        raise UserError("--publish writes results/risk/<dataset>/; give it or --out, not both")
    settings = default_settings(args.dataset, delta=args.delta, n_splits=args.splits, epsilons=args.epsilons,
                                risks=args.risks, methods=args.methods, n_cal=args.n_cal, n_test=args.n_test,
                                fit_fraction=args.fit_fraction, seed=args.seed)
    pool_size = args.states if args.dataset == "Pong" else digits_pool_size()
    if settings.n_cal + (settings.n_test or 1) > pool_size:
        raise UserError(f"n_cal + n_test = {settings.n_cal + (settings.n_test or 1)} exceeds the {args.dataset} pool "
                        f"({pool_size} samples)")
    if args.dataset == "Pong" and "accuracy-gap" in settings.risks:
        raise UserError("Pong has no labels: use --risks consistency")
    out_dir = Path(args.out) if args.out else Path("results" if args.publish else "runs") / "risk" / args.dataset
    existing = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if existing and not args.overwrite:
        raise UserError(f"{out_dir} already holds {', '.join(existing)}: --overwrite to replace them")
    ensure_writable_dir(out_dir)
    cache = Path(args.cache) if args.cache else Path("runs") / "risk" / "cache" / f"{args.dataset}.pt"
    selfxit = load_settings(None, args.dataset)
    from_cache = cache.is_file() and not args.recompute
    if from_cache:
        record = ExitRecord.load(cache)
        if record.name != args.dataset or record.num_samples < pool_size:
            raise UserError(f"{cache} holds {record.num_samples} {record.name} samples, not {pool_size} "
                            f"{args.dataset} ones: --recompute")
    else:
        if args.dataset == "Pong":
            record = record_pong(Path(args.agent), args.states, selfxit)
        else:
            record = record_digits_noisy(selfxit, backbone_path=Path(args.backbone) if args.backbone else None,
                                         progress=not args.no_progress_bar)
        record.save(cache)
    rows, setup = _run(record, settings, not args.no_progress_bar)
    setup["command"] = " ".join(["python", *map(shlex.quote, sys.argv)])
    setup["cache"] = {"path": str(cache), "read_from_cache": from_cache}
    write_outputs(rows, setup, out_dir, args.dataset)
    print(f"wrote {', '.join(OUTPUT_FILES)} into {out_dir}")


def _run(record: ExitRecord, settings: RiskCheckSettings, progress: bool) -> tuple[list[dict], dict]:
    """Run the splits; the summary rows and the setup record."""
    import dataclasses

    from tqdm import tqdm

    from ee_rl.core.risk_control import HB_BOUND
    from ee_rl.risk.experiment import run_risk_check, summarize

    start = time.perf_counter()
    bar = tqdm(total=settings.n_splits, disable=not progress, desc="splits")
    outcomes = run_risk_check(record, settings, lambda k: bar.update(1))
    bar.close()
    rows = summarize(outcomes, settings)
    setup = {
        "dataset": record.name,
        "pool_size": record.num_samples,
        "pool": record.info,
        "exits": record.ic_logits.shape[0],
        "bound": HB_BOUND,
        "settings": dataclasses.asdict(settings),
        "splits_seconds": round(time.perf_counter() - start, 1),
    }
    return rows, setup


if __name__ == "__main__":
    main()
