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
