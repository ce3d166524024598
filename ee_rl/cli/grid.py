"""Games × methods × seeds on one machine or a Ray cluster:
``python scripts/grid.py --games Pong Qbert --methods ztw sdn --seeds 0 1 2 --executor ray``.

Stages (``--stages``, default all): expert (PPO training for each game without a shipped ``agents/<Game>/expert.zip``)
→ exits (behavioural cloning per game, method and seed) → sweep (return vs compute per game and seed), then the table
across seeds: per game and method, the cheapest setting within 5 % of the expert's return, its inference time as
mean ± SE over seeds. Everything goes under ``--out`` (default ``runs/grid``); finished cells are skipped, so the
same command continues a stopped grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1])
    parser.add_argument("--games", nargs="+", required=True, help="game names (Pong Qbert ...) or ALE ids")
    parser.add_argument("--methods", nargs="+", default=["ztw", "sdn"],
                        help="swept methods: ztw, sdn, pbee (plays the sdn exits), ZTW ablations (default: ztw sdn)")
    parser.add_argument("--seeds", nargs="+", type=argtypes.seed, default=[0], help="exit-training seeds (default: 0)")
    parser.add_argument("--stages", default=None, help="comma-separated: expert,exits,sweep (default: all)")
    parser.add_argument("--out", default="runs/grid", help="where every result goes (default: runs/grid)")
    parser.add_argument("--agents", default="agents",
                        help="shipped agents: a game with <agents>/<Game>/expert.zip uses it (default: agents)")
    argtypes.add_executor_args(parser, "tasks (trainings, sweep settings)")
    parser.add_argument("--cpus", type=argtypes.workers, default=None,
                        help="with --executor process: CPUs the tasks may use (default: all of this machine's)")
    parser.add_argument("--threads", type=argtypes.threads, default=1,
                        help="torch threads of each exit training and sweep setting (default 1)")
    parser.add_argument("--expert-threads", type=argtypes.threads, default=None,
                        help="torch threads of each expert training (default: --threads)")
    parser.add_argument("--ale-threads", type=argtypes.ale_threads, default=1,
                        help="emulator threads of every task (default 1); a task asks for max(torch, ALE) CPUs")
    configs = parser.add_argument_group("settings (default: the shipped configs, each game's section)")
    configs.add_argument("--expert-config", default=None, help="YAML of the experts (configs/ppo_atari.yaml)")
    configs.add_argument("--exits-config", default=None, help="YAML of the exits (configs/exits.yaml)")
    configs.add_argument("--sweep-config", default=None, help="YAML of the sweeps (configs/sweep.yaml)")
    configs.add_argument("--preset", default=None, help="a preset section of the sweep config, e.g. quick")
    configs.add_argument("--expert-timesteps", type=argtypes.timesteps, default=None, help="PPO steps per expert")
    configs.add_argument("--exit-timesteps", type=argtypes.timesteps, default=None, help="BC steps per exits run")
    configs.add_argument("--expert-eval-episodes", type=argtypes.episodes, default=10,
                         help="full games of a trained expert's evaluation (default 10)")
    configs.add_argument("--episodes", type=argtypes.episodes, default=None,
                         help="full games per sweep setting (default: the config's, at least 20)")
    configs.add_argument("--thresholds", default=None, help="comma-separated sweep thresholds (config: 0.1..1.0)")
    configs.add_argument("--max-episode-frames", type=argtypes.episode_frames, default=None,
                         help="cut evaluation games after this many emulator frames (default: ALE's 108000)")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    parser.add_argument("--no-progress-bar", action="store_true", help="for logs of background runs")
    return parser.parse_args()


def build_spec(args: argparse.Namespace) -> object:
    """The :class:`~ee_rl.rl.grid.GridSpec` the arguments describe (every value checked; bad ones: UserError)."""
    from ee_rl.rl.games import rom_id
    from ee_rl.rl.grid import GridSpec
    from ee_rl.rl.grid.plan import parse_seeds
    from ee_rl.rl.policy import agent_paths
    from ee_rl.rl.stages import STAGES, game_settings, parse_stages

    games = tuple(dict.fromkeys(rom_id(g) for g in args.games))
    methods = tuple(dict.fromkeys(args.methods))
    for method in methods:
        agent_paths(".", method)  # an unknown method is a one-line error
    thresholds = None
    if args.thresholds is not None:
        try:
            thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
        except ValueError:
            raise UserError(f"--thresholds must be comma-separated numbers, got {args.thresholds!r}") from None
    settings = {}
    for game in games:
        stage_settings = game_settings(game, expert_config=args.expert_config, exits_config=args.exits_config,
                                       sweep_config=args.sweep_config, sweep_preset=args.preset)
        sweep = stage_settings.sweep
        sweep.methods = list(methods)
        for value, name in ((args.episodes, "episodes"), (thresholds, "thresholds"),
                            (args.max_episode_frames, "max_episode_frames")):
            if value is not None:
                setattr(sweep, name, value)
        sweep.validate()
        if args.expert_timesteps is not None:
            stage_settings.expert.total_timesteps = args.expert_timesteps
        if args.exit_timesteps is not None:
            stage_settings.exits.total_timesteps = args.exit_timesteps
        settings[game] = stage_settings
    threads = args.threads or 1
    return GridSpec(
        games=games, methods=methods, seeds=parse_seeds(args.seeds), settings=settings,
        stages=tuple(parse_stages(args.stages)) if args.stages is not None else STAGES,
        expert_eval_episodes=args.expert_eval_episodes, threads=threads,
        expert_threads=args.expert_threads or threads, ale_threads=args.ale_threads,
    )


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.cli.args import cpu_count
    from ee_rl.exec import check_executor, make_executor  # heavy imports after argument parsing
    from ee_rl.io import check_dir_writable
    from ee_rl.rl.grid import GridLayout, format_summary, prepare_grid, run_grid

    executor = args.executor or "serial"
    check_executor(executor, args.ray_address)
    if args.cpus is not None and executor != "process":
        raise UserError("--cpus sizes the process executor: use it with --executor process")
    spec = build_spec(args)
    layout = GridLayout(Path(args.out), Path(args.agents))
    check_dir_writable(layout.out)
    plan = prepare_grid(spec, layout)  # every check, before any work or file
    training = [g for g, path in plan.experts.items() if path is None]
    print(f"grid: {len(spec.games)} game(s) × {len(spec.methods)} method(s) × {len(spec.seeds)} seed(s) on "
          f"{executor}: {len(training)} expert(s), {len(plan.exits)} exit training run(s), {len(plan.sweeps)} "
          "sweep(s) to run" + (" (nothing to do: every cell is finished)" if plan.empty() else ""))
    if args.dry_run:
        return
    with make_executor(executor, cpus=args.cpus or cpu_count(), ray_address=args.ray_address) as pool:
        rows = run_grid(spec, layout, pool, progress=not args.no_progress_bar)
    if rows:
        print(format_summary(rows), end="")
    else:
        print("no sweep has finished yet: the table needs the sweep stage")
    print(f"wrote {layout.summary('md')}, {layout.summary('csv')}, {layout.summary('json')}")


if __name__ == "__main__":
    main()
