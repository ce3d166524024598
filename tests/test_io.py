"""ee_rl.io: the atomic-path context manager and the writers built on it."""

from __future__ import annotations

import stat

import pytest

from ee_rl.io import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_path_replaces_the_file_only_when_the_block_succeeds(tmp_path) -> None:
    final = tmp_path / "sub" / "out.mp4"
    with atomic_path(final, suffix=".mp4") as tmp:
        assert tmp.parent == final.parent and tmp.name.endswith(".mp4") and tmp.exists()
        assert not final.exists()  # nothing at the final name until the block ends
        tmp.write_text("new")
    assert final.read_text() == "new" and stat.S_IMODE(final.stat().st_mode) == 0o644
    with pytest.raises(RuntimeError, match="half"):
        with atomic_path(final) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("half")
    assert final.read_text() == "new"
    assert [p.name for p in final.parent.iterdir()] == ["out.mp4"]  # the temp file is gone


def test_writers_leave_only_the_final_file(tmp_path) -> None:
    atomic_write_text(tmp_path / "a.txt", "é\n")
    atomic_write_json(tmp_path / "b.json", {"x": 1})
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
    assert (tmp_path / "b.json").read_text() == '{\n  "x": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_a_run_directory_has_one_live_process(tmp_path) -> None:
    import subprocess
    import sys

    from ee_rl.errors import UserError
    from ee_rl.io import LOCK_FILE, RunDirLock

    run = tmp_path / "run"
    with RunDirLock(run):
        assert (run / LOCK_FILE).read_text() == str(__import__("os").getpid())
        # Another process on the same directory is refused, naming this one.
        code = f"from ee_rl.io import RunDirLock; RunDirLock({str(run)!r})"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert other.returncode != 0 and f"in use by another process (pid {__import__('os').getpid()})" in other.stderr
    # Released: the next run takes it. A holder killed with -9 releases it too (the kernel drops the flock).
    holder = subprocess.Popen([sys.executable, "-c", f"from ee_rl.io import RunDirLock; l = RunDirLock({str(run)!r}); "
                               "print('held', flush=True); import time; time.sleep(60)"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        with pytest.raises(UserError, match="in use by another process"):
            RunDirLock(run)
    finally:
        holder.kill()
        holder.wait()
    RunDirLock(run).release()
