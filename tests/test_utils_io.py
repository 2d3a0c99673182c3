from __future__ import annotations

import os

import pytest

from unicxr.utils.io import atomic_write, atomic_write_text


def test_atomic_write_replaces_and_keeps_mode(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "sub" / "f.txt"
        atomic_write_text(p, "one")
        atomic_write_text(p, "two")
        assert p.read_text() == "two"
        assert (p.stat().st_mode & 0o777) == 0o644
        assert [x.name for x in p.parent.iterdir()] == ["f.txt"]
    finally:
        os.umask(old)


def test_atomic_write_failure_leaves_original(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"original")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as fh:
            fh.write(b"half")
            raise RuntimeError("crash mid-write")
    assert p.read_bytes() == b"original"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]
