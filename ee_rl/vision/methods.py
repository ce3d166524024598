"""The vision models' exit heads: an :class:`~ee_rl.core.method.ExitMethod` (ZTW, SDN or a ZTW ablation) placed on a
staged vision backbone as its :class:`~ee_rl.vision.backbones.ICPlacement` says (ZTW appendix A.1). PBEE needs no
training of its own: it is the SDN heads read with the patience rule."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ee_rl.core import EarlyExitModel, StagedBackbone
from ee_rl.core.builder import build_early_exit_model
from ee_rl.core.method import ExitMethod
from ee_rl.vision.backbones import ICPlacement

#: Methods evaluated from trained heads: PBEE reads the SDN heads with the patience rule.
EVAL_METHODS = ("sdn", "pbee", "ztw")


def ic_stride(downsample: bool) -> Callable[[torch.Size], int]:
    """The IC conv stride rule of ZTW A.1, as a function of the ``(C, H, W)`` stage output: stride 2 when
    ``downsample`` and both spatial dims are > 8, else 1."""

    def stride(shape: torch.Size) -> int:
        return 2 if downsample and shape[1] > 8 and shape[2] > 8 else 1

    return stride


def build_model(
    method: ExitMethod,
    backbone: StagedBackbone,
    placement: ICPlacement,
    num_classes: int,
    sample: torch.Tensor,
    *,
    downsample: bool = False,
) -> EarlyExitModel:
    """A fresh :class:`EarlyExitModel` of ``method`` on the frozen ``backbone``, its ICs placed by ``placement``.

    The heads are sized by one pass of ``sample`` through the backbone, on the backbone's device, and the model is
    returned on that device (a backbone already on the GPU gets GPU heads; ``sample`` may live anywhere). See
    :func:`ee_rl.core.builder.build_early_exit_model`.
    """
    return build_early_exit_model(
        backbone,
        method,
        num_classes=num_classes,
        attach_after=placement.attach_after,
        sample=sample,
        stride=ic_stride(downsample),
        channel_divisor=placement.channel_divisor,
        cascade_layer_norm=placement.cascade_layer_norm,
    )
