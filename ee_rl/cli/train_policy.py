"""Train (or resume) the PPO expert on an Atari game: ``python scripts/train_policy.py --env Pong``."""

from __future__ import annotations

import argparse
import json

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="Pong", help="game name (Pong, Qbert, ...) or ALE id (ALE/Pong-v5)")
    parser.add_argument("--total-timesteps", type=argtypes.timesteps, default=None,
                        help="env steps in total (config: 10M)")
    parser.add_argument("--seed", type=argtypes.seed, default=0)
    parser.add_argument("--n-envs", type=argtypes.n_envs, default=None, help="parallel envs (config: 8)")
    parser.add_argument("--out", default=None, help="run directory (default runs/ppo/<Env>_s<seed>/)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/latest.zip")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")
    parser.add_argument("--config", default=None, help="YAML config (default configs/ppo_atari.yaml)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="full games evaluated at the end")
    parser.add_argument("--no-progress-bar", action="store_true", help="for logs of background runs")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.rl.expert import train_expert  # heavy imports after argument parsing

    result = train_expert(
        args.env,
        args.out,
        seed=args.seed,
        total_timesteps=args.total_timesteps,
        n_envs=args.n_envs,
        resume=args.resume,
        device=args.device,
        config=args.config,
        eval_episodes=args.eval_episodes,
        progress_bar=not args.no_progress_bar,
    )
    summary = {k: result[k] for k in ("game", "timesteps", "wall_time_s", "steps_per_s", "return_mean", "return_std")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
