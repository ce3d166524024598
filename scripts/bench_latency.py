"""Latency of one early-exit decision on SB3's NatureCNN (Atari, 4x84x84 uint8): full network vs answering at IC 1/2.

A benchmark that prints, not a test: a thin CLI over :func:`ee_rl.core.latency.measure_exit_latency`. Weights are
random (latency does not depend on them). Each path is timed per call (batch 1, every sample forced out at that
exit); the paths are interleaved round-robin so background load hits them alike, and medians are reported.

    python scripts/bench_latency.py --repeats 2000 --threads 1 --json bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

from ee_rl.core import (
    EarlyExitModel,
    GeometricEnsemble,
    StagedBackbone,
    UInt8ToUnitFloat,
    make_internal_classifiers,
    measure_exit_latency,
)

OBS_SHAPE = (4, 84, 84)


def build_nature_cnn_early_exit(
    num_actions: int = 6, ensembles: bool = False, seed: int = 0
) -> tuple[EarlyExitModel, nn.Module]:
    """SB3 NatureCNN + Linear(512, num_actions) cut into 3 stages, with ICs after stages 1 and 2 (ZTW appendix A.2).

    Stages: [conv1+ReLU], [conv2+ReLU], [conv3+ReLU+Flatten+Linear+ReLU]; head: the action Linear; preprocess: /255.
    ICs: conv 3x3 stride 4 keeping channels, SDN pool 4x4, linear to ``num_actions``; IC 2 cascaded on IC 1.
    Returns the early-exit model and the original (unstaged) network ``x -> action_net(cnn(x / 255))``.
    """
    torch.manual_seed(seed)
    space = spaces.Box(0, 255, OBS_SHAPE, dtype="uint8")
    cnn = NatureCNN(space, features_dim=512)
    action_net = nn.Linear(512, num_actions)
    c = cnn.cnn  # Conv, ReLU, Conv, ReLU, Conv, ReLU, Flatten
    stages = [nn.Sequential(c[0], c[1]), nn.Sequential(c[2], c[3]), nn.Sequential(c[4], c[5], c[6], cnn.linear)]
    backbone = StagedBackbone(stages, action_net, preprocess=UInt8ToUnitFloat())
    heads = make_internal_classifiers([32, 64], num_actions, cascade=True, stride=4, pool_size=4)
    ens = [GeometricEnsemble(m + 1, num_actions) for m in range(2)] if ensembles else None
    model = EarlyExitModel(backbone, heads, ens, attach_after=[0, 1]).eval()
    original = nn.Sequential(UInt8ToUnitFloat(), cnn, action_net).eval()
    return model, original


def main() -> None:
    """Parse flags, build the NatureCNN early-exit model, time it and print (and optionally save) the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=2000, help="timed calls per configuration (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per configuration first (default 200)")
    parser.add_argument("--actions", type=int, default=6, help="number of actions K (default 6)")
    parser.add_argument("--ensembles", action="store_true", help="add geometric ensembles to the ICs")
    parser.add_argument("--no-channels-last", action="store_true", help="keep weights in NCHW instead of channels_last")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args()
    for name in ("threads", "repeats", "actions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be a non-negative integer, got {args.warmup}")

    torch.set_num_threads(args.threads)
    model, original = build_nature_cnn_early_exit(args.actions, ensembles=args.ensembles)
    if not args.no_channels_last:
        # oneDNN convolutions run in NHWC; keeping weights there avoids reorders on every call.
        model = model.to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (1, *OBS_SHAPE), dtype=torch.uint8)

    report = measure_exit_latency(
        model, x, repeats=args.repeats, warmup=args.warmup, extra_calls={"original": lambda: original(x)}
    )
    backbone_flops = report.flops[-1]
    result = {
        "full_us": report.full_us,
        "exit_us": list(report.exit_us),
        "speedup": list(report.speedup),
        "flops": list(report.flops),
        "original_sb3_us": report.extra_us["original"],
        "threads": args.threads,
        "repeats": args.repeats,
        "channels_last": not args.no_channels_last,
    }
    print(f"NatureCNN 4x84x84, batch 1, {args.threads} thread(s), median of {args.repeats} calls")
    print(f"{'path':<34}{'µs':>10}{'speedup':>10}{'MFLOPs':>10}{'FLOPs %':>10}")
    rows = [("full network (infer, no heads)", report.full_us, backbone_flops)]
    rows += [(f"answer at IC {m + 1}", t, f) for m, (t, f) in enumerate(zip(report.exit_us, report.flops))]
    for label, t, f in rows:
        print(f"{label:<34}{t:>10.1f}{report.full_us / t:>9.2f}x{f / 1e6:>10.2f}{100 * f / backbone_flops:>9.1f}%")
    print(f"{'SB3 NatureCNN+head (plain)':<34}{report.extra_us['original']:>10.1f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
