"""The serial executor: every task in this process, one at a time, in the order the driver asks for results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ee_rl.exec.base import DEFAULT_RETRIES, Executor, LocalTask


class SerialExecutor(Executor):
    """Runs each task when its result is first needed (its dependencies first), in this process.

    No parallelism and no retries: the reference the other executors must reproduce, and the one to debug with.
    """

    name = "serial"

    def submit(
        self, fn: Callable[..., Any], *args: Any, cpus: float = 1, retries: int = DEFAULT_RETRIES, name: str = ""
    ) -> LocalTask:
        return LocalTask(fn, args, cpus, name)

    def as_completed(self, handles: Iterable[LocalTask]) -> Iterator[tuple[LocalTask, Any]]:
        for task in handles:
            self._run(task)
            yield task, task.outcome()

    def _run(self, task: LocalTask) -> None:
        if task.done:
            return
        for dependency in task.dependencies():
            self._run(dependency)
        failed = task.failed_dependency()
        if failed is not None:
            task.finish(error=failed)
            return
        try:
            task.finish(task.fn(*task.resolved_args()))
        except Exception as error:  # the driver gets it when it asks for this task's result
            task.finish(error=error)
