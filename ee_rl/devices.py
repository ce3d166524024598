"""Torch device names as users type them (``--device``), checked in one place for every command."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ee_rl.errors import UserError

ACCEPTED = "cpu, cuda, cuda:N, auto"


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a :class:`torch.device`.

    An unknown name, another device type, or CUDA asked for on a machine without it is a :class:`UserError`
    (SB3 would otherwise fall back to the CPU silently, and torch would raise a raw traceback).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {name!r}; accepted: {ACCEPTED}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}; accepted: {ACCEPTED}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this torch build has no usable CUDA GPU (torch {torch.__version__})")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the previous count (a task that runs in the
    driver's process must not change the driver's)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
