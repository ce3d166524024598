"""Vision artifacts: the trained backbone (``backbone.pt``) and one heads file per exit method (``exits-<name>.pt``).

Heads files (the core format, :mod:`ee_rl.core.heads_file`) record a hash of the backbone they were trained on;
loading them against another backbone is an error.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from ee_rl.core import EarlyExitModel
from ee_rl.core.fingerprint import state_dict_sha256
from ee_rl.core.heads_file import heads_payload, load_heads_state, load_state_strict, read_heads_file
from ee_rl.core.method import ExitMethod
from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes
from ee_rl.vision.backbones import StagedNet, build_backbone
from ee_rl.vision.methods import build_model

BACKBONE_KIND = "ee_rl.vision.backbone"
#: What a vision heads file records beyond the core entries (see :func:`exits_record`).
EXITS_FIELDS = ("backbone_sha256", "arch", "dataset", "num_classes")


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through an atomic write (a crash never leaves a half-written file in place)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, what: str) -> dict:
    """``torch.load(weights_only=True)`` on CPU of a dict written by this package (tensors and plain values only,
    so loading a file cannot run code); unreadable or unsafe files are a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # a user-given file never runs code
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"cannot read {what} {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a {what} file")
    return obj


def backbone_record(net: StagedNet, info: dict[str, Any]) -> dict[str, Any]:
    """What ``backbone.pt`` holds: the architecture, input description, weights and ``info`` (dataset, seed, ...)."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {"kind": BACKBONE_KIND, "arch": net.arch, **info, "state_dict": state, "sha256": state_dict_sha256(state)}


def load_backbone(path: str | Path) -> tuple[StagedNet, dict[str, Any]]:
    """Rebuild the :class:`StagedNet` saved in ``backbone.pt``; return it (eval mode, CPU) and the record."""
    record = load_torch(path, "backbone checkpoint")
    if record.get("kind") != BACKBONE_KIND:
        raise UserError(f"{path} is not an ee_rl vision backbone checkpoint")
    net = build_backbone(
        record["arch"], record["num_classes"], record["input_shape"], record["mean"], record["std"]
    )
    load_state_strict(net, record["state_dict"], path, f"the current {record['arch']} definition")
    return net.eval(), record


def exits_record(
    model: EarlyExitModel, method: ExitMethod, backbone: dict[str, Any], info: dict[str, Any]
) -> dict[str, Any]:
    """What ``exits-<method>.pt`` holds: the core heads file entries, the backbone's hash, architecture, dataset and
    class count, and ``info`` (seed, config, test summary: plain values only, so the file loads with
    ``weights_only=True``). Write it with :func:`ee_rl.core.heads_file.write_heads_file`."""
    return heads_payload(model, method, {
        "backbone_sha256": backbone["sha256"],
        "arch": backbone["arch"],
        "dataset": backbone["dataset"],
        "num_classes": backbone["num_classes"],
        **info,
    })


def load_exit_model(
    exits_path: str | Path, backbone_path: str | Path | None = None, *, downsample: bool | None = None
) -> tuple[EarlyExitModel, dict[str, Any]]:
    """An :class:`EarlyExitModel` (eval mode, CPU) from ``exits-<method>.pt`` and its backbone.

    ``backbone_path`` defaults to ``backbone.pt`` beside the exits file. A backbone whose hash differs from the one the
    heads were trained on is a :class:`UserError`.
    """
    exits_path = Path(exits_path)
    record = read_heads_file(exits_path, what="vision exit heads file", required=EXITS_FIELDS)
    net, backbone = load_backbone(backbone_path or exits_path.parent / "backbone.pt")
    if backbone["sha256"] != record["backbone_sha256"]:
        raise UserError(
            f"{exits_path} was trained on a different backbone (hash {record['backbone_sha256'][:12]}…), "
            f"not on {backbone_path or exits_path.parent / 'backbone.pt'} (hash {backbone['sha256'][:12]}…)"
        )
    method = ExitMethod.from_dict(record["method"])
    sample = torch.zeros(1, *backbone["input_shape"])
    ds = record.get("ic_downsample", False) if downsample is None else downsample
    model = build_model(method, net.frozen(), net.placement, backbone["num_classes"], sample, downsample=ds)
    load_heads_state(model, record, exits_path, f"the {method.name} heads of this backbone")
    return model.eval(), record
