"""Internal classifier (IC) heads: SDN pooling and a conv -> pool -> linear classifier with optional cascade input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ee_rl.core.param_cache import DerivedConstant


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _sigmoid_as_float(p: torch.Tensor) -> float:
    return float(torch.sigmoid(p))


def _regular_windows(in_hw: tuple[int, int], out: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(kernel, stride) of plain pooling with exactly the adaptive pooling windows ``in -> out``, or None."""
    kernel, stride = [], []
    for n in in_hw:
        # Adaptive pooling window i is [floor(i * n / out), ceil((i + 1) * n / out)).
        starts = [(i * n) // out for i in range(out)]
        ends = [-((-(i + 1) * n) // out) for i in range(out)]
        k = ends[0] - starts[0]
        s = starts[1] - starts[0] if out > 1 else k
        if s < 1 or any(e - b != k for b, e in zip(starts, ends)) or any(b != i * s for i, b in enumerate(starts)):
            return None
        kernel.append(k)
        stride.append(s)
    return (kernel[0], kernel[1]), (stride[0], stride[1])


def _adaptive_windows(n: int, out: int) -> list[tuple[int, int]]:
    # Adaptive pooling window i is [floor(i * n / out), ceil((i + 1) * n / out)).
    return [((i * n) // out, -((-(i + 1) * n) // out)) for i in range(out)]


def adaptive_pools_by_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(adaptive_avg_pool2d(x, size), adaptive_max_pool2d(x, size))`` with a few ops an ONNX exporter can trace.

    ONNX has no adaptive pooling, and irregular windows (e.g. 3x3 -> 4x4) have no plain-pool equivalent. The same
    windows here: the averages as two matrix products with per-window weights ``1 / len``, the maxima as a gather of
    each window's rows (short windows repeat their last index, which does not change a maximum) then a reduction,
    once per spatial axis. Maxima are exact; averages equal torch's up to float rounding.
    """
    height, width = x.shape[2], x.shape[3]
    avg = _window_means(height, size, x.dtype, x.device) @ x @ _window_means(width, size, x.dtype, x.device).T
    rows, k_rows = _window_indices(height, size, x.device)
    mx = x.index_select(2, rows).unflatten(2, (size, k_rows)).amax(dim=3)
    cols, k_cols = _window_indices(width, size, x.device)
    mx = mx.index_select(3, cols).unflatten(3, (size, k_cols)).amax(dim=4)
    return avg, mx


def _window_means(n: int, out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(out, n)``: row i averages adaptive window i."""
    weights = torch.zeros((out, n), dtype=dtype, device=device)
    for i, (start, end) in enumerate(_adaptive_windows(n, out)):
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def _window_indices(n: int, out: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Every window's indices, each padded to the longest window by repeating its last index, concatenated."""
    windows = _adaptive_windows(n, out)
    longest = max(end - start for start, end in windows)
    index = [min(start + j, end - 1) for start, end in windows for j in range(longest)]
    return torch.tensor(index, dtype=torch.long, device=device), longest


class SDNPool(nn.Module):
    """SDN mixed pooling ``gamma * avgpool(x) + (1 - gamma) * maxpool(x)``, both adaptive to ``size x size``.

    ``gamma = sigmoid(gamma_logit)`` with one learnable scalar ``gamma_logit`` (initialised to 0, i.e. gamma = 0.5):
    the sigmoid keeps gamma in [0, 1] without clamping, so its gradient never vanishes at a boundary.
    Inputs smaller than ``size`` are upsampled by the adaptive pools (overlapping windows). When the adaptive
    windows are regular (e.g. 5x5 -> 4x4: kernel 2, stride 1) the plain pools with the same windows are used,
    which are faster.
    """

    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.size = _positive_int("SDNPool size", size)
        self.gamma_logit = nn.Parameter(torch.zeros(()))
        self._gamma_constant: DerivedConstant[float] = DerivedConstant(_sigmoid_as_float)
        self._windows: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]] | None] = {}
        self._for_export = False

    def prepare_for_export(self) -> None:
        """Use ops an ONNX graph runs well from now on: irregular windows by :func:`adaptive_pools_by_windows`, the
        mix as ``mx + g * (avg - mx)``. Called by :func:`ee_rl.core.onnx_export.export_segments` on the copy it
        traces; the same values up to float rounding."""
        self._for_export = True

    @property
    def gamma(self) -> torch.Tensor:
        """The mixing weight of the average pool, in [0, 1]."""
        return torch.sigmoid(self.gamma_logit)

    def _gamma_for_forward(self) -> torch.Tensor | float:
        p = self._parameters["gamma_logit"]  # not self.gamma_logit: nn.Module.__getattr__ costs µs per call
        if torch.is_grad_enabled() and p.requires_grad:
            return torch.sigmoid(p)  # differentiable
        # Without gradients gamma is a constant: reuse it as a Python float (one op less per call on the hot path)
        # until the parameter changes.
        return self._gamma_constant.get(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, C, H, W)`` to ``(B, C, size, size)``."""
        if x.dim() != 4:
            raise ValueError(f"SDNPool expects a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        _, _, height, width = x.shape
        windows = self._windows.get((height, width), False)
        if windows is False:
            windows = _regular_windows((height, width), self.size)
            self._windows[(height, width)] = windows
        if windows is None and self._for_export:
            avg, mx = adaptive_pools_by_windows(x, self.size)
        elif windows is None:
            avg = F.adaptive_avg_pool2d(x, self.size)
            mx = F.adaptive_max_pool2d(x, self.size)
        else:
            kernel, stride = windows
            avg = F.avg_pool2d(x, kernel, stride)
            mx = torch.max_pool2d(x, kernel, stride)  # the C op, without F.max_pool2d's Python dispatch layer
        # lerp(mx, avg, g) = mx + g * (avg - mx) = g * avg + (1 - g) * mx, in one op (ONNX has no lerp: its export
        # is six nodes with a Where, so exported graphs get the three-op formula).
        if self._for_export:
            return mx + self._gamma_for_forward() * (avg - mx)
        return torch.lerp(mx, avg, self._gamma_for_forward())


class InternalClassifier(nn.Module):
    """An IC head: conv 3x3 (padding 1) -> ReLU -> :class:`SDNPool` -> flatten -> [concat cascade input] -> linear.

    Cascade connection (ZTW eq. 1): with ``cascade_in > 0`` the head also receives the previous IC's logits
    ``(B, cascade_in)``, optionally LayerNorm-ed, concatenated to the pooled features before the linear layer.
    By default they are detached (stop-gradient, ZTW section 3 / appendix C.3) so IC m's loss never changes
    IC m-1; ``detach_cascade=False`` is the "no stop-gradient" ablation.

    Args:
        in_channels: channels of the stage output this head is attached to.
        num_classes: K, the number of output logits.
        out_channels: conv output channels (default: ``in_channels``, as in ZTW).
        stride: conv stride (ZTW: 1 on CIFAR, 2 on larger images, 4 on Atari).
        pool_size: SDN pooling output size (4 -> 4x4).
        cascade_in: size of the previous IC's logits fed in (0 = no cascade input: IC 1, or SDN's independent ICs).
        cascade_layer_norm: apply LayerNorm to the cascade input (ZTW's ImageNet setting).
        detach_cascade: stop the gradient through the cascade input (default True).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        out_channels: int | None = None,
        stride: int = 1,
        pool_size: int = 4,
        cascade_in: int = 0,
        cascade_layer_norm: bool = False,
        detach_cascade: bool = True,
    ) -> None:
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        self.num_classes = _positive_int("num_classes", num_classes)
        out_channels = in_channels if out_channels is None else _positive_int("out_channels", out_channels)
        stride = _positive_int("stride", stride)
        if isinstance(cascade_in, bool) or not isinstance(cascade_in, int) or cascade_in < 0:
            raise ValueError(f"cascade_in must be a non-negative integer (0 = no cascade input), got {cascade_in!r}")
        self.cascade_in = cascade_in
        self.detach_cascade = bool(detach_cascade)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.pool = SDNPool(pool_size)
        self.cascade_norm = nn.LayerNorm(cascade_in) if (cascade_layer_norm and cascade_in > 0) else None
        self.linear = nn.Linear(out_channels * self.pool.size**2 + cascade_in, self.num_classes)
        # The hot path reads the parameters through these dicts (the very dicts nn.Module keeps them in, so
        # load_state_dict, .to() and optimiser steps are seen) instead of ``self.conv.weight``: each nn.Module
        # attribute lookup costs µs, and an exit at batch 1 is a few hundred µs in all.
        self._conv_params = self.conv._parameters
        self._conv_geometry = (self.conv.stride, self.conv.padding)
        self._linear_params = self.linear._parameters
        object.__setattr__(self, "_pool", self.pool)  # a plain reference, not a second registered submodule

    def forward(self, x: torch.Tensor, prev_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits ``(B, num_classes)`` for stage output ``x``; ``prev_logits`` iff ``cascade_in > 0``."""
        # Direct functional calls skip nn.Module.__call__ overhead on the inference hot path (so forward hooks on
        # the submodules do not run; hooks on the head itself do).
        conv, (stride, padding) = self._conv_params, self._conv_geometry
        h = torch.relu_(F.conv2d(x, conv["weight"], conv["bias"], stride, padding))
        h = self._pool.forward(h)
        h = h.reshape(h.shape[0], -1)  # = flatten(1); cheaper on the channels_last (copying) path
        if self.cascade_in:
            if prev_logits is None:
                raise ValueError(
                    "this InternalClassifier has a cascade input: pass the previous IC's logits as prev_logits"
                )
            if prev_logits.shape != (h.shape[0], self.cascade_in):
                raise ValueError(
                    f"prev_logits must have shape (batch={h.shape[0]}, cascade_in={self.cascade_in}), "
                    f"got {tuple(prev_logits.shape)}"
                )
            c = prev_logits.detach() if self.detach_cascade else prev_logits
            if self.cascade_norm is not None:
                c = self.cascade_norm(c)
            h = torch.cat((h, c), dim=1)
        elif prev_logits is not None:
            raise ValueError("this InternalClassifier has no cascade input (cascade_in=0): do not pass prev_logits")
        linear = self._linear_params
        # What F.linear does for a 2-D input, without its dispatch layer (the same aten kernel, addmm).
        return torch.addmm(linear["bias"], h, linear["weight"].t())


def make_internal_classifiers(
    in_channels: Sequence[int],
    num_classes: int,
    *,
    cascade: bool = True,
    out_channels: Sequence[int | None] | None = None,
    stride: int | Sequence[int] = 1,
    pool_size: int = 4,
    cascade_layer_norm: bool = False,
    detach_cascade: bool = True,
) -> nn.ModuleList:
    """Build one IC per entry of ``in_channels`` (channels of the stages they attach to), in order.

    ``cascade=True`` gives ZTW's cascade (IC 1 has no cascade input, IC m gets IC m-1's K logits);
    ``cascade=False`` gives SDN's independent ICs. ``out_channels`` and ``stride`` are one value per IC (``stride``
    may also be one int for all); other arguments are passed to every :class:`InternalClassifier`.
    """
    in_channels = list(in_channels)
    if not in_channels:
        raise ValueError("make_internal_classifiers needs at least one entry in in_channels")
    outs = [None] * len(in_channels) if out_channels is None else list(out_channels)
    strides = [stride] * len(in_channels) if isinstance(stride, int) else list(stride)
    for what, values in (("out_channels", outs), ("stride", strides)):
        if len(values) != len(in_channels):
            raise ValueError(
                f"{what} has {len(values)} entries but in_channels has {len(in_channels)}; give one per IC"
            )
    return nn.ModuleList(
        InternalClassifier(
            c,
            num_classes,
            out_channels=o,
            stride=s,
            pool_size=pool_size,
            cascade_in=num_classes if (cascade and m > 0) else 0,
            cascade_layer_norm=cascade_layer_norm,
            detach_cascade=detach_cascade,
        )
        for m, (c, o, s) in enumerate(zip(in_channels, outs, strides))
    )
