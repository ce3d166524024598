"""Build an :class:`EarlyExitModel` of an :class:`ExitMethod` on a frozen :class:`StagedBackbone`.

The one place that turns a method and the IC hyper-parameters into heads and ensembles: the RL agents (a PPO
expert's NatureCNN) and the vision models (CIFAR ResNets, VGG, ...) both build their models here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ee_rl.core.backbone import StagedBackbone
from ee_rl.core.ensemble import make_ensembles
from ee_rl.core.heads import make_internal_classifiers
from ee_rl.core.method import ExitMethod
from ee_rl.core.model import EarlyExitModel

#: An IC's conv stride: one number for every IC, or a function of the ``(C, H, W)`` stage output it reads.
Stride = int | Callable[[torch.Size], int]


def build_early_exit_model(
    backbone: StagedBackbone,
    method: ExitMethod,
    *,
    num_classes: int,
    attach_after: Sequence[int],
    sample: torch.Tensor,
    stride: Stride = 1,
    pool_size: int = 4,
    channel_divisor: int = 1,
    cascade_layer_norm: bool = False,
    seed: int | None = None,
) -> EarlyExitModel:
    """A fresh (untrained) :class:`EarlyExitModel` of ``method``: one IC after each stage of ``attach_after``.

    The ICs are :class:`~ee_rl.core.heads.InternalClassifier` heads sized by one pass of ``sample`` (a raw input
    batch, on any device) through the backbone; IC m reads IC m-1's logits iff ``method.cascade``; ensembles of
    ``method.ensemble`` kind, if any. The model is returned on the backbone's device.

    Args:
        backbone: the frozen staged backbone.
        method: how the heads are wired and combined.
        num_classes: K, the number of logits every exit predicts.
        attach_after: 0-based stage index of each IC, strictly increasing.
        sample: a raw input batch (at least one row) used to size the ICs.
        stride: each IC's conv stride (an int, or a function of its ``(C, H, W)`` stage output shape).
        pool_size: SDN pooling output size of every IC.
        channel_divisor: an IC's conv has ``max(1, C // channel_divisor)`` output channels (1 keeps ``C``, as ZTW).
        cascade_layer_norm: LayerNorm on the cascade input (ZTW's ImageNet setting).
        seed: fixes the heads' initialisation without touching the caller's global torch RNG; None draws from it.
    """
    stage_shapes = backbone.stage_output_shapes(sample[:1])
    shapes = []
    for s in attach_after:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < len(stage_shapes):
            raise ValueError(f"attach_after entries must be stage indices in 0..{len(stage_shapes) - 1}, got {s!r}")
        if len(stage_shapes[s]) != 3:
            raise ValueError(f"an IC needs a (C, H, W) stage output, stage {s} gives {tuple(stage_shapes[s])}")
        shapes.append(stage_shapes[s])
    channels = [int(shape[0]) for shape in shapes]

    def make_heads() -> nn.ModuleList:
        return make_internal_classifiers(
            channels,
            num_classes,
            cascade=method.cascade,
            out_channels=[max(1, c // channel_divisor) for c in channels],
            stride=stride if isinstance(stride, int) else [stride(shape) for shape in shapes],
            pool_size=pool_size,
            cascade_layer_norm=cascade_layer_norm,
            detach_cascade=method.detach_cascade,
        )

    if seed is None:
        heads = make_heads()
    else:
        # A seed must not reseed the caller's global torch RNG: the heads are initialised on the CPU, so only the CPU
        # generator is forked and seeded (torch.manual_seed would also reseed every CUDA generator).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            heads = make_heads()
    ensembles = make_ensembles(len(heads), num_classes, method.ensemble) if method.ensemble is not None else None
    return EarlyExitModel(backbone, heads, ensembles, list(attach_after)).to(backbone.device)
