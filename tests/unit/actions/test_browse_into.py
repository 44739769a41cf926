"""`restore --into` through the LocalTransport into temp dirs: the script on the
target takes a new or an empty DIR only (a symlink, or a DIR holding anything,
could send `tar -x` elsewhere or overwrite what is there), a failure midway says
DIR may hold a partial copy, and the byte count counts hard-linked content once.
The tree and its content come from real GNU tar levels (no storage: the level
opener is stood in for)."""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.unit.restore.test_tartree import gnu_tar, opener, tree_of
from vkbackup.actions import browse
from vkbackup.actions.browse import IntoResult, SourceView, restore_into
from vkbackup.errors import IntegrityError, RestoreError
from vkbackup.manifest import Manifest
from vkbackup.restore.tartree import Tree
from vkbackup.storage.base import Storage
from vkbackup.transport.local import LocalTransport

CONTENT = b"0123456789" * 1000


@pytest.fixture
def chain(tmp_path: Path) -> tuple[list[Path], Tree]:
    """Two levels of a volume: a/f (and its hard link a/h), a/s -> f, b/x changed at 1."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "f").write_bytes(CONTENT)
    os.link(src / "a" / "f", src / "a" / "h")
    (src / "a" / "s").symlink_to("f")
    (src / "b" / "x").write_bytes(b"x0\n")
    snar = tmp_path / "state.snar"
    levels = [tmp_path / "level0.tar", tmp_path / "level1.tar"]
    gnu_tar(src, snar, levels[0])
    time.sleep(1.1)
    (src / "b" / "x").write_bytes(b"x1, changed\n")
    gnu_tar(src, snar, levels[1])
    return levels, tree_of(levels)


def view() -> SourceView:
    manifest = cast("Manifest", SimpleNamespace(id="20240501T030000Z-1a2b", host="prod"))
    return SourceView(manifest, "data", "docker-volume", None, [])


def into(
    monkeypatch: pytest.MonkeyPatch, levels: list[Path], tree: Tree, paths: list[str], d: Path
) -> IntoResult:
    monkeypatch.setattr(browse, "_opener", lambda *_: opener(levels))
    storage = cast("Storage", None)
    return restore_into(storage, view(), [], tree, paths, str(d), LocalTransport("target"))


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_a_new_dir_is_made_and_filled(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels, tree = chain
    d = tmp_path / "new" / "deeper" / "into"
    res = into(monkeypatch, levels, tree, ["a", "b"], d)
    assert listing(d) == ["a", "a/f", "a/h", "a/s", "b", "b/x"]
    assert (d / "a" / "h").read_bytes() == CONTENT and (d / "b" / "x").read_bytes() == (
        b"x1, changed\n"
    )
    assert (d / "a" / "f").stat().st_ino == (d / "a" / "h").stat().st_ino
    assert os.readlink(d / "a" / "s") == "f"
    assert d.stat().st_mode & 0o777 == 0o700
    # a/f and a/h are one content: counted once
    assert res.entries == 6 and res.bytes == len(CONTENT) + len(b"x1, changed\n")


def test_an_empty_dir_is_taken(chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    levels, tree = chain
    d = tmp_path / "empty"
    d.mkdir()
    into(monkeypatch, levels, tree, ["b"], d)
    assert listing(d) == ["b", "b/x"]


def test_a_dir_that_is_not_empty_is_refused_and_untouched(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels, tree = chain
    d = tmp_path / "busy"
    d.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (d / "a").symlink_to(outside)  # tar -x would write a/f through it
    (d / "keep.txt").write_bytes(b"mine\n")
    with pytest.raises(RestoreError) as e:
        into(monkeypatch, levels, tree, ["a"], d)
    assert str(d) in str(e.value) and "not empty" in str(e.value)
    assert listing(d) == ["a", "keep.txt"] and (d / "keep.txt").read_bytes() == b"mine\n"
    assert listing(outside) == []


def test_a_dir_that_is_a_symlink_or_no_directory_is_refused(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels, tree = chain
    real = tmp_path / "real"
    real.mkdir()
    d = tmp_path / "link"
    d.symlink_to(real)
    with pytest.raises(RestoreError) as e:
        into(monkeypatch, levels, tree, ["b"], d)
    assert str(d) in str(e.value) and "symlink" in str(e.value)
    assert listing(real) == []
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(RestoreError) as e:
        into(monkeypatch, levels, tree, ["b"], f)
    assert "not a directory" in str(e.value)
    with pytest.raises(RestoreError) as e:  # its parent cannot be made: a file is there
        into(monkeypatch, levels, tree, ["b"], f / "sub")
    assert "cannot make its parent" in str(e.value) and f.read_bytes() == b""


def test_a_failure_midway_says_dir_may_hold_a_partial_copy(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels, tree = chain
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    d = tmp_path / "partial"
    # level 0's content goes out, then level 1 is not what the tree was built from
    with pytest.raises(IntegrityError) as e:
        into(monkeypatch, [levels[0], empty], tree, ["a", "b"], d)
    assert f"{d} on target may now hold a partial copy: delete it" in str(e.value)
