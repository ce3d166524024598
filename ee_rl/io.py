"""Atomic file writes and output-directory checks: a crash never leaves a half-written file in place."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ee_rl.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside ``path`` to write to; on a clean exit it is fsynced and renamed over ``path``.

    ``with atomic_path(final) as tmp: <write tmp>``: readers of ``final`` see the old file or the whole new one,
    never a half-written one. If the block raises (or is interrupted), the temp file is removed and ``path`` is
    left as it was. The temp file exists (empty) when the block starts and ends up with mode 0644. ``suffix`` ends
    the temp name, for writers that pick a format by extension (e.g. ffmpeg).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # fsync before the rename: after a power loss the name must not point at data still in the page cache.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`: temp file in the same directory, fsync, rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG to ``path`` atomically (rendered in memory first, then renamed into place)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_dir_writable(path: str | Path) -> Path:
    """Check that ``path`` is, or could be created as, a writable directory, without creating anything."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "exists and is not a directory" if probe == path else f"cannot be created: {probe} is not a directory"
        raise UserError(f"output path {path} {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output directory {path} is not writable ({probe} does not allow writing)")
    return path


def check_file_writable(path: str | Path) -> Path:
    """Check, before any work and without creating anything, that a file could be written at ``path`` (not an
    existing directory; its folder is, or could be created as, a writable directory)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output file {path} is an existing directory; give a file name")
    check_dir_writable(path.parent)
    return path


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is a writable directory; otherwise a :class:`UserError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise UserError(f"output path {path} exists and is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"output directory {path} is not writable: {exc.strerror or exc}") from None
    return path


def writable_dir_or_temporary(path: str | Path) -> Path:
    """``path`` if this process can create and write it, else a fresh temporary folder.

    For a task that trains in the checkpoint location its driver names: on a machine that cannot write there (a
    cluster node without the driver's storage) the run still works, only a retry cannot resume it.
    """
    try:
        return ensure_writable_dir(path)
    except UserError:
        return Path(tempfile.mkdtemp(prefix="ee_rl-run-"))


#: The lock file a live run holds in its directory (see :class:`RunDirLock`).
LOCK_FILE = ".lock"


class RunDirLock:
    """An exclusive lock on a run directory, held by this process until :meth:`release` or until it exits.

    It is an OS lock (``flock``) on ``<dir>/.lock``: the kernel drops it when the process dies, however it dies
    (``kill -9`` included), so a lock left by a dead run is never mistaken for a live one. The file holds the
    holder's PID, for the message another process gets.
    """

    def __init__(self, path: str | Path) -> None:
        import fcntl

        self.path = ensure_writable_dir(path)
        self._handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            raise UserError(
                f"{self.path} is in use by another process (pid {holder}); wait for it to finish, or use another --out"
            ) from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(str(os.getpid()))
        self._handle.flush()

    def release(self) -> None:
        """Give the lock up (closing the file releases the flock)."""
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
