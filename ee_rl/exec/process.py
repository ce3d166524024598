"""The process executor: tasks in a pool of fresh local processes, as many at once as their CPU requests fit.

Workers are *spawned* (not forked): a task gets nothing from the driver but its arguments, exactly as on Ray, so a
task that works here works on a cluster. A worker that dies fails the run (no retries: rerun the command, finished
work is kept by the caller).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ee_rl.exec.base import DEFAULT_RETRIES, Executor, LocalTask


class WorkerDied(RuntimeError):
    """A worker process of the process executor died while running a task (killed, or out of memory)."""


class ProcessExecutor(Executor):
    """Runs tasks in up to ``cpus`` spawned processes; a task starts once its dependencies are done and its CPU
    request fits in what the running tasks leave of ``cpus`` (a task asking for more runs alone)."""

    name = "process"

    def __init__(self, cpus: int) -> None:
        if cpus < 1:
            raise ValueError(f"the process executor needs at least one CPU, got {cpus}")
        self.cpus = cpus
        self._pool: ProcessPoolExecutor | None = None
        self._waiting: list[LocalTask] = []
        self._running: dict[Future, tuple[LocalTask, float]] = {}
        self._busy = 0.0

    @property
    def running(self) -> int:
        """Tasks running now."""
        return len(self._running)

    def submit(
        self, fn: Callable[..., Any], *args: Any, cpus: float = 1, retries: int = DEFAULT_RETRIES, name: str = ""
    ) -> LocalTask:
        task = LocalTask(fn, args, cpus, name)
        self._waiting.append(task)
        self._start_ready()
        return task

    def as_completed(self, handles: Iterable[LocalTask]) -> Iterator[tuple[LocalTask, Any]]:
        pending = list(handles)
        while pending:
            finished = [task for task in pending if task.done]
            for task in finished:
                pending.remove(task)
                yield task, task.outcome()
            if pending and not finished:
                self._wait_for_one()

    def close(self) -> None:
        self._shutdown(cancel=False)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On an error (or Ctrl-C) in the driver, stop the workers now rather than wait for their tasks.
        self._shutdown(cancel=exc_type is not None)

    # --- scheduling ---------------------------------------------------------------------------------------------

    def _start_ready(self) -> None:
        for task in list(self._waiting):
            if not all(d.done for d in task.dependencies()):
                continue
            failed = task.failed_dependency()
            if failed is not None:
                self._waiting.remove(task)
                task.finish(error=failed)
                continue
            cpus = min(float(task.cpus), float(self.cpus))
            if self._running and self._busy + cpus > self.cpus:
                continue
            future = self._workers().submit(task.fn, *task.resolved_args())
            self._waiting.remove(task)
            self._running[future] = (task, cpus)
            self._busy += cpus

    def _wait_for_one(self) -> None:
        if not self._running:
            self._start_ready()
        if not self._running:
            raise RuntimeError("no task can start: a dependency was not submitted to this executor")
        done, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
        for future in done:
            task, cpus = self._running.pop(future)
            self._busy -= cpus
            try:
                task.finish(future.result())
            except BrokenProcessPool:
                task.finish(error=WorkerDied(f"a worker process died while running {task.name or task.fn.__name__} "
                                             "(killed, or out of memory); run the command again to continue"))
            except Exception as error:
                task.finish(error=error)
        self._start_ready()

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.cpus, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def _shutdown(self, cancel: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancel:
            # The pool has no public way to stop a running task: end its worker processes (ours, by their ids).
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
