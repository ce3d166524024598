"""Latency of one early-exit decision on SB3's NatureCNN (Atari, 4x84x84 uint8): full network vs answering at IC 1/2.

A benchmark that prints, not a test: a thin CLI over :func:`ee_rl.core.latency.measure_exit_latency`. Weights are
random (latency does not depend on them). Each path is timed per call (batch 1, every sample forced out at that
exit); the paths take turns in rounds of ``--block`` consecutive calls, so each is timed in its own steady state
while background load hits them alike; latencies are medians, speed-ups medians of the per-round ratios.

    python scripts/bench_latency.py --repeats 2000 --threads 1 --json bench.json

With ``--agent DIR`` it benchmarks a trained agent instead (:mod:`ee_rl.rl.agent_latency`): µs per decision on
states the agent visits, at batch 1 and at the 8-env batch, on 1 and 2 threads, for the expert through SB3's
``predict``, the expert through ee_rl's runner, every exit forced and the early-exit agent at the chosen threshold,
in one run; ``--runtime onnx`` times the same paths in ONNX Runtime beside the torch ones:

    python scripts/bench_latency.py --agent agents/Pong --method ztw --threshold 0.8
    python scripts/bench_latency.py --agent agents/Pong --runtime onnx --json agents/Pong/latency.json
    python scripts/bench_latency.py --agent agents/Pong --from-sweep agents/Pong/sweep.csv --max-drop 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ee_rl.core import measure_exit_latency
from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main
from ee_rl.io import atomic_write_json
from ee_rl.rl.policy import ATARI_OBS_SHAPE as OBS_SHAPE
from ee_rl.rl.policy import build_nature_cnn_early_exit

__all__ = ["OBS_SHAPE", "build_nature_cnn_early_exit", "main"]


def bench_trained_agent(args: argparse.Namespace) -> None:
    """Benchmark the trained agent in ``args.agent`` (see the module docstring) and print (and save) the numbers."""
    from ee_rl.core import rule_for_method
    from ee_rl.rl import agent_latency, sweep
    from ee_rl.rl.checkpoint import load_model
    from ee_rl.rl.games import rom_id
    from ee_rl.rl.policy import agent_paths, onnx_cache_dir

    game = rom_id(args.env)
    try:
        thread_counts = [int(t) for t in args.thread_counts.split(",") if t.strip()]
    except ValueError:
        thread_counts = []
    if not thread_counts or min(thread_counts) < 1:
        raise UserError(f"--thread-counts must be comma-separated positive integers, got {args.thread_counts!r}")
    method, threshold = args.method, args.threshold
    if args.from_sweep is not None:
        chosen = sweep.select_by_max_drop(sweep.read_csv(args.from_sweep), args.max_drop).get(method)
        if chosen is None:
            raise UserError(f"{args.from_sweep} has no {method} setting within {args.max_drop} of the expert's return")
        threshold = chosen.threshold
    rule = rule_for_method(method, threshold)
    policy = sweep.load_agents(args.agent, [method], game)[method]
    policies = [policy]
    if args.runtime != "torch":  # the same agent on both runtimes, timed side by side
        paths = agent_paths(args.agent, method)
        policies.append(sweep.load_agents(args.agent, [method], game)[method].use_runtime(
            args.runtime, threads=thread_counts[0], cache_dir=onnx_cache_dir(paths.heads)))
    expert = load_model(agent_paths(args.agent, method).expert, device="cpu", game=game)
    states = agent_latency.record_states(policy, rule, game, n_envs=args.n_envs, steps=args.steps, seed=args.seed)
    report = agent_latency.measure_agent_latency(
        policies, expert, rule, states, threads=thread_counts, repeats=args.repeats, warmup=args.warmup
    )
    print(f"{game}: {method} {sweep.rule_label(method, threshold)}, {report.decisions} recorded states, "
          f"median of {args.repeats} passes, runtimes {', '.join(p.runtime for p in policies)}")
    print(agent_latency.format_latency(report))
    if args.json is not None:
        atomic_write_json(
            args.json,
            {"game": game, "method": method, "threshold": None if threshold == sweep.FULL else threshold,
             **report.to_dict()},
        )
        print(f"wrote {args.json}")


@cli_main
def main() -> None:
    """Parse flags, build the NatureCNN early-exit model, time it and print (and optionally save) the numbers."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=argtypes.threads, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per configuration (2000; agent: 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per configuration (200; agent: 2)")
    parser.add_argument("--actions", type=int, default=6, help="number of actions K (default 6)")
    parser.add_argument("--block", type=int, default=50,
                        help="consecutive timed calls per path per round (default 50; 1 = strictly alternating)")
    parser.add_argument("--ensembles", action="store_true", help="add geometric ensembles to the ICs")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="NCHW weights and pixels instead of channels_last (as the trained experts run)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")
    agent = parser.add_argument_group("trained agent (--agent DIR)")
    agent.add_argument("--agent", default=None, help="agent directory with expert.zip and exits-<method>.pt")
    agent.add_argument("--env", default="Pong", help="game the agent plays (default Pong)")
    agent.add_argument("--method", default="ztw", help="ztw, sdn or pbee (default ztw)")
    agent.add_argument("--threshold", type=float, default=0.8, help="the agent's threshold (pbee: patience)")
    agent.add_argument("--from-sweep", default=None, metavar="CSV", help="take the threshold from this sweep.csv")
    agent.add_argument("--max-drop", type=argtypes.non_negative, default=1.0,
                       help="with --from-sweep: cheapest within this (1.0)")
    agent.add_argument("--thread-counts", default="1,2", help="thread counts to measure (default 1,2)")
    agent.add_argument("--n-envs", type=argtypes.n_envs, default=8, help="parallel envs = the batched size (default 8)")
    agent.add_argument("--steps", type=int, default=64, help="recorded steps of the agent (default 64)")
    agent.add_argument("--seed", type=argtypes.seed, default=10_000, help="env seed for the recorded states")
    argtypes.add_runtime_arg(agent, "agent (onnx: timed beside torch, in the same rounds)")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 20 if args.agent is not None else 2000
    if args.warmup is None:
        args.warmup = 2 if args.agent is not None else 200
    for name in ("threads", "repeats", "block", "actions", "n_envs", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be a non-negative integer, got {args.warmup}")
    if args.agent is not None:
        bench_trained_agent(args)
        return
    if args.runtime != "torch":
        parser.error("--runtime onnx benchmarks a trained agent: give --agent DIR")

    torch.set_num_threads(args.threads)
    model, original = build_nature_cnn_early_exit(
        args.actions, ensembles=args.ensembles, channels_last=not args.no_channels_last
    )
    x = torch.randint(0, 256, (1, *OBS_SHAPE), dtype=torch.uint8)

    report = measure_exit_latency(
        model, x, repeats=args.repeats, warmup=args.warmup, block=args.block,
        extra_calls={"original": lambda: original(x)},
    )
    backbone_flops = report.flops[-1]
    result = {
        "full_us": report.full_us,
        "exit_us": list(report.exit_us),
        "speedup": list(report.speedup),
        "prefix_us": list(report.prefix_us),
        "speedup_bound": list(report.speedup_bound),
        "flops": list(report.flops),
        "original_sb3_us": report.extra_us["original"],
        "threads": args.threads,
        "repeats": args.repeats,
        "block": args.block,
        "channels_last": not args.no_channels_last,
    }
    print(f"NatureCNN 4x84x84, batch 1, {args.threads} thread(s), median of {args.repeats} calls "
          f"(speed-up: median of per-round ratios)")
    print(f"{'path':<34}{'µs':>10}{'speedup':>10}{'MFLOPs':>10}{'FLOPs %':>10}")
    rows = [("full network (infer, no heads)", report.full_us, 1.0, backbone_flops)]
    rows += [
        (f"answer at IC {m + 1}", t, sp, f)
        for m, (t, sp, f) in enumerate(zip(report.exit_us, report.speedup, report.flops))
    ]
    for label, t, sp, f in rows:
        print(f"{label:<34}{t:>10.1f}{sp:>9.2f}x{f / 1e6:>10.2f}{100 * f / backbone_flops:>9.1f}%")
    for m, (t, sp) in enumerate(zip(report.prefix_us, report.speedup_bound)):  # no exit at m can beat its stages
        print(f"{f'stages up to IC {m + 1} only (bound)':<34}{t:>10.1f}{sp:>9.2f}x")
    print(f"{'SB3 NatureCNN+head (plain)':<34}{report.extra_us['original']:>10.1f}")
    if args.json is not None:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
