"""Load-test a running early-exit server: N concurrent WebSocket clients, each answer checked against the offline model.

    python scripts/serve.py --random-nature-cnn --threshold 0.3 --port 8765 &
    python scripts/load_test.py --url ws://127.0.0.1:8765/stream --random-nature-cnn --threshold 0.3 \\
        --clients 200 --batches 5 --json load_test.json

Give the same model and rule flags as the server (checked against its /health). Inputs are real: Atari observations
of --game played with random actions (agents), the model's test images (--vision, with --data-dir), or --inputs FILE.
Exit code 1 if any item was lost, duplicated or answered wrongly. Defaults: configs/serve.yaml (``load_test``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import torch

from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import UserError, cli_main
from ee_rl.io import atomic_write_json, check_file_writable
from ee_rl.serve.load_test import ENCODINGS, run_load_test
from ee_rl.serve.loaders import (
    add_model_arguments,
    atari_observations,
    read_inputs,
    served_model_from_args,
    vision_images,
)
from ee_rl.serve.served import ServedModel
from ee_rl.serve.settings import load_load_test_settings, load_serve_settings, override


def parse_args() -> argparse.Namespace:
    """Command-line flags (None = take the config file's value)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's stream URL, e.g. ws://127.0.0.1:8000/stream")
    add_model_arguments(parser)
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default configs/serve.yaml)")
    parser.add_argument("--clients", type=int, help="concurrent WebSocket clients")
    parser.add_argument("--batches", type=int, help="batches per client")
    parser.add_argument("--batch-size", type=int, help="items per batch")
    parser.add_argument("--num-inputs", type=int, dest="inputs", help="distinct real inputs to draw items from")
    parser.add_argument("--inputs", type=Path, dest="inputs_file", metavar="FILE.npy", help="use these inputs")
    parser.add_argument("--game", default=None, help="Atari game the observations come from (default: Pong)")
    parser.add_argument("--data-dir", type=Path, help="dataset directory of a --vision model's test images")
    parser.add_argument("--timeout-s", type=float, help="time limit of the whole test (s)")
    parser.add_argument("--encoding", choices=ENCODINGS, default="npy", help="batch encoding (default npy)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON here")
    return parser.parse_args()


def http_url(ws_url: str) -> str:
    """``ws://host:port/stream`` → ``http://host:port``; anything else is a :class:`UserError`."""
    parts = urlsplit(ws_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UserError(f"--url must look like ws://HOST:PORT/stream, got {ws_url!r}")
    return urlunsplit(("http" if parts.scheme == "ws" else "https", parts.netloc, "", "", ""))


def check_same_model(base_url: str, served: ServedModel) -> None:
    """The server must serve the same rule and exit costs as the offline model, or the comparison is meaningless."""
    try:
        health = httpx.get(f"{base_url}/health", timeout=30).json()["model"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read {base_url}/health: {exc}") from None
    mine = served.describe()
    for key in ("rule", "exit_flops_fraction", "input", "label"):
        if health.get(key) != json.loads(json.dumps(mine[key])):
            raise UserError(
                f"the server's {key} is {health.get(key)!r} but the offline model's is {mine[key]!r}: "
                "pass the same model and rule flags as the server"
            )


@cli_main
def main() -> None:
    """Load the offline model and inputs, run the clients, print and save the report."""
    args = parse_args()
    settings = load_load_test_settings(args.config)
    override(settings, clients=args.clients, batches=args.batches, batch_size=args.batch_size, inputs=args.inputs,
             timeout_s=args.timeout_s)
    settings.validate()
    if args.json is not None:
        check_file_writable(args.json)  # before minutes of load, not after
    torch.set_num_threads(1)  # the server needs the cores; the offline reference is computed once
    served = served_model_from_args(args, load_serve_settings(args.config).threshold)
    check_same_model(http_url(args.url), served)

    if args.inputs_file is not None:
        inputs = read_inputs(args.inputs_file, served.input_spec)
    elif args.vision is not None:
        inputs = vision_images(served, args.data_dir, settings.inputs)
    else:
        inputs = atari_observations(args.game or "Pong", settings.inputs, seed=settings.seed)
    expected = served.offline_answers(inputs)

    report = asyncio.run(
        run_load_test(
            args.url, inputs, expected, served.label_name, clients=settings.clients, batches=settings.batches,
            batch_size=settings.batch_size, timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s, seed=settings.seed, encoding=args.encoding,
        )
    )
    result = {**report.to_dict(), "model": served.name, "rule": repr(served.rule), "encoding": args.encoding,
              "distinct_inputs": int(len(inputs))}
    print(json.dumps(result, indent=2))
    if args.json is not None:
        atomic_write_json(args.json, result)
    if not report.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
