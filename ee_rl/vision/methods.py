"""Exit methods as head variants: ZTW (cascade + geometric ensembles), SDN (independent ICs) and the ablations of ZTW
appendix C (cascade only, ensemble only, additive ensembles, no stop-gradient). PBEE needs no training of its own: it
is the SDN heads read with the patience rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ee_rl.core import EarlyExitModel, InternalClassifier, StagedBackbone, make_ensembles
from ee_rl.errors import UserError
from ee_rl.vision.backbones import ICPlacement

METHODS = ("ztw", "sdn")
#: Methods evaluated from trained variants: PBEE reads the SDN heads with the patience rule.
EVAL_METHODS = ("sdn", "pbee", "ztw")


@dataclass(frozen=True)
class ExitVariant:
    """How the ICs are built and combined.

    Attributes:
        cascade: IC m also reads IC m-1's logits (ZTW eq. 1).
        ensemble: ``"geometric"`` (ZTW eq. 2), ``"additive"`` (appendix C.2) or None (each IC answers alone).
        detach_cascade: stop-gradient on the cascade input (ZTW's default; False = the C.3 ablation).
    """

    cascade: bool
    ensemble: str | None
    detach_cascade: bool = True

    @property
    def name(self) -> str:
        """``ztw``, ``sdn`` or ``ztw-<ablation>...`` (used in file names and reports)."""
        if not self.cascade and self.ensemble is None:
            return "sdn"
        parts = ["ztw"]
        if self.ensemble is None:
            parts.append("cascade-only")
        if not self.cascade:
            parts.append("ensemble-only")
        if self.ensemble == "additive":
            parts.append("additive")
        if self.cascade and not self.detach_cascade:
            parts.append("no-stop-gradient")
        return "-".join(parts)

    def to_dict(self) -> dict:
        """Plain dict (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExitVariant:
        """Inverse of :meth:`to_dict`."""
        return cls(bool(data["cascade"]), data["ensemble"], bool(data.get("detach_cascade", True)))


SDN = ExitVariant(cascade=False, ensemble=None)
ZTW = ExitVariant(cascade=True, ensemble="geometric")


def exit_variant(
    method: str,
    *,
    cascade_only: bool = False,
    ensemble_only: bool = False,
    additive: bool = False,
    no_stop_gradient: bool = False,
) -> ExitVariant:
    """The variant for ``--method`` and the ablation flags (which only apply to ZTW)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")
    flags = {"--cascade-only": cascade_only, "--ensemble-only": ensemble_only, "--additive": additive,
             "--no-stop-gradient": no_stop_gradient}
    if method == "sdn":
        used = [f for f, on in flags.items() if on]
        if used:
            raise UserError(f"{', '.join(used)} are ablations of ZTW; use them with --method ztw")
        return SDN
    if cascade_only and ensemble_only:
        raise UserError("--cascade-only and --ensemble-only exclude each other (together they are SDN)")
    if cascade_only and additive:
        raise UserError("--additive changes the ensembles, which --cascade-only removes")
    if ensemble_only and no_stop_gradient:
        raise UserError("--no-stop-gradient changes the cascade, which --ensemble-only removes")
    return ExitVariant(
        cascade=not ensemble_only,
        ensemble=None if cascade_only else ("additive" if additive else "geometric"),
        detach_cascade=not no_stop_gradient,
    )


def variant_by_name(name: str) -> ExitVariant:
    """Parse a variant name produced by :attr:`ExitVariant.name` (e.g. ``ztw-additive``)."""
    if name == "sdn":
        return SDN
    parts = name.split("-", 1)
    if parts[0] != "ztw":
        raise UserError(f"unknown method {name!r}; accepted: sdn, ztw and ztw-<ablations>")
    rest = parts[1] if len(parts) > 1 else ""
    known = ("cascade-only", "ensemble-only", "additive", "no-stop-gradient")
    flags = {k: False for k in known}
    while rest:
        match = next((k for k in known if rest == k or rest.startswith(k + "-")), None)
        if match is None:
            raise UserError(f"unknown ablation in {name!r}; accepted suffixes: {', '.join(known)}")
        flags[match] = True
        rest = rest[len(match) + 1 :]
    variant = exit_variant(
        "ztw",
        cascade_only=flags["cascade-only"],
        ensemble_only=flags["ensemble-only"],
        additive=flags["additive"],
        no_stop_gradient=flags["no-stop-gradient"],
    )
    if variant.name != name:
        raise UserError(f"method name {name!r} is not canonical; write it as {variant.name!r}")
    return variant


def ic_strides(
    backbone: StagedBackbone, attach_after: Sequence[int], sample: torch.Tensor, downsample: bool
) -> list[tuple[int, int]]:
    """``(in_channels, stride)`` of each IC: stride 2 when ``downsample`` and both spatial dims are > 8 (A.1)."""
    shapes = backbone.stage_output_shapes(sample[:1])
    out = []
    for s in attach_after:
        shape = shapes[s]
        if len(shape) != 3:
            raise ValueError(f"an IC needs a (C, H, W) stage output, stage {s} gives {tuple(shape)}")
        out.append((int(shape[0]), 2 if downsample and shape[1] > 8 and shape[2] > 8 else 1))
    return out


def build_heads(
    variant: ExitVariant,
    backbone: StagedBackbone,
    placement: ICPlacement,
    num_classes: int,
    sample: torch.Tensor,
    *,
    downsample: bool = False,
) -> nn.ModuleList:
    """The ICs of ``variant`` for ``backbone`` (core :class:`InternalClassifier` heads, one per placement entry)."""
    heads = []
    for m, (channels, stride) in enumerate(ic_strides(backbone, placement.attach_after, sample, downsample)):
        heads.append(
            InternalClassifier(
                channels,
                num_classes,
                out_channels=max(1, channels // placement.channel_divisor),
                stride=stride,
                cascade_in=num_classes if (variant.cascade and m > 0) else 0,
                cascade_layer_norm=placement.cascade_layer_norm,
                detach_cascade=variant.detach_cascade,
            )
        )
    return nn.ModuleList(heads)


def build_model(
    variant: ExitVariant,
    backbone: StagedBackbone,
    placement: ICPlacement,
    num_classes: int,
    sample: torch.Tensor,
    *,
    downsample: bool = False,
) -> EarlyExitModel:
    """A fresh :class:`EarlyExitModel` of ``variant`` on the frozen ``backbone`` (ensembles if the variant has them).

    The heads are sized by one pass of ``sample`` through the backbone, on the backbone's device, and the model is
    returned on that device (a backbone already on the GPU gets GPU heads; ``sample`` may live anywhere).
    """
    heads = build_heads(variant, backbone, placement, num_classes, sample, downsample=downsample)
    ensembles = make_ensembles(len(heads), num_classes, kind=variant.ensemble) if variant.ensemble else None
    return EarlyExitModel(backbone, heads, ensembles, list(placement.attach_after)).to(backbone.device)
