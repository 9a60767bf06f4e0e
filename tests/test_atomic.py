"""Atomic writes: whole files or nothing, with a new file's usual permissions."""

import os
import stat

import pytest

from impure._util.atomic import atomic_path, atomic_write


def test_atomic_write_replaces_and_uses_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"saved by the user")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"saved by the user"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
