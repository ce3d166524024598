"""Server settings: every value is checked with a one-line error, from the dataclass and from a YAML file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ee_rl.errors import UserError
from ee_rl.serve.settings import ServeSettings, load_serve_settings


def test_defaults_and_the_shipped_config_are_valid() -> None:
    assert ServeSettings().validate().max_wait_ms == 5.0
    assert load_serve_settings().max_wait_ms >= 0


@pytest.mark.parametrize("ms", [math.inf, 1e13, -1.0, math.nan, 60_001.0])
def test_max_wait_ms_must_be_finite_and_bounded(ms: float) -> None:
    # inf passed once and killed the batcher thread (queue.get(timeout=inf) raises OverflowError).
    with pytest.raises(UserError, match=r"max_wait_ms must be a number of milliseconds in 0\.\.60000") as info:
        ServeSettings(max_wait_ms=ms).validate()
    assert "\n" not in str(info.value)
    assert ServeSettings(max_wait_ms=60_000).validate().max_wait_ms == 60_000


def test_max_wait_ms_inf_in_a_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("serve:\n  max_wait_ms: .inf\n")
    with pytest.raises(UserError, match="max_wait_ms"):
        load_serve_settings(path)
