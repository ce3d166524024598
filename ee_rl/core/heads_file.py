"""The heads file: the trained ICs (and ensembles) of an :class:`EarlyExitModel`, without its backbone.

One format for the RL agents (``agents/<Game>/exits-<method>.pt``) and the vision runs (``exits-<method>.pt``): a
``torch.save`` of a plain dict::

    format, version      "ee_rl.exit_heads", 1
    method               ExitMethod.to_dict()
    attach_after         stage index of each IC
    heads, ensembles     state dicts (CPU tensors); ensembles None without ensembles
    ...                  what the caller records about the backbone and the training (plain values only)

Files are written atomically and read with ``torch.load(weights_only=True)``: they hold tensors and plain Python
values only (dict, list, tuple, str, int, float, bool, None), so reading one never runs code from it.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ee_rl.core.method import ExitMethod
from ee_rl.core.model import EarlyExitModel
from ee_rl.errors import UserError
from ee_rl.io import atomic_write_bytes

#: Marks a heads file (the ``format`` entry).
HEADS_FORMAT = "ee_rl.exit_heads"
HEADS_FORMAT_VERSION = 1
#: Entries every heads file has; the caller's own entries may not reuse these names.
CORE_KEYS = ("format", "version", "method", "attach_after", "heads", "ensembles")
#: Vision exit files written before the one format: ``kind`` instead of ``format``/``version``, ``variant`` (an
#: ExitMethod dict without ``method``) instead of ``method``. Read as version 1 files.
_VISION_EXITS_KIND = "ee_rl.vision.exits"


def _state_on_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    # Clones: the payload must not alias the live parameters (training goes on after a checkpoint).
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


#: Exact types ``torch.load(weights_only=True)`` rebuilds (subclasses such as numpy's float64, named tuples or
#: defaultdicts are pickled as their own classes, which it refuses).
_PLAIN_SCALARS = (type(None), bool, int, float, str)
_PLAIN_SEQUENCES = (list, tuple, torch.Size)
_PLAIN_MAPPINGS = (dict, OrderedDict)


def _check_plain(value: Any, where: str) -> None:
    """Refuse what ``torch.load(weights_only=True)`` could not read back, naming the entry (a ``ValueError``)."""
    kind = type(value)
    if kind in _PLAIN_SCALARS or isinstance(value, torch.Tensor):
        return
    if kind in _PLAIN_SEQUENCES:
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if kind in _PLAIN_MAPPINGS:
        for key, item in value.items():
            if type(key) not in _PLAIN_SCALARS:
                raise ValueError(f"heads file entry {where} has a key of type {type(key).__name__}: {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise ValueError(
        f"heads file entry {where} is a {kind.__name__}; store plain values (dict, list, tuple, str, int, float, "
        "bool, None) or tensors so the file loads with weights_only=True"
    )


def heads_payload(model: EarlyExitModel, method: ExitMethod, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a heads file holds: the core entries (see the module docstring) and the caller's ``fields``.

    ``fields`` (e.g. the hash of the backbone the heads were trained on, the training config) must be plain
    values and may not reuse a name of :data:`CORE_KEYS`; either mistake is a ``ValueError``.
    """
    clash = sorted(set(fields) & set(CORE_KEYS))
    if clash:
        raise ValueError(f"heads file fields {clash} are reserved for the format itself")
    _check_plain(dict(fields), "fields")
    return {
        "format": HEADS_FORMAT,
        "version": HEADS_FORMAT_VERSION,
        "method": method.to_dict(),
        "attach_after": list(model.attach_after),
        "heads": _state_on_cpu(model.heads),
        "ensembles": _state_on_cpu(model.ensembles) if model.ensembles is not None else None,
        **fields,
    }


def write_heads_file(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write a :func:`heads_payload` dict to ``path`` atomically (a crash never leaves half a file)."""
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """A file of an older layout as a current one (same tensors, same values)."""
    if payload.get("kind") == _VISION_EXITS_KIND and "format" not in payload:
        rest = {k: v for k, v in payload.items() if k not in ("kind", "variant")}
        method = ExitMethod.from_dict(payload["variant"]).to_dict()
        return {"format": HEADS_FORMAT, "version": HEADS_FORMAT_VERSION, "method": method, **rest}
    return payload


def read_heads_file(path: str | Path, *, what: str = "heads file", required: Iterable[str] = ()) -> dict[str, Any]:
    """Read and check a heads file (``torch.load`` with ``weights_only=True``, on the CPU); return its dict.

    ``what`` names the file in messages; ``required``: entries the caller needs beyond the core ones (a heads file
    of another kind, e.g. vision heads given to an RL loader, lacks them). A missing, corrupt or foreign file, or
    one of another format version, is a one-line :class:`UserError`. Vision exit files of the older layout are
    read too and returned in the current one.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for broken, foreign or unsafe files
        raise UserError(f"{what} {path} is corrupt or not a torch file: {type(exc).__name__}") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path} is not an ee_rl heads file (written by train_exits.py or train_vision.py)")
    payload = _upgrade(payload)
    if payload.get("format") != HEADS_FORMAT:
        raise UserError(f"{path} is not an ee_rl heads file (written by train_exits.py or train_vision.py)")
    if payload.get("version") != HEADS_FORMAT_VERSION:
        raise UserError(
            f"{what} {path} has format version {payload.get('version')}, this ee_rl reads {HEADS_FORMAT_VERSION}"
        )
    missing = [key for key in (*CORE_KEYS, *required) if key not in payload]
    if missing:
        raise UserError(f"{path} is a heads file of another kind, not a {what} (it lacks {', '.join(missing)})")
    return payload


def load_state_strict(module: nn.Module, state: Any, source: str | Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch is a one-line :class:`UserError`.

    ``source`` names the file, ``what`` what it should fit (e.g. ``"the ztw heads of this backbone"``).
    """
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # load_state_dict's first line only says "Error(s) in loading state_dict for ..."; the cause is the next.
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise UserError(f"{source} does not fit {what} ({detail}); retrain it or pass another file") from None


def load_heads_state(model: EarlyExitModel, payload: Mapping[str, Any], source: str | Path, what: str) -> None:
    """Load the heads (and ensembles) of a :func:`read_heads_file` dict into ``model``, strictly.

    A model built for another method or backbone (shapes, keys, ensembles or not) is a one-line :class:`UserError`.
    """
    load_state_strict(model.heads, payload["heads"], source, what)
    if model.ensembles is not None:
        load_state_strict(model.ensembles, payload["ensembles"], source, f"{what} (ensembles)")
