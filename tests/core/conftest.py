"""Fixtures for the core tests."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
import torch

from tests.core.builders import load_bench_script


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each core test with one intra-op thread (restored afterwards).

    On a busy 2-core machine, tiny ops with 2 OpenMP threads wait on descheduled workers and run ~50x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bench_script() -> ModuleType:
    """The bench_latency script as a module."""
    return load_bench_script()
