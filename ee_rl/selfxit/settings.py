"""SelfXit run settings (``configs/selfxit.yaml``): one dataclass for the vision and the RL path."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ee_rl.config import CONFIG_DIR, build_dataclass, merged_section, read_yaml, require_positive_ints
from ee_rl.core.head_search import SearchSpace, TrainSettings
from ee_rl.core.runtime import check_runtime
from ee_rl.errors import UserError

DEFAULT_CONFIG = CONFIG_DIR / "selfxit.yaml"


@dataclasses.dataclass
class SelfXitSettings:
    """Everything a SelfXit run uses; see ``configs/selfxit.yaml`` for what each value means."""

    tolerance: float = 0.02
    tolerance_sweep: list = dataclasses.field(default_factory=lambda: [0.005, 0.01, 0.02, 0.05, 0.1])
    split: list = dataclasses.field(default_factory=lambda: [0.5, 0.2, 0.3])
    seed: int = 0
    search_trials: int = 12
    agreement_slack: float = 0.01
    max_convs: int = 2
    kernels: list = dataclasses.field(default_factory=lambda: [1, 3, 5])
    strides: list = dataclasses.field(default_factory=lambda: [1, 2])
    widths: list = dataclasses.field(default_factory=lambda: [32, 64, 128])
    head_epochs: int = 40
    head_batch_size: int = 64
    head_lr: float = 1.0e-3
    head_weight_decay: float = 0.0
    batch_size: int = 256
    timing_repeats: int = 20
    latency_batch_sizes: list = dataclasses.field(default_factory=lambda: [1, 16, 32, 64, 128])
    latency_repeats: int = 30
    threads: int = 1
    runtime: str = "torch"
    states: int = 4000
    state_stride: int = 4
    episodes: int = 10
    n_envs: int = 8
    sticky_prob: float = 0.1
    env_seed: int = 10_000
    max_episode_frames: int = 108_000

    def validate(self) -> SelfXitSettings:
        """Check every value; a bad one is a one-line :class:`UserError`. Returns ``self``."""
        if not 0.0 <= self.tolerance <= 1.0:
            raise UserError(f"tolerance must be a fraction in [0, 1] (0.02 = 2 %), got {self.tolerance!r}")
        if not isinstance(self.tolerance_sweep, list) or any(
            isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1 for t in self.tolerance_sweep
        ):
            raise UserError(f"tolerance_sweep must be a list of fractions in [0, 1], got {self.tolerance_sweep!r}")
        if (
            not isinstance(self.split, list)
            or len(self.split) != 3
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in self.split)
            or not math.isclose(sum(self.split), 1.0, abs_tol=1e-6)
        ):
            raise UserError(
                f"split must be three positive fractions (train, val, test) summing to 1, got {self.split!r}"
            )
        for name in ("kernels", "strides", "widths", "latency_batch_sizes"):
            values = getattr(self, name)
            if not isinstance(values, list) or not values or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
            ):
                raise UserError(f"{name} must be a non-empty list of positive integers, got {values!r}")
        require_positive_ints(self, ("head_epochs", "head_batch_size", "batch_size", "timing_repeats",
                                     "latency_repeats", "threads", "states", "state_stride", "episodes", "n_envs",
                                     "max_episode_frames"))
        if self.search_trials < 0 or not 0 <= self.max_convs <= 2:
            raise UserError(f"search_trials must be >= 0 and max_convs 0-2, got {self.search_trials}, {self.max_convs}")
        if self.head_lr <= 0 or self.head_weight_decay < 0 or self.agreement_slack < 0:
            raise UserError("head_lr must be > 0, head_weight_decay and agreement_slack >= 0")
        if not 0.0 <= self.sticky_prob < 1.0:
            raise UserError(f"sticky_prob must be in [0, 1), got {self.sticky_prob}")
        check_runtime(self.runtime)  # known, and installed here
        return self

    @property
    def space(self) -> SearchSpace:
        """The head-search space."""
        return SearchSpace(self.max_convs, tuple(self.kernels), tuple(self.strides), 2, tuple(self.widths))

    @property
    def train(self) -> TrainSettings:
        """How each head is trained on its medial dataset."""
        return TrainSettings(self.head_epochs, self.head_batch_size, self.head_lr, self.head_weight_decay, self.seed)


def load_settings(path: str | Path | None, section: str | None) -> SelfXitSettings:
    """The ``selfxit`` section of the YAML file updated by ``section`` (a dataset or game name, if present)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    values = merged_section(read_yaml(path), "selfxit", section)
    return build_dataclass(SelfXitSettings, values, str(path)).validate()
