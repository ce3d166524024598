"""Evaluate a trained PPO checkpoint and publish it as an agent folder (expert.zip, expert_eval.json,
learning curve, README): ``python scripts/publish_expert.py --env Pong --checkpoint
agents/Pong/training/checkpoints/latest.zip --run-dir agents/Pong/training --out agents/Pong``."""

from __future__ import annotations

import argparse
import json

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--env", required=True, help="game name (Pong, Qbert, ...) or ALE id (ALE/Pong-v5)")
    parser.add_argument("--checkpoint", required=True, help="PPO zip to publish, e.g. <run>/checkpoints/latest.zip")
    parser.add_argument("--out", required=True, help="agent folder to write, e.g. agents/Pong")
    curve = parser.add_mutually_exclusive_group(required=True)
    curve.add_argument("--run-dir", help="the training run's directory: its episodes.csv gives the learning curve")
    curve.add_argument("--no-curve", action="store_true", help="publish without a learning curve (no run dir needed)")
    parser.add_argument("--episodes", type=argtypes.episodes, default=10, help="full games to evaluate (≥ 1)")
    parser.add_argument("--seed", type=argtypes.seed, default=0,
                        help="base env seed of the evaluation (envs use seed, seed+1, ...)")
    parser.add_argument("--min-return", type=float, default=None, help="write nothing and fail if the mean is lower")
    parser.add_argument("--machine", default=None,
                        help="training machine description (default: this machine, detected)")
    parser.add_argument("--config", default=None, help="YAML config for sticky_prob (default configs/ppo_atari.yaml)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")
    parser.add_argument("--threads", type=argtypes.threads, default=1, help="torch intra-op threads for the evaluation")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    import torch  # heavy imports after argument parsing

    from ee_rl.errors import UserError
    from ee_rl.rl.publish import ReturnBelowMinimum, publish_expert

    if args.threads < 1:
        raise UserError(f"threads must be a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        result = publish_expert(
            args.env,
            args.checkpoint,
            args.out,
            run_dir=args.run_dir,
            episodes=args.episodes,
            seed=args.seed,
            min_return=args.min_return,
            machine=args.machine,
            config=args.config,
            device=args.device,
        )
    except ReturnBelowMinimum as exc:
        print(json.dumps(exc.evaluation))
        raise
    keys = ("game", "timesteps", "episodes", "return_mean", "return_std", "return_min", "return_max", "expert_bytes")
    print(json.dumps({k: result[k] for k in keys}))


if __name__ == "__main__":
    main()
