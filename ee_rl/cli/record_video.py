"""Record one full game of the early-exit agent with an exit overlay:
``python scripts/record_video.py --env Pong --method ztw --threshold 0.8``.

The mp4 (or ``.gif``) shows the real game screen, upscaled, and under it which exit answered each decision, its
confidence and the running share of compute saved; a summary card ends it. ffmpeg comes from ``imageio-ffmpeg``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pong", help="game name (Pong, Qbert, ...) or ALE id (ALE/Pong-v5)")
    parser.add_argument("--agent", default=None, help="agent directory with expert.zip, exits-*.pt (agents/<Env>)")
    parser.add_argument("--method", default="ztw", help="ztw, sdn or pbee (default ztw)")
    parser.add_argument(
        "--threshold", default="0.8", help="max-probability threshold (ztw, sdn), patience (pbee), or 'full'"
    )
    parser.add_argument(
        "--out", default=None, help="video file, .mp4 or .gif (default runs/video/<Env>_<method>_<rule>.mp4)"
    )
    parser.add_argument("--seed", type=argtypes.seed, default=10_000, help="env seed (default 10000)")
    parser.add_argument("--sticky-prob", type=float, default=0.1, help="sticky action probability (default 0.1)")
    parser.add_argument("--max-seconds", type=float, default=None, help="cut the game part of the video after this")
    parser.add_argument("--fps", type=float, default=30.0, help="video frames per second = decisions per second")
    parser.add_argument("--scale", type=int, default=3, help="integer upscaling of the 210x160 screen (default 3)")
    argtypes.add_runtime_arg(parser, "agent's decisions (the same game either way)")
    return parser.parse_args()


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.core import rule_for_method
    from ee_rl.io import check_file_writable
    from ee_rl.rl import sweep, video  # heavy imports after argument parsing
    from ee_rl.rl.games import display_name, rom_id
    from ee_rl.rl.policy import AGENT_METHODS

    game = rom_id(args.env)
    if args.method not in AGENT_METHODS:
        raise UserError(f"--method must be one of {', '.join(AGENT_METHODS)}, got {args.method!r}")
    if args.threshold.strip().lower() in ("full", "inf"):
        threshold = sweep.FULL
    else:
        try:
            threshold = float(args.threshold)
        except ValueError:
            raise UserError(f"--threshold must be a number or 'full', got {args.threshold!r}") from None
    if args.method != "pbee" and threshold != sweep.FULL and not 0 <= threshold <= 1:
        raise UserError(f"--threshold must be a probability in [0, 1] or 'full' for {args.method}, got {threshold:g}")
    rule = rule_for_method(args.method, threshold)
    label = sweep.rule_label(args.method, threshold)
    agent_dir = Path(args.agent) if args.agent is not None else Path("agents") / display_name(game)
    default_name = f"{display_name(game)}_{args.method}_{label.replace('>', '').replace('=', '')}.mp4"
    out = Path(args.out) if args.out is not None else Path("runs") / "video" / default_name
    if out.suffix.lower() not in video.VIDEO_SUFFIXES:
        raise UserError(f"--out must end in {' or '.join(video.VIDEO_SUFFIXES)}, got {out.name}")
    check_file_writable(out)  # before the game is played, not after
    policy = sweep.load_agents(agent_dir, [args.method], game)[args.method]
    from ee_rl.rl.policy import agent_paths, onnx_cache_dir

    policy.use_runtime(args.runtime, cache_dir=onnx_cache_dir(agent_paths(agent_dir, args.method).heads))

    recording = video.record_game(
        policy,
        rule,
        game,
        out,
        seed=args.seed,
        sticky_prob=args.sticky_prob,
        max_seconds=args.max_seconds,
        fps=args.fps,
        scale=args.scale,
        title=f"{display_name(game)} · {args.method.upper()} {label}",
    )
    print(json.dumps(recording.to_dict()))


if __name__ == "__main__":
    main()
