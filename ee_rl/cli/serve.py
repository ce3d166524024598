"""Serve an early-exit model over HTTP and WebSocket; each item's answer is streamed as soon as its exit fires.

    python scripts/serve.py --agent agents/Pong --threshold 0.9
    python scripts/serve.py --vision runs/cifar10/exits-ztw.pt --tolerance 0.01 --calibration val.npy
    python scripts/serve.py --random-nature-cnn --port 0          # prints the port it got

Endpoints: POST /predict, WS /stream, GET /health, GET /metrics (formats: ee_rl/serve/app.py).
Defaults come from configs/serve.yaml (section ``serve``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ee_rl.cli import args as argtypes
from ee_rl.cli.args import ArgumentParser
from ee_rl.errors import cli_main
from ee_rl.serve.app import create_app
from ee_rl.serve.loaders import add_model_arguments, served_model_from_args
from ee_rl.serve.runner import bind_socket, serve_forever
from ee_rl.serve.settings import load_serve_settings, override


def parse_args() -> argparse.Namespace:
    """Command-line flags (None = take the config file's value)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default configs/serve.yaml)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (0 = any free port; default 8000)")
    parser.add_argument("--max-batch", type=int, help="most items per model call across clients")
    parser.add_argument("--max-wait-ms", type=float, help="longest a batch waits for more clients (ms)")
    parser.add_argument("--max-items", type=int, help="most items per client batch")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body / WebSocket message (bytes)")
    parser.add_argument("--max-inflight-batches", type=int, help="batches in flight per WebSocket connection")
    parser.add_argument("--threads", type=argtypes.threads, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    return parser.parse_args()


@cli_main
def main() -> None:
    """Load the model, bind the port, serve until interrupted."""
    args = parse_args()
    settings = load_serve_settings(args.config)
    override(
        settings, host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_items=args.max_items, max_body_bytes=args.max_body_bytes,
        max_inflight_batches=args.max_inflight_batches, threads=args.threads,
    )
    settings.validate()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    args.threads = settings.threads  # ONNX Runtime's threads follow torch's
    served = served_model_from_args(args, settings.threshold)
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]

    def announce() -> None:
        print(f"serving {served.name} with {served.rule!r} ({served.runtime}) on http://{host}:{port} "
              f"(ws://{host}:{port}/stream)",
              flush=True)

    try:
        serve_forever(create_app(served, settings, on_ready=announce), sock, args.log_level)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
