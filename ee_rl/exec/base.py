"""The executor interface: run pure tasks somewhere and hand their results back to the driver, as they finish.

A *task* is a module-level function (picklable by name) of picklable arguments, which returns a value and writes no
file the driver relies on: the driver writes every result file. An argument may be the handle of a task submitted
earlier to the same executor (or a value from :meth:`Executor.put`): the task then receives that task's result, and
runs only once it exists (on Ray, a task dependency). Tasks are pure, or resume from their own checkpoint, so a task
whose worker died can simply be run again.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: How many times a task whose worker died is run again (Ray only: the local executors fail fast instead).
DEFAULT_RETRIES = 3


class Executor(abc.ABC):
    """Runs tasks; the same driver code runs them one after another, in local processes or on a Ray cluster.

    Use as a context manager (or call :meth:`close`): whatever the executor started (processes, a local Ray) is
    stopped at the end.
    """

    #: The name ``--executor`` gives it.
    name: str = ""

    def put(self, value: Any) -> Any:
        """A large value shared by many tasks (an agent's bytes), stored once: pass the result as a task argument."""
        return value

    @abc.abstractmethod
    def submit(
        self, fn: Callable[..., Any], *args: Any, cpus: float = 1, retries: int = DEFAULT_RETRIES, name: str = ""
    ) -> Any:
        """Schedule ``fn(*args)``; return its handle at once (pass it to :meth:`as_completed` or to other tasks).

        ``cpus`` is what the task keeps busy (its torch and emulator threads); ``name`` labels it in Ray's tools.
        """

    @abc.abstractmethod
    def as_completed(self, handles: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(handle, result)`` for every handle as its task finishes; a failed task raises its exception."""

    def result(self, handle: Any) -> Any:
        """The result of one task (waits for it)."""
        for _, value in self.as_completed([handle]):
            return value
        raise AssertionError("as_completed yielded nothing")  # pragma: no cover

    def close(self) -> None:
        """Stop what the executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalTask:
    """The handle of a task of a local executor: the call, and its outcome once it has run."""

    __slots__ = ("fn", "args", "cpus", "name", "done", "value", "error")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], cpus: float, name: str) -> None:
        self.fn, self.args, self.cpus, self.name = fn, args, cpus, name
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def dependencies(self) -> list[LocalTask]:
        """The tasks whose results are arguments of this one."""
        return [a for a in self.args if isinstance(a, LocalTask)]

    def resolved_args(self) -> tuple[Any, ...]:
        """The arguments with every dependency replaced by its result (all of them must be done)."""
        return tuple(a.outcome() if isinstance(a, LocalTask) else a for a in self.args)

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        """Record the task's outcome."""
        self.done, self.value, self.error = True, value, error

    def outcome(self) -> Any:
        """The result, or the task's exception raised again."""
        if self.error is not None:
            raise self.error
        return self.value

    def failed_dependency(self) -> BaseException | None:
        """The exception of the first dependency that failed, if any."""
        return next((d.error for d in self.dependencies() if d.done and d.error is not None), None)
