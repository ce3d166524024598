"""Print PPO training speed (env steps/s) of stock SB3 vs ee_rl's setup, measured in one run."""

from __future__ import annotations


from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main


@cli_main
def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="Pong")
    parser.add_argument("--steps", type=int, default=8192, help="timed env steps per variant")
    parser.add_argument("--warmup", type=int, default=1024, help="untimed env steps first")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args()
    if args.steps <= 0 or args.warmup < 0:
        raise UserError("--steps must be positive and --warmup non-negative")

    from ee_rl.io import atomic_write_json
    from ee_rl.rl.bench import compare_training_speed
    from ee_rl.rl.games import rom_id

    result = compare_training_speed(rom_id(args.env), args.steps, args.warmup)
    print(f"stock SB3 PPO: {result['stock_steps_per_s']:.1f} steps/s")
    print(f"ee_rl PPO:     {result['ours_steps_per_s']:.1f} steps/s")
    print(f"speed-up:      {result['speedup']:.2f}x")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
