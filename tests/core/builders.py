"""Tiny backbones, early-exit models and the NatureCNN bench builder shared by the core tests (fast on CPU)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ee_rl.core import EarlyExitModel, StagedBackbone, make_ensembles, make_internal_classifiers

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 5
INPUT_SHAPE = (3, 16, 16)


def make_tiny_backbone(seed: int = 0) -> StagedBackbone:
    """4 stages with BatchNorm (random running statistics, so train and eval modes differ) and a linear head."""
    torch.manual_seed(seed)
    stages = [
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),  # 8x16x16
        nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU()),  # 12x8x8
        nn.Sequential(nn.Conv2d(12, 16, 3, padding=1), nn.ReLU()),  # 16x8x8
        nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ]
    for m in nn.Sequential(*stages).modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return StagedBackbone(stages, nn.Linear(16, NUM_CLASSES))


def make_tiny_model(
    *,
    ensembles: str | None = "geometric",
    cascade: bool = True,
    detach_cascade: bool = True,
    head_scale: float = 20.0,
    seed: int = 0,
) -> EarlyExitModel:
    """Tiny backbone with ICs after stages 0, 1 and 2 (exit 3 = the backbone's head).

    ``head_scale`` multiplies the ICs' linear weights so that random heads give a spread of confidences.
    """
    backbone = make_tiny_backbone(seed)
    torch.manual_seed(seed + 1)
    heads = make_internal_classifiers(
        [8, 12, 16], NUM_CLASSES, cascade=cascade, stride=2, detach_cascade=detach_cascade
    )
    with torch.no_grad():
        for h in heads:
            h.linear.weight.mul_(head_scale)
    ens = make_ensembles(3, NUM_CLASSES, kind=ensembles) if ensembles is not None else None
    if ens is not None:
        with torch.no_grad():  # random (not initial) ensemble parameters
            for e in ens:
                e.log_w.uniform_(-1.0, 0.5)
                e.log_b.uniform_(-0.5, 0.5)
    return EarlyExitModel(backbone, heads, ens, attach_after=[0, 1, 2]).eval()


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    """A float batch of ``n`` random inputs shaped for the tiny backbone."""
    g = torch.Generator().manual_seed(seed)
    # Per-sample channel offsets and scales, so that even random networks answer differently per sample.
    offset = 2 * torch.randn((n, INPUT_SHAPE[0], 1, 1), generator=g)
    scale = torch.rand((n, 1, 1, 1), generator=g) * 2 + 0.2
    return offset + scale * torch.randn((n, *INPUT_SHAPE), generator=g)


def load_bench_script() -> ModuleType:
    """Import the ``bench_latency`` CLI module (the NatureCNN builder lives there)."""
    return importlib.import_module("ee_rl.cli.bench_latency")
