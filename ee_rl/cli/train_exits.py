"""Train early exits (ICs) on a frozen PPO expert by behavioural cloning:
``python scripts/train_exits.py --env Pong --expert agents/Pong/expert.zip --method ztw``."""

from __future__ import annotations

import argparse
import json

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="Pong", help="game name (Pong, Qbert, ...) or ALE id (ALE/Pong-v5)")
    parser.add_argument("--expert", required=True, help="the PPO expert's zip (e.g. agents/Pong/expert.zip)")
    parser.add_argument("--method", default="ztw", choices=("ztw", "sdn"),
                        help="ztw: cascaded ICs + geometric ensembles; sdn: independent ICs (PBEE reuses these)")
    ablations = parser.add_argument_group("ztw ablations (ZTW appendix C)")
    ablations.add_argument("--cascade-only", action="store_true", help="no ensembles (C.1)")
    ablations.add_argument("--ensemble-only", action="store_true", help="no cascade connections (C.1)")
    ablations.add_argument("--additive", action="store_true", help="additive instead of geometric ensembles (C.2)")
    ablations.add_argument("--no-stop-gradient", action="store_true", help="gradients flow through cascades (C.3)")
    parser.add_argument("--total-timesteps", type=argtypes.timesteps, default=None,
                        help="env steps in total (config: 1M)")
    parser.add_argument("--seed", type=argtypes.seed, default=0)
    parser.add_argument("--out", default=None, help="run directory (default runs/exits/<Env>_<method>_s<seed>/)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/latest.pt")
    parser.add_argument("--config", default=None, help="YAML config (default configs/exits.yaml)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda")
    parser.add_argument("--threads", type=argtypes.threads, default=1,
                        help="torch intra-op threads (default 1: the batches are small; 0 = all cores)")
    parser.add_argument("--no-progress-bar", action="store_true", help="for logs of background runs")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.rl.distill import distill_exits  # heavy imports after argument parsing
    from ee_rl.core.method import exit_method

    method = exit_method(
        args.method,
        cascade_only=args.cascade_only,
        ensemble_only=args.ensemble_only,
        additive=args.additive,
        no_stop_gradient=args.no_stop_gradient,
    )
    summary = distill_exits(
        args.env,
        args.expert,
        method,
        args.out,
        seed=args.seed,
        total_timesteps=args.total_timesteps,
        resume=args.resume,
        config=args.config,
        device=args.device,
        threads=args.threads or None,
        progress_bar=not args.no_progress_bar,
    )
    keys = ("game", "method", "timesteps", "wall_time_s", "steps_per_s", "recent_episode_return_mean", "heads")
    print(json.dumps({**{k: summary[k] for k in keys}, **summary["final_round_metrics"]}))


if __name__ == "__main__":
    main()
