"""Vision artifacts: the trained backbone (``backbone.pt``) and one file per exit variant (``exits-<name>.pt``).

Exit files record a hash of the backbone they were trained on; loading them against another backbone is an error.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from ee_rl.core import EarlyExitModel
from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes
from ee_rl.vision.backbones import StagedNet, build_backbone
from ee_rl.vision.methods import ExitVariant, build_model

BACKBONE_KIND = "ee_rl.vision.backbone"
EXITS_KIND = "ee_rl.vision.exits"


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through an atomic write (a crash never leaves a half-written file in place)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, what: str) -> dict:
    """``torch.load`` on CPU of a dict written by this package; unreadable files are a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"cannot read {what} {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a {what} file")
    return obj


def state_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the keys and exact tensor bytes of a state dict (identifies a backbone)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()


def backbone_record(net: StagedNet, info: dict[str, Any]) -> dict[str, Any]:
    """What ``backbone.pt`` holds: the architecture, input description, weights and ``info`` (dataset, seed, ...)."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {"kind": BACKBONE_KIND, "arch": net.arch, **info, "state_dict": state, "sha256": state_hash(state)}


def load_backbone(path: str | Path) -> tuple[StagedNet, dict[str, Any]]:
    """Rebuild the :class:`StagedNet` saved in ``backbone.pt``; return it (eval mode, CPU) and the record."""
    record = load_torch(path, "backbone checkpoint")
    if record.get("kind") != BACKBONE_KIND:
        raise UserError(f"{path} is not an ee_rl vision backbone checkpoint")
    net = build_backbone(
        record["arch"], record["num_classes"], record["input_shape"], record["mean"], record["std"]
    )
    _load_strict(net, record["state_dict"], path, f"the current {record['arch']} definition")
    return net.eval(), record


def _load_strict(module: torch.nn.Module, state: dict, path: str | Path, what: str) -> None:
    """``load_state_dict(strict=True)``; a mismatch (e.g. weights of an older definition) is a one-line error."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise UserError(f"{path} does not fit {what} ({detail}); retrain it or pass another file") from None


def exits_record(
    model: EarlyExitModel, variant: ExitVariant, backbone: dict[str, Any], info: dict[str, Any]
) -> dict[str, Any]:
    """What ``exits-<variant>.pt`` holds: the variant, the heads (and ensembles) and the backbone's hash."""
    return {
        "kind": EXITS_KIND,
        "variant": variant.to_dict(),
        "backbone_sha256": backbone["sha256"],
        "arch": backbone["arch"],
        "dataset": backbone["dataset"],
        "num_classes": backbone["num_classes"],
        "attach_after": list(model.attach_after),
        "heads": {k: v.detach().cpu() for k, v in model.heads.state_dict().items()},
        "ensembles": (
            {k: v.detach().cpu() for k, v in model.ensembles.state_dict().items()}
            if model.ensembles is not None
            else None
        ),
        **info,
    }


def load_exit_model(
    exits_path: str | Path, backbone_path: str | Path | None = None, *, downsample: bool | None = None
) -> tuple[EarlyExitModel, dict[str, Any]]:
    """An :class:`EarlyExitModel` (eval mode, CPU) from ``exits-<variant>.pt`` and its backbone.

    ``backbone_path`` defaults to ``backbone.pt`` beside the exits file. A backbone whose hash differs from the one the
    heads were trained on is a :class:`UserError`.
    """
    exits_path = Path(exits_path)
    record = load_torch(exits_path, "exit heads file")
    if record.get("kind") != EXITS_KIND:
        raise UserError(f"{exits_path} is not an ee_rl vision exit-heads file")
    net, backbone = load_backbone(backbone_path or exits_path.parent / "backbone.pt")
    if backbone["sha256"] != record["backbone_sha256"]:
        raise UserError(
            f"{exits_path} was trained on a different backbone (hash {record['backbone_sha256'][:12]}…), "
            f"not on {backbone_path or exits_path.parent / 'backbone.pt'} (hash {backbone['sha256'][:12]}…)"
        )
    variant = ExitVariant.from_dict(record["variant"])
    sample = torch.zeros(1, *backbone["input_shape"])
    ds = record.get("ic_downsample", False) if downsample is None else downsample
    model = build_model(variant, net.frozen(), net.placement, backbone["num_classes"], sample, downsample=ds)
    _load_strict(model.heads, record["heads"], exits_path, f"the {variant.name} heads of this backbone")
    if model.ensembles is not None:
        _load_strict(model.ensembles, record["ensembles"], exits_path, f"the {variant.name} ensembles")
    return model.eval(), record
