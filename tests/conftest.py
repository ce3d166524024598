"""Fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


def _one_torch_thread() -> Iterator[None]:
    # On a busy 2-core machine, tiny ops with 2 OpenMP threads wait on descheduled workers and run ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def single_thread_session() -> Iterator[None]:
    """One intra-op thread from the start of the session (restored at its end).

    Module- and session-scoped fixtures (shared models, rollouts, the servers the serve tests start) are set up
    before any function-scoped fixture, so they need this one.
    """
    yield from _one_torch_thread()


@pytest.fixture(autouse=True, scope="session")
def user_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user's cache (where ONNX graphs of models without a folder of their own are exported) in a temporary
    folder, so the tests write nothing into the home directory. Subprocesses inherit it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each test with one intra-op thread (restored afterwards), whatever the previous test left."""
    yield from _one_torch_thread()


#: The tests' Ray: two CPUs and a small object store (this machine runs other work too); no dashboard.
RAY_TEST_OPTIONS = {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 200 * 2**20}


@pytest.fixture()
def local_ray():
    """A Ray started on this machine for the tests that need one (kept for the next such test, stopped at the end
    of the session); skipped where Ray is not installed (``pip install -e '.[test,ray]'`` installs it)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", **RAY_TEST_OPTIONS)
    yield ray


@pytest.fixture(autouse=True, scope="session")
def stop_ray_at_the_end() -> Iterator[None]:
    """Stop a Ray the tests started, whichever test started it."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(params=["serial", "process", "ray"])
def executor(request):
    """Each executor in turn, sized for a 2-core machine (Ray: the tests' small local Ray)."""
    from ee_rl.exec import make_executor

    if request.param == "ray":
        request.getfixturevalue("local_ray")
    with make_executor(request.param, cpus=2) as made:
        yield made
