"""A constant derived from one parameter, recomputed only when that parameter changes (for no-grad hot paths)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class DerivedConstant(Generic[T]):
    """``fn(parameter)`` cached until the parameter's version counter or storage changes.

    Optimiser steps, in-place edits and ``load_state_dict`` bump the version; ``.to()`` moves the storage. The value
    is computed outside inference mode and without gradients, so a cached tensor can still be saved by autograd
    in a later training step (e.g. a frozen module whose inputs need gradients). ``fn`` should be a module-level
    function so the owning module stays picklable.
    """

    def __init__(self, fn: Callable[[torch.Tensor], T]) -> None:
        self._fn = fn
        self._key: tuple[int, int] | None = None
        self._value: T | None = None

    def get(self, parameter: torch.Tensor) -> T:
        """The cached ``fn(parameter.detach())``, recomputed if the parameter changed since the last call."""
        key = (parameter._version, parameter.data_ptr())
        if key != self._key:
            with torch.inference_mode(False), torch.no_grad():
                self._value = self._fn(parameter.detach())
            self._key = key
        return self._value  # type: ignore[return-value]
