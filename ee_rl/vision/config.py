"""Vision recipes from ``configs/vision.yaml``: a ``default`` section, overridden by the architecture's section, then
the dataset's, then ``--set phase.key=value`` pairs from the command line."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ee_rl.config import CONFIG_DIR, build_dataclass, read_yaml
from ee_rl.errors import UserError

DEFAULT_CONFIG = CONFIG_DIR / "vision.yaml"
PHASES = ("backbone", "transfer", "ics", "ensembles")
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass
class PhaseConfig:
    """One training phase: optimiser, learning-rate steps (× ``gamma`` at each milestone epoch), epochs, batch size."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 1
    milestones: list = dataclasses.field(default_factory=list)
    gamma: float = 0.1
    batch_size: int = 128

    def check(self, where: str) -> None:
        """Raise :class:`UserError` on a value no phase can use."""
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"{where}.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.lr > 0 or self.epochs < 0 or self.batch_size < 1 or self.weight_decay < 0 or self.gamma <= 0:
            raise UserError(
                f"{where}: need lr > 0, epochs >= 0, batch_size >= 1, weight_decay >= 0 and gamma > 0, got "
                f"lr={self.lr}, epochs={self.epochs}, batch_size={self.batch_size}, "
                f"weight_decay={self.weight_decay}, gamma={self.gamma}"
            )
        if not isinstance(self.milestones, list) or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones
        ):
            raise UserError(f"{where}.milestones must be a list of positive epoch numbers, got {self.milestones!r}")


@dataclasses.dataclass
class VisionConfig:
    """Everything a vision run needs besides the dataset, architecture and seed.

    Attributes:
        backbone: the backbone's own training (skipped when weights are given).
        transfer: training the new linear head of a pretrained backbone (ZTW appendix B.3).
        ics: internal classifiers on the frozen backbone (ZTW A.1: Adam 1e-3, 50 epochs, ÷10 after 15).
        ensembles: the ensembles, on cached per-IC log-probabilities (ZTW A.1: 500 epochs).
        eval_batch_size: batch size of every no-gradient pass.
        eval_every: log test accuracies to TensorBoard every this many epochs (and after the last); 0 = only after
            the last epoch.
        num_workers: DataLoader workers for image-folder datasets.
        ic_downsample: IC conv stride 2 when both spatial dims of its input are > 8 (Tiny ImageNet, ImageNet).
        image_size / resize: crop size and shorter-side resize for ImageNet-style image folders.
    """

    backbone: PhaseConfig = dataclasses.field(default_factory=PhaseConfig)
    transfer: PhaseConfig = dataclasses.field(default_factory=PhaseConfig)
    ics: PhaseConfig = dataclasses.field(default_factory=PhaseConfig)
    ensembles: PhaseConfig = dataclasses.field(default_factory=PhaseConfig)
    eval_batch_size: int = 500
    eval_every: int = 1
    num_workers: int = 4
    ic_downsample: bool = False
    image_size: int = 224
    resize: int = 256

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for checkpoints and reports)."""
        return dataclasses.asdict(self)


def _deep_update(base: dict[str, Any], update: dict[str, Any], source: str) -> None:
    for key, value in (update or {}).items():
        if key in PHASES:
            if value is not None and not isinstance(value, dict):
                raise UserError(f"{source}: '{key}' must be a mapping of phase settings, got {value!r}")
            base.setdefault(key, {}).update(value or {})
        else:
            base[key] = value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["ics.epochs=3", "num_workers=0"]`` → nested dict; values parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE (e.g. ics.epochs=5), got {pair!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"--set {pair!r}: the value is not a valid YAML scalar or list") from None
        parts = key.split(".")
        if len(parts) == 2 and parts[0] in PHASES:
            out.setdefault(parts[0], {})[parts[1]] = value
        elif len(parts) == 1 and parts[0] not in PHASES:
            out[parts[0]] = value
        else:
            raise UserError(
                f"--set key {key!r} must be a top-level setting or <phase>.<setting> with phase in {PHASES}"
            )
    return out


def load_vision_config(
    path: str | Path | None, dataset: str, arch: str, overrides: list[str] | None = None
) -> VisionConfig:
    """The ``default`` section of the YAML file, updated by the ``arch`` section, the ``dataset`` section and
    ``overrides`` (``--set`` pairs), as a checked :class:`VisionConfig`."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_yaml(path)
    if "default" not in data:
        raise UserError(f"config {path} has no 'default' section (sections: {', '.join(map(str, data))})")
    merged: dict[str, Any] = {}
    for section in ("default", arch, dataset):
        if section in data:
            if data[section] is not None and not isinstance(data[section], dict):
                raise UserError(f"config {path}: section '{section}' must be a mapping")
            _deep_update(merged, copy.deepcopy(data[section]), f"{path} [{section}]")
    _deep_update(merged, parse_overrides(overrides or []), "--set")
    phases = {}
    for phase in PHASES:
        cfg = build_dataclass(PhaseConfig, merged.pop(phase, {}) or {}, f"{path} [{phase}]")
        cfg.check(phase)
        phases[phase] = cfg
    config = build_dataclass(VisionConfig, merged, str(path))
    for phase, cfg in phases.items():
        setattr(config, phase, cfg)
    if (config.eval_batch_size < 1 or config.num_workers < 0 or config.image_size < 1 or config.resize < 1
            or config.eval_every < 0):
        raise UserError(
            "eval_batch_size, image_size and resize must be >= 1, num_workers and eval_every >= 0, got "
            f"eval_batch_size={config.eval_batch_size}, image_size={config.image_size}, resize={config.resize}, "
            f"num_workers={config.num_workers}, eval_every={config.eval_every}"
        )
    return config
