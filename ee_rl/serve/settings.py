"""Server and load-test settings: dataclass defaults, ``configs/serve.yaml``, command-line overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

from ee_rl.config import CONFIG_DIR, build_dataclass, merged_section, read_yaml, require_positive_ints
from ee_rl.errors import UserError

DEFAULT_CONFIG = CONFIG_DIR / "serve.yaml"
#: Longest accepted ``max_wait_ms``: a minute is already far past any useful batching wait, and a bound keeps the
#: batcher's queue timeout finite (``inf`` or ``1e13`` ms made ``queue.get`` raise in the batcher thread).
MAX_WAIT_MS_LIMIT = 60_000.0


@dataclasses.dataclass
class ServeSettings:
    """How the server batches and what it accepts.

    Attributes:
        host, port: where to listen (loopback by default).
        max_batch: most items per model call (dynamic batches across clients).
        max_wait_ms: longest a batch waits for more clients after its oldest item arrived (0..60000).
        max_items: most items in one client batch (HTTP request or WebSocket message).
        max_body_bytes: largest request body / WebSocket message accepted, in bytes.
        max_inflight_batches: batches one WebSocket connection may have in flight (more are read once one ends).
        threads: torch intra-op threads (0 = torch's default).
        threshold: default max-probability threshold (``--threshold``/``--tolerance`` override it).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_items: int = 1024
    max_body_bytes: int = 32 * 1024 * 1024
    max_inflight_batches: int = 8
    threads: int = 1
    threshold: float = 0.9

    def validate(self) -> ServeSettings:
        """Check every value; a bad one is a :class:`UserError` naming it."""
        require_positive_ints(self, ("max_batch", "max_items", "max_body_bytes", "max_inflight_batches"))
        if not 0 <= self.port <= 65535:
            raise UserError(f"port must be in 0..65535, got {self.port}")
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT_MS_LIMIT:
            raise UserError(f"max_wait_ms must be a number of milliseconds in 0..{MAX_WAIT_MS_LIMIT:.0f}, got {wait!r}")
        if self.threads < 0:
            raise UserError(f"threads must be >= 0 (0 = torch default), got {self.threads}")
        if not self.threshold >= 0:
            raise UserError(f"threshold must be >= 0, got {self.threshold}")
        return self


@dataclasses.dataclass
class LoadTestSettings:
    """Defaults of ``scripts/load_test.py``.

    Attributes:
        clients: concurrent WebSocket clients.
        batches: batches each client sends (one after the other).
        batch_size: items per batch.
        inputs: distinct real inputs drawn for the test (items are picked from them).
        timeout_s: the whole test's time limit.
        connect_timeout_s: time limit of one client's connection.
        seed: input and item-choice seed.
    """

    clients: int = 200
    batches: int = 5
    batch_size: int = 4
    inputs: int = 512
    timeout_s: float = 300.0
    connect_timeout_s: float = 60.0
    seed: int = 0

    def validate(self) -> LoadTestSettings:
        """Check every value; a bad one is a :class:`UserError` naming it."""
        require_positive_ints(self, ("clients", "batches", "batch_size", "inputs"))
        for name in ("timeout_s", "connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        return self


SettingsT = TypeVar("SettingsT", ServeSettings, LoadTestSettings)


def _load_section(cls: type[SettingsT], section: str, path: str | Path | None) -> SettingsT:
    """Section ``section`` of ``path`` (default ``configs/serve.yaml``) as a checked ``cls``; the dataclass
    defaults when no path is given and the default file is absent."""
    if path is None and not DEFAULT_CONFIG.is_file():
        return cls().validate()
    source = Path(path) if path is not None else DEFAULT_CONFIG
    values = merged_section(read_yaml(source), section, None)
    return build_dataclass(cls, values, f"{source} [{section}]").validate()


def load_serve_settings(path: str | Path | None = None) -> ServeSettings:
    """The ``serve`` section of ``path`` (default ``configs/serve.yaml``; dataclass defaults if that is absent)."""
    return _load_section(ServeSettings, "serve", path)


def load_load_test_settings(path: str | Path | None = None) -> LoadTestSettings:
    """The ``load_test`` section of ``path`` (default ``configs/serve.yaml``; dataclass defaults if that is absent)."""
    return _load_section(LoadTestSettings, "load_test", path)


def override(settings: object, **values: object) -> None:
    """Set the given fields that are not None (command-line flags over the config file)."""
    for name, value in values.items():
        if value is not None:
            setattr(settings, name, value)
