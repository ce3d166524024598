"""Threshold-vs-return sweep of an early-exit agent on full games: ``python scripts/sweep.py --env Pong``.

Writes ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``--out`` (default ``runs/sweep/<Env>/``).
``--budget 0.5`` picks, per method, the highest threshold costing ≤ 50 % of the expert's FLOPs; ``--max-drop 1``
the cheapest one within 1 point of the expert's return. ``--from-csv sweep.csv`` selects from an existing table.
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


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=None,
                        help="game name (Pong, Qbert, ...) or ALE id (ALE/Pong-v5); default Pong")
    parser.add_argument("--agent", default=None, help="agent directory with expert.zip, exits-*.pt (agents/<Env>)")
    parser.add_argument("--heads-dir", default=None,
                        help="directory of the exits-<method>.pt files (default: the agent's), e.g. ZTW ablations")
    parser.add_argument("--methods", default=None,
                        help="comma-separated: ztw,sdn,pbee or ZTW ablations like ztw-additive (config: ztw,sdn,pbee)")
    parser.add_argument("--thresholds", default=None, help="comma-separated thresholds in [0, 1] (config: 0.1..1.0)")
    parser.add_argument("--patience", default=None, help="comma-separated PBEE patience values (config: 1..M)")
    parser.add_argument("--episodes", type=argtypes.episodes, default=None, help="full games per setting (config: 10)")
    parser.add_argument("--n-envs", type=argtypes.n_envs, default=None, help="parallel envs (config: 8)")
    parser.add_argument("--seed", type=argtypes.seed, default=None, help="env seed (config: 10000)")
    parser.add_argument("--threads", type=argtypes.threads, default=None,
                        help="torch threads while playing (config: 1)")
    parser.add_argument("--ale-threads", type=argtypes.ale_threads, default=None,
                        help="emulator threads of a setting's envs (config: 1)")
    parser.add_argument("--max-episode-frames", type=argtypes.episode_frames, default=None,
                        help="cut games after this many emulator frames (config: ALE's 108000)")
    parser.add_argument("--workers", type=argtypes.workers, default=None,
                        help="settings played at once by --executor process, the default when > 1 (config: 1; "
                             "µs per decision then share cores)")
    argtypes.add_executor_args(parser, "settings", default="serial, or process with --workers > 1")
    argtypes.add_runtime_arg(parser, "agents' decisions (returns, costs and exit rates are the same; µs are not)",
                             default=None)
    parser.add_argument("--config", default=None, help="YAML config (default configs/sweep.yaml)")
    parser.add_argument("--preset", default=None, help="a preset section of the config, e.g. quick")
    parser.add_argument("--out", default=None, help="output directory (default runs/sweep/<Env>/)")
    parser.add_argument("--budget", type=argtypes.fraction, default=None,
                        help="pick the highest threshold costing ≤ this")
    parser.add_argument("--max-drop", type=argtypes.non_negative, default=None,
                        help="pick the cheapest within this many points")
    parser.add_argument("--from-csv", default=None, metavar="PATH", help="select from this sweep.csv, play nothing")
    parser.add_argument("--resume", action="store_true",
                        help="finish an interrupted sweep in --out: play only the settings it did not finish")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the sweep already in --out (needed when --out holds sweep files)")
    parser.add_argument("--no-progress-bar", action="store_true", help="for logs of background runs")
    args = parser.parse_args()
    if args.resume and args.overwrite:
        parser.error("--resume continues the sweep in --out, --overwrite replaces it: give one of them")
    return args


def _list(text: str, kind: type, flag: str) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated {kind.__name__}s, got {text!r}") from None


def executor_name(chosen: str | None, workers: int, ray_address: str | None) -> str:
    """The executor that plays the settings: ``--executor``, else ``process`` for ``--workers`` > 1, else ``serial``;
    ``--workers`` > 1 with another executor is a :class:`UserError` (it sizes the process executor only)."""
    from ee_rl.exec import check_executor

    name = chosen or ("process" if workers > 1 else "serial")
    if workers > 1 and name != "process":
        raise UserError(f"--workers {workers} plays settings in local processes: use it with --executor process "
                        f"(--executor {name} plays " + ("one at a time)" if name == "serial" else
                                                       "as many at once as the cluster's CPUs allow)"))
    check_executor(name, ray_address)
    return name


@cli_main
def main() -> None:
    args = parse_args()
    from ee_rl.exec import make_executor
    from ee_rl.io import RunDirLock, ensure_writable_dir
    from ee_rl.rl import sweep  # heavy imports after argument parsing
    from ee_rl.rl.games import display_name, rom_id

    if args.from_csv is not None:
        if args.budget is None and args.max_drop is None:
            raise UserError("--from-csv only selects: give --budget and/or --max-drop")
        rows = sweep.read_csv(args.from_csv)
        recorded = Path(args.from_csv).with_name("sweep.json")  # the CSV has no game column; its JSON twin does
        if args.env is not None and recorded.is_file():
            game = json.loads(recorded.read_text()).get("game")
            if game is not None and game != rom_id(args.env):
                raise UserError(f"{args.from_csv} is a sweep of {display_name(game)}, not of {args.env}")
        sweep.selection_summary(rows, args.budget, args.max_drop)  # validates both before printing
        print(sweep.format_selection(rows, args.budget, args.max_drop))
        return

    game = rom_id(args.env or "Pong")
    settings = sweep.load_sweep_settings(args.config, game, args.preset)
    if args.methods is not None:
        settings.methods = _list(args.methods, str, "--methods")
    if args.thresholds is not None:
        settings.thresholds = _list(args.thresholds, float, "--thresholds")
    if args.patience is not None:
        settings.patience = _list(args.patience, int, "--patience")
    for flag, name in (("episodes", "episodes"), ("n_envs", "n_envs"), ("seed", "seed"), ("threads", "torch_threads"),
                       ("ale_threads", "ale_threads"), ("max_episode_frames", "max_episode_frames"),
                       ("workers", "workers")):
        if getattr(args, flag) is not None:
            setattr(settings, name, getattr(args, flag))
    if args.runtime is not None:
        settings.runtime = args.runtime
    settings.validate()
    executor = executor_name(args.executor, settings.workers, args.ray_address)
    # Check everything that can be wrong before playing for minutes.
    if args.budget is not None:
        sweep.select_by_budget([], args.budget)
    if args.max_drop is not None:
        sweep.select_by_max_drop([], args.max_drop)
    agent_dir = Path(args.agent) if args.agent is not None else Path("agents") / display_name(game)
    sweep.check_agent_files(agent_dir, settings.methods, args.heads_dir)
    out_dir = Path(args.out) if args.out is not None else sweep.default_out_dir(game)
    # One live sweep per folder: a second one is told so first, whatever the folder holds. Held until main returns.
    lock = RunDirLock(out_dir) if out_dir.is_dir() else None
    progress_file = out_dir / sweep.PROGRESS_FILE
    if progress_file.is_file() and not (args.resume or args.overwrite):
        raise UserError(f"{out_dir} holds an interrupted sweep ({progress_file.name}): --resume to finish it, "
                        "--overwrite to start over")
    if args.resume and not progress_file.is_file():
        raise UserError(f"nothing to resume: {progress_file} does not exist")
    done = sweep.read_progress_rows(out_dir, game, settings) if args.resume else []
    if args.out is not None and (out_dir / "sweep.csv").is_file() and not (args.overwrite or args.resume):
        # An explicit --out may be a committed folder (agents/<Game>): never replace its results unasked.
        raise UserError(f"{out_dir} already holds a sweep (sweep.csv): --overwrite to replace it")
    cpus = settings.workers * settings.play().cpus
    with make_executor(executor, cpus=cpus, ray_address=args.ray_address) as pool:  # a Ray that fails: no file yet
        ensure_writable_dir(out_dir)
        lock = lock or RunDirLock(out_dir)
        if args.overwrite:
            progress_file.unlink(missing_ok=True)
        sweep.start_progress(out_dir, game, settings)
        result = sweep.run_sweep(
            game, agent_dir, settings, progress=not args.no_progress_bar, heads_dir=args.heads_dir, done=done,
            on_row=lambda row: sweep.append_progress_row(out_dir, row), executor=pool,
        )
    selections = sweep.selection_summary(result.rows, args.budget, args.max_drop)
    paths = sweep.write_sweep(result, out_dir, selections)
    if (out_dir / "expert.zip").is_file():  # an agent folder: its card shows the numbers of the files beside it
        from ee_rl.rl.sweep_card import write_sweep_section

        command = shlex.join(["python", "scripts/sweep.py", *sys.argv[1:]])
        paths.append(write_sweep_section(out_dir, result, command, args.budget, args.max_drop))
    print(sweep.format_table(result.rows))
    if selections:
        print(sweep.format_selection(result.rows, args.budget, args.max_drop))
    progress_file.unlink()  # every row is in sweep.csv / sweep.json now
    lock.release()
    print(f"wrote {', '.join(str(p) for p in paths)} in {result.wall_time_s:.0f} s"
          + (f" ({len(done)} setting(s) kept from the interrupted sweep)" if done else ""))


if __name__ == "__main__":
    main()
