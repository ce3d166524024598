"""What a sweep sweeps and how it plays (``configs/sweep.yaml``), how one setting's games are played
(:class:`PlaySettings`, all a worker needs besides the agent), and the thresholds and labels of the settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ee_rl.config import CONFIG_DIR, build_dataclass, merged_section, read_yaml, require_positive_ints
from ee_rl.core import FULL, is_patience_method
from ee_rl.core.runtime import check_runtime
from ee_rl.errors import UserError
from ee_rl.rl.games import display_name, rom_id
from ee_rl.rl.envs import MAX_EPISODE_FRAMES
from ee_rl.rl.policy import AGENT_METHODS, is_agent_method

DEFAULT_CONFIG = CONFIG_DIR / "sweep.yaml"


@dataclasses.dataclass(frozen=True)
class PlaySettings:
    """How the games of one setting are played: every value a worker needs besides the agent and the rule.

    Attributes:
        episodes: full games.
        n_envs: parallel envs (at most ``episodes`` are used).
        seed: env ``i`` plays seed ``seed + i``.
        sticky_prob: agent-level sticky action probability.
        max_episode_frames: emulator frames after which a game is cut (ALE's 108,000; tests play short games).
        torch_threads: torch intra-op threads while playing.
        ale_threads: native threads stepping the emulators.
        runtime: what answers the decisions: ``torch`` or ``onnx`` (ONNX Runtime segments, ``torch_threads`` threads).
    """

    episodes: int
    n_envs: int
    seed: int
    sticky_prob: float = 0.1
    max_episode_frames: int = MAX_EPISODE_FRAMES
    torch_threads: int = 1
    ale_threads: int = 1
    runtime: str = "torch"

    @property
    def cpus(self) -> int:
        """CPUs a setting keeps busy: the network and the emulators take turns (an agent step waits for both), so the
        larger of the two thread counts."""
        return max(self.torch_threads, self.ale_threads)


@dataclasses.dataclass
class SweepSettings:
    """What to sweep and how to play (``configs/sweep.yaml``).

    Attributes:
        methods: agents to sweep (``ztw``, ``sdn``, ``pbee``).
        thresholds: confidence thresholds for ztw/sdn, each in [0, 1]; the full policy is always added.
        patience: patience values for pbee; empty = ``1 .. M``.
        episodes: full games per setting.
        n_envs: parallel envs (at most ``episodes`` are used).
        sticky_prob: agent-level sticky action probability (paper: 0.1).
        seed: env seed; env ``i`` plays seed ``seed + i``, the same for every setting.
        max_episode_frames: emulator frames after which a game is cut (ALE's 108,000 = 30 minutes of play).
        torch_threads: torch intra-op threads while playing (the µs per decision depend on it).
        ale_threads: native threads stepping a setting's emulators.
        runtime: what answers the decisions: ``torch`` or ``onnx`` (returns, costs and exit rates are the same;
            the µs per decision are not).
        workers: settings played at once by the process executor (returns, costs and exit rates do not depend on
            it; the µs per decision do, as the workers share the machine: use 1 for clean timings).
    """

    methods: list[str] = dataclasses.field(default_factory=lambda: ["ztw", "sdn", "pbee"])
    thresholds: list[float] = dataclasses.field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])
    patience: list[int] = dataclasses.field(default_factory=list)
    episodes: int = 10
    n_envs: int = 8
    sticky_prob: float = 0.1
    seed: int = 10_000
    max_episode_frames: int = MAX_EPISODE_FRAMES
    torch_threads: int = 1
    ale_threads: int = 1
    runtime: str = "torch"
    workers: int = 1

    def validate(self) -> SweepSettings:
        """Check every field; a bad value is a one-line :class:`UserError`. Returns ``self``."""
        if not isinstance(self.methods, list) or not self.methods:
            raise UserError(f"methods must be a non-empty list of {', '.join(AGENT_METHODS)}, got {self.methods!r}")
        for method in self.methods:
            if not isinstance(method, str) or not is_agent_method(method):
                raise UserError(f"unknown method {method!r}; accepted: {', '.join(AGENT_METHODS)} or a ZTW ablation "
                                "(ztw-cascade-only, ztw-ensemble-only, ztw-additive, ztw-no-stop-gradient)")
        if len(set(self.methods)) != len(self.methods):
            raise UserError(f"methods must not repeat, got {self.methods}")
        if not isinstance(self.thresholds, list) or not self.thresholds:
            raise UserError(f"thresholds must be a non-empty list of numbers in [0, 1], got {self.thresholds!r}")
        for t in self.thresholds:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
                raise UserError(f"thresholds must be numbers in [0, 1] (the full policy is added), got {t!r}")
        if not isinstance(self.patience, list):
            raise UserError(f"patience must be a list of non-negative integers (empty = 1..M), got {self.patience!r}")
        for p in self.patience:
            if isinstance(p, bool) or not isinstance(p, int) or p < 0:
                raise UserError(f"patience values must be non-negative integers, got {p!r}")
        require_positive_ints(self, ("episodes", "n_envs", "max_episode_frames", "torch_threads", "ale_threads",
                                     "workers"))
        check_runtime(self.runtime)  # known, and installed here
        if not 0.0 <= self.sticky_prob < 1.0:
            raise UserError(f"sticky_prob must be in [0, 1), got {self.sticky_prob}")
        return self

    def play(self) -> PlaySettings:
        """How each setting's games are played."""
        return PlaySettings(
            episodes=self.episodes, n_envs=self.n_envs, seed=self.seed, sticky_prob=self.sticky_prob,
            max_episode_frames=self.max_episode_frames, torch_threads=self.torch_threads,
            ale_threads=self.ale_threads, runtime=self.runtime,
        )


def load_sweep_settings(path: str | Path | None, game: str, preset: str | None = None) -> SweepSettings:
    """The ``sweep`` section of a YAML config, updated by the section named after ``game`` then by ``preset``."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = read_yaml(path)
    values = merged_section(data, "sweep", display_name(rom_id(game)))
    if preset is not None:
        if preset not in data:
            presets = [k for k in data if k != "sweep" and not k[:1].isupper()]
            raise UserError(f"config {path} has no preset '{preset}' (presets: {', '.join(presets) or 'none'})")
        values.update(data[preset] or {})
    return build_dataclass(SweepSettings, values, str(path)).validate()


def rule_label(method: str, threshold: float) -> str:
    """Human-readable rule of a setting: ``full``, ``patience=2`` or ``max_prob>0.8``."""
    if threshold == FULL:
        return "full"
    if is_patience_method(method):
        return f"patience={int(threshold)}"
    return f"max_prob>{threshold:g}"


def setting_thresholds(method: str, settings: SweepSettings, num_ics: int) -> list[float]:
    """Thresholds swept for ``method`` (ascending), the full policy last."""
    if is_patience_method(method):
        values = [float(p) for p in (settings.patience or range(1, num_ics + 1))]
    else:
        values = [float(t) for t in settings.thresholds]
    return sorted(set(values)) + [FULL]
