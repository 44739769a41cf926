"""`CheckedStdout`: a command's stdout ends only once the command exited 0, so a
storage put that commits at EOF never stores the output of a command that failed
midway (issue 18 review: a tar that died, compressed here with zstd, was stored as
a whole, valid frame). Real commands (LocalTransport: bash), real local storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from vkbackup.errors import RemoteCommandError
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.base import CheckedStdout
from vkbackup.transport.local import LocalTransport
from vkbackup.zstd_compress import ZstdCompressingReader


def start(script: str) -> CheckedStdout:
    return CheckedStdout(LocalTransport("box").start(["bash", "-c", script]))


def test_a_command_that_exits_0_ends_with_its_status() -> None:
    out = start("printf abc")
    assert out.read(10) == b"abc"
    assert out.status is None
    assert out.read(10) == b""
    assert out.status == 0
    assert out.read(10) == b""  # EOF stays EOF, no second wait


def test_a_command_that_fails_after_its_output_raises_instead_of_eof() -> None:
    out = start("printf abc; echo 'tar: broken' >&2; exit 3")
    assert out.read(10) == b"abc"
    with pytest.raises(RemoteCommandError) as e:
        out.read(10)
    assert "tar: broken" in str(e.value)


@pytest.mark.parametrize("compress", [False, True], ids=["as-is", "zstd-here"])
def test_a_put_of_a_failed_command_stores_nothing(tmp_path: Path, compress: bool) -> None:
    storage = LocalStorage(tmp_path / "store")
    src = start("head -c 3000000 /dev/urandom; exit 2")
    reader = ZstdCompressingReader(src) if compress else src
    with pytest.raises(RemoteCommandError):
        storage.put("data/box/x/volume-0.tar.zst.age", reader)
    assert storage.head("data/box/x/volume-0.tar.zst.age") is None
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []
