"""Fixtures for the core tests."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.core.builders import load_bench_script


@pytest.fixture(scope="session")
def bench_script() -> ModuleType:
    """The bench_latency script as a module."""
    return load_bench_script()
