"""StagedBackbone: a frozen network cut into an ordered list of stages plus its own output head."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


class UInt8ToUnitFloat(nn.Module):
    """Preprocess raw images: ``x / 255`` as float32 (uint8 pixels -> [0, 1]).

    Bit-identical to SB3's ``obs.float() / 255.0`` but a single op (true division promotes uint8 to float32).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x / 255`` as a floating tensor (a new tensor; the input is never modified)."""
        return torch.div(x, 255.0)

    def foldable_scale(self) -> tuple[float, nn.Module]:
        """This preprocess is a pure scaling: ``(1 / 255, a module that only converts to float32)``, so an exporter
        may fold the scale into the first convolution's weights (exact up to float rounding: zero padding stays
        zero under a scaling)."""
        return 1.0 / 255.0, ToFloat32()


class ToFloat32(nn.Module):
    """``x`` as float32 (the pixels unscaled: what is left of :class:`UInt8ToUnitFloat` once its scale is folded)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x.float()``."""
        return x.float()


class StagedBackbone(nn.Module):
    """A pre-trained network described as ``preprocess -> stages[0] -> ... -> stages[-1] -> head``.

    Internal classifiers can be attached after any stage (see :class:`ee_rl.core.model.EarlyExitModel`).
    The backbone is frozen: all its parameters have ``requires_grad=False`` and it stays in eval mode even when a
    parent module calls ``.train()``, so BatchNorm running statistics and dropout never change its outputs.

    Args:
        stages: ordered stage modules; stage ``s`` maps the output of stage ``s - 1`` (or the preprocessed input).
        head: the backbone's own output layer, mapping the last stage's output to logits ``(B, K)``.
        preprocess: optional module applied to the raw input first (e.g. :class:`UInt8ToUnitFloat`).
    """

    def __init__(self, stages: Sequence[nn.Module], head: nn.Module, preprocess: nn.Module | None = None) -> None:
        super().__init__()
        stages = list(stages)
        if not stages:
            raise ValueError("StagedBackbone needs at least one stage; got an empty list of stages")
        for i, stage in enumerate(stages):
            if not isinstance(stage, nn.Module):
                raise ValueError(f"stage {i} must be an nn.Module, got {type(stage).__name__}")
        if not isinstance(head, nn.Module):
            raise ValueError(
                f"head must be an nn.Module mapping the last stage output to logits, got {type(head).__name__}"
            )
        if preprocess is not None and not isinstance(preprocess, nn.Module):
            raise ValueError(f"preprocess must be an nn.Module or None, got {type(preprocess).__name__}")
        self.stages = nn.ModuleList(stages)
        self.head = head
        # nn.Identity keeps the hot path branch-free; it costs one trivial call.
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)

    @property
    def device(self) -> torch.device:
        """Where the backbone's weights live: its first parameter's or buffer's device (the CPU if it has neither)."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return torch.device("cpu")

    @property
    def num_stages(self) -> int:
        """Number of stages (ICs may be attached after stage indices ``0 .. num_stages - 1``)."""
        return len(self.stages)

    def train(self, mode: bool = True) -> StagedBackbone:
        """Ignore ``mode``: the frozen backbone always stays in eval mode (BatchNorm statistics frozen)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the backbone's logits for the raw input ``x``."""
        h = self.preprocess(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)

    @torch.no_grad()
    def stage_output_shapes(self, sample: torch.Tensor) -> list[torch.Size]:
        """Per-sample output shape of every stage (batch dimension dropped), from one forward pass on ``sample``.

        ``sample`` is a raw input batch (at least one row) on any device: it is moved to the backbone's. Use it to
        size internal classifiers.
        """
        shapes = []
        h = self.preprocess(sample.to(self.device))
        for stage in self.stages:
            h = stage(h)
            shapes.append(h.shape[1:])
        return shapes
