"""Run (or continue) a game's whole pipeline: ``python scripts/reproduce.py --env Seaquest``.

Stages, in order: expert → publish-expert → evaluate-50 → exits-ztw → publish-exits-ztw → exits-sdn →
publish-exits-sdn → sweep → video → card (``ee_rl.rl.pipeline.game_stages``). A stage whose outputs exist for the
same inputs (SHA-256 in ``<agent>/.pipeline/<stage>.json``) is skipped; ``--resume`` continues an interrupted
training stage; ``--stages`` runs a subset; ``--dry-run`` prints the plan and does nothing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="game name (Seaquest, Qbert, ...) or ALE id (ALE/Pong-v5)")
    parser.add_argument("--stages", default=None, help="comma-separated stage names to run (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training stage")
    parser.add_argument("--agent-dir", default=None, help="agent folder (default agents/<Game>)")
    parser.add_argument("--workers", type=argtypes.workers, default=1,
                        help="sweep settings played at once, one process each (default 1; same returns)")
    argtypes.add_executor_args(parser, "sweep's settings", default="serial, or process with --workers > 1")
    return parser.parse_args()


def _relative_to_root(path: str, root: Path) -> Path:
    """``path`` as typed (relative to the current directory) made relative to the root the stages run in."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root)
    except ValueError:
        return absolute


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.cli.sweep import executor_name
    from ee_rl.rl import pipeline  # heavy imports after argument parsing

    executor = executor_name(args.executor, args.workers, args.ray_address)  # checked here, before any stage runs
    sweep_executor = [*(["--executor", executor] if args.executor else []),
                      *(["--ray-address", args.ray_address] if args.ray_address else [])]

    root = pipeline.REPO_ROOT
    agent_dir = _relative_to_root(args.agent_dir, root) if args.agent_dir is not None else None
    if agent_dir is not None and (root / agent_dir).exists() and not (root / agent_dir).is_dir():
        raise UserError(f"--agent-dir {args.agent_dir} exists and is not a directory")
    stages = pipeline.game_stages(args.env, agent_dir, sweep_workers=args.workers, sweep_executor=sweep_executor)
    only = pipeline.parse_stage_list(args.stages, stages) if args.stages is not None else None
    manifest_dir = pipeline.agent_folder(args.env, agent_dir) / pipeline.MANIFEST_DIR
    entries = pipeline.plan(stages, root=root, manifest_dir=manifest_dir, only=only, resume=args.resume)
    if args.dry_run:
        for entry in entries:
            print(entry.line())
        pipeline.check_plan(entries, root=root)  # a plan that cannot run says so, as the real run would
        return
    ran = pipeline.run_pipeline(stages, root=root, manifest_dir=manifest_dir, only=only, resume=args.resume)
    print(f"ran {', '.join(ran)}" if ran else "nothing to do: every stage is up to date")


if __name__ == "__main__":
    main()
