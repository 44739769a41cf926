"""LocalStorage on a real full disk: a 2 MiB tmpfs mount (we run as root here),
and, where mounting is not allowed, RLIMIT_FSIZE in a child process. Either
way the write fails with a StorageError naming the path, and nothing partial
is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realparts import require
from vkbackup.errors import StorageError
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader

MIB = 1024 * 1024


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        require(f"cannot mount a tmpfs here ({r.stderr.strip()}); see the RLIMIT_FSIZE test")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_full_disk_leaves_nothing_partial(tiny_fs: Path) -> None:
    store = LocalStorage(tiny_fs / "repo")
    keep = os.urandom(MIB // 2)
    store.put("data/keep.age", BytesReader(keep))
    with pytest.raises(StorageError) as info:
        store.put("data/too-big.age", BytesReader(os.urandom(3 * MIB)))
    assert str(tiny_fs / "repo" / "data/too-big.age") in str(info.value)
    assert "errno 28" in str(info.value)  # ENOSPC
    assert info.value.hint and "full" in info.value.hint
    assert files_under(tiny_fs / "repo") == ["data/keep.age"]
    assert store.list_incomplete_uploads() == []
    # an overwrite that does not fit keeps the old object
    with pytest.raises(StorageError):
        store.put("data/keep.age", BytesReader(os.urandom(3 * MIB)))
    with store.open("data/keep.age") as f:
        assert f.read() == keep
    # the space came back: a write that fits works again
    store.put("data/small.age", BytesReader(b"x" * (MIB // 2)))
    assert files_under(tiny_fs / "repo") == ["data/keep.age", "data/small.age"]


def test_file_size_limit_leaves_nothing_partial(tmp_path: Path) -> None:
    """The same guarantee without mount privileges: EFBIG from RLIMIT_FSIZE."""
    code = textwrap.dedent(
        f"""
        import os, resource, signal, sys
        from vkbackup.errors import StorageError
        from vkbackup.storage.local import LocalStorage
        from vkbackup.streams import BytesReader
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        store = LocalStorage(__import__("pathlib").Path({str(tmp_path / "repo")!r}))
        store.put("ok", BytesReader(b"y" * 1000))
        try:
            store.put("data/big.age", BytesReader(os.urandom(3 << 20)))
        except StorageError as e:
            print("ERR", e, "|", e.hint)
            sys.exit(0)
        sys.exit("no error")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ERR" in r.stdout and "errno 27" in r.stdout  # EFBIG
    assert "data/big.age" in r.stdout
    assert files_under(tmp_path / "repo") == ["ok"]
