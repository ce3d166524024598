"""Fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each test with one intra-op thread (restored afterwards).

    On a busy 2-core machine, tiny ops with 2 OpenMP threads wait on descheduled workers and run ~50x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
