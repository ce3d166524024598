"""YAML configs → dataclasses, rl-zoo style: a default section plus optional per-game overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ee_rl.errors import UserError

T = TypeVar("T")

#: The YAML configs, shipped inside the package (``configs/`` at the top of the repository links here).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable or non-mapping file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def merged_section(data: dict[str, Any], default: str, override: str | None) -> dict[str, Any]:
    """``data[default]`` updated with ``data[override]`` (if that section exists)."""
    if default not in data:
        raise UserError(f"config has no '{default}' section (sections: {', '.join(map(str, data))})")
    merged = dict(data[default] or {})
    if override is not None and override in data:
        merged.update(data[override] or {})
    return merged


def build_dataclass(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Instantiate dataclass ``cls`` from ``values``, coercing numbers; unknown keys are a :class:`UserError`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {source}; accepted: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        kwargs[name] = _coerce(value, getattr(cls, name, None), f"{source}: '{name}'")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, what: str) -> Any:
    """Check ``value`` against the type of the field's default (bool, int, float; strings pass through)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{what} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if not is_number or float(value) != int(value):
            raise UserError(f"{what} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if not is_number:
            raise UserError(f"{what} must be a number, got {value!r}")
        return float(value)
    return value


def require_positive_ints(settings: object, names: Iterable[str]) -> None:
    """Raise a one-line :class:`UserError` naming the first of the fields ``names`` of ``settings`` whose value is
    not a positive integer (``True`` is not one)."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
