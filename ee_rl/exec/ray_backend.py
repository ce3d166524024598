"""The Ray executor: tasks on a Ray cluster (``ray[default]``), or on a Ray started on this machine.

Ray is imported only here, and only when this executor is made, so that ``import ee_rl`` and every ``--help`` work
without it. Task dependencies are Ray's: a task's handle passed to another task is an ``ObjectRef`` that Ray resolves
on the worker, wherever the first task ran, so workers need no shared filesystem. A task whose worker dies is run
again (``retries``); a task that raises is not (the same inputs would raise again).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ee_rl.errors import UserError
from ee_rl.exec.base import DEFAULT_RETRIES, Executor

#: What ``--executor ray`` needs installed.
RAY_EXTRA = "pip install 'ee_rl[ray]'"
#: ``--ray-address``: ``auto`` (the cluster this machine belongs to), ``ray://HOST:PORT`` (Ray Client) or
#: ``HOST:PORT`` (a head node's GCS address, as ``ray start --head`` prints it).
_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]*[A-Za-z0-9_.\-\]]:(\d{1,5}))$")


def check_ray_address(address: str) -> str:
    """``address`` if it is one ``--ray-address`` accepts, else a one-line :class:`UserError`."""
    match = _ADDRESS.match(address)
    if match is None or (match.group(3) is not None and not 0 < int(match.group(3)) < 65536):
        raise UserError(f"--ray-address must be 'auto', HOST:PORT or ray://HOST:PORT (e.g. ray://head:10001), "
                        f"got {address!r}")
    return address


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A one-line :class:`UserError` when nothing answers at ``address``'s host and port (Ray itself would retry
    for minutes); ``auto`` is left to Ray, which says at once when this machine has joined no cluster."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise UserError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


def require_ray() -> Any:
    """The ``ray`` module; a one-line :class:`UserError` naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def run_task(fn: Callable[..., Any], *args: Any) -> Any:
    """What a Ray worker runs: ``fn(*args)`` (any callable importable by name, builtins included; the arguments
    that were task handles arrive as their results)."""
    return fn(*args)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class RayExecutor(Executor):
    """Runs tasks as Ray tasks; ``put`` stores a value once in Ray's object store.

    ``address`` None starts a Ray on this machine (stopped by :meth:`close`); ``auto`` or ``ray://HOST:PORT`` joins
    a running cluster. When Ray is already initialised in this process (a test's cluster, a notebook), that session
    is used and left running. ``num_cpus`` and ``object_store_memory`` size a Ray started here.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, *, num_cpus: int | None = None, object_store_memory: int | None = None
    ) -> None:
        ray = require_ray()
        self._ray = ray
        self._owned = not ray.is_initialized()
        self._task: Any = None
        if not self._owned:
            return
        options: dict[str, Any] = {"include_dashboard": False}
        if address is None:
            options.update(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory)
        else:
            options["address"] = check_ray_address(address)
            check_reachable(address)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
            where = "start Ray on this machine" if address is None else f"connect to the Ray cluster at {address}"
            raise UserError(f"cannot {where}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
                            ) from None

    def put(self, value: Any) -> Any:
        return self._ray.put(value)

    def submit(
        self, fn: Callable[..., Any], *args: Any, cpus: float = 1, retries: int = DEFAULT_RETRIES, name: str = ""
    ) -> Any:
        if self._task is None:
            self._task = self._ray.remote(run_task)
        options: dict[str, Any] = {"num_cpus": cpus, "max_retries": retries, "name": name or _name(fn)}
        return self._task.options(**options).remote(fn, *args)

    def as_completed(self, handles: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        pending = list(handles)
        while pending:
            ready, pending = self._ray.wait(pending, num_returns=1)
            for ref in ready:
                yield ref, self._get(ref)

    def _get(self, ref: Any) -> Any:
        from ray.exceptions import RayTaskError

        try:
            return self._ray.get(ref)
        except RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None  # one line, as in this process
            raise

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False
