"""One executor interface for every many-task job (sweep settings, exit and expert training runs, vision seeds):
``serial`` (this process), ``process`` (spawned local processes) or ``ray`` (a Ray cluster, or a local Ray).

Modules, by job: :mod:`~ee_rl.exec.base` (the interface), :mod:`~ee_rl.exec.serial`, :mod:`~ee_rl.exec.process`
and :mod:`~ee_rl.exec.ray_backend` (the three implementations). Ray is imported only by the last, when a Ray executor
is made.
"""

from __future__ import annotations

import importlib.util

from ee_rl.errors import UserError
from ee_rl.exec.base import DEFAULT_RETRIES, Executor
from ee_rl.exec.process import ProcessExecutor, WorkerDied
from ee_rl.exec.ray_backend import RAY_EXTRA, RayExecutor, check_ray_address
from ee_rl.exec.serial import SerialExecutor

#: The names ``--executor`` accepts.
EXECUTORS = ("serial", "process", "ray")


def check_executor(name: str, ray_address: str | None = None) -> None:
    """Check an executor choice before any work: a known name, a Ray address only for Ray, Ray installed for Ray.

    Bad input is a one-line :class:`UserError`.
    """
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; accepted: {', '.join(EXECUTORS)}")
    if ray_address is not None:
        if name != "ray":
            raise UserError("--ray-address needs --executor ray")
        check_ray_address(ray_address)
    if name == "ray" and importlib.util.find_spec("ray") is None:
        raise UserError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}")


def make_executor(name: str, *, cpus: int = 1, ray_address: str | None = None) -> Executor:
    """The executor called ``name``: ``process`` with ``cpus`` CPUs for its tasks, ``ray`` joining ``ray_address``
    (None: start a Ray on this machine)."""
    check_executor(name, ray_address)
    if name == "serial":
        return SerialExecutor()
    if name == "process":
        return ProcessExecutor(cpus)
    return RayExecutor(ray_address)


__all__ = [
    "DEFAULT_RETRIES",
    "EXECUTORS",
    "Executor",
    "ProcessExecutor",
    "RayExecutor",
    "SerialExecutor",
    "WorkerDied",
    "check_executor",
    "check_ray_address",
    "make_executor",
]
