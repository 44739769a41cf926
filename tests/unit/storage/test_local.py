"""LocalStorage: atomic puts, conditional create, listing, cleanup of partial writes."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from vkbackup.config.model import StorageConfig
from vkbackup.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from vkbackup.storage import open_storage
from vkbackup.storage.local import TEMP_MARK, LocalStorage
from vkbackup.streams import BytesReader


class FailingReader:
    """Yields *good* bytes, then raises (a source dying mid-stream)."""

    def __init__(self, good: bytes) -> None:
        self._r = BytesReader(good)

    def read(self, n: int = -1, /) -> bytes:
        data = self._r.read(n)
        if not data:
            raise RuntimeError("source died")
        return data


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "repo")


def test_put_open_roundtrip(store: LocalStorage) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = store.put("data/prod/x.age", BytesReader(data))
    assert info.key == "data/prod/x.age"
    assert info.size == len(data)
    with store.open("data/prod/x.age") as f:
        assert f.read() == data
    head = store.head("data/prod/x.age")
    assert head is not None and head.size == len(data)
    assert all_files(store.root) == ["data/prod/x.age"]


def test_modes_are_private(store: LocalStorage) -> None:
    store.put("a/b/c", BytesReader(b"x"))
    assert stat.S_IMODE((store.root / "a/b/c").stat().st_mode) == 0o600
    assert stat.S_IMODE((store.root / "a/b").stat().st_mode) == 0o700


def test_overwrite_replaces(store: LocalStorage) -> None:
    store.put("k", BytesReader(b"one"))
    store.put("k", BytesReader(b"two!"))
    assert store.open("k").read() == b"two!"


def test_empty_object(store: LocalStorage) -> None:
    info = store.put("empty", BytesReader(b""))
    assert info.size == 0
    assert store.open("empty").read() == b""


def test_if_absent(store: LocalStorage) -> None:
    store.put("locks/prod", BytesReader(b"me"), if_absent=True)
    with pytest.raises(ObjectExistsError, match="locks/prod"):
        store.put("locks/prod", BytesReader(b"you"), if_absent=True)
    assert store.open("locks/prod").read() == b"me"
    assert all_files(store.root) == ["locks/prod"]


def test_if_absent_race_has_exactly_one_winner(store: LocalStorage) -> None:
    winners: list[int] = []
    losers: list[int] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            store.put("locks/race", BytesReader(str(i).encode() * 1000), if_absent=True)
            winners.append(i)
        except ObjectExistsError:
            losers.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert store.open("locks/race").read() == str(winners[0]).encode() * 1000
    assert all_files(store.root) == ["locks/race"]


def test_source_failure_leaves_nothing_and_keeps_old(store: LocalStorage) -> None:
    store.put("k", BytesReader(b"old"))
    with pytest.raises(RuntimeError, match="source died"):
        store.put("k", FailingReader(os.urandom(2_000_000)))
    assert store.open("k").read() == b"old"
    assert all_files(store.root) == ["k"]
    with pytest.raises(RuntimeError):
        store.put("new/obj", FailingReader(b"abc"))
    assert store.head("new/obj") is None
    assert all_files(store.root) == ["k"]


def test_keyboard_interrupt_cleans_up(store: LocalStorage) -> None:
    class Interrupting:
        def read(self, n: int = -1, /) -> bytes:
            raise KeyboardInterrupt

    store.put("x/y", BytesReader(b"1"))
    with pytest.raises(KeyboardInterrupt):
        store.put("x/z", Interrupting())
    assert all_files(store.root) == ["x/y"]


def test_list_by_prefix_skips_temporaries(store: LocalStorage) -> None:
    for key in ("data/a/1", "data/a/2", "data/b/1", "manifests/a", "datab"):
        store.put(key, BytesReader(key.encode()))
    (store.root / "data/a" / f"{TEMP_MARK}3.abc").write_bytes(b"partial")
    assert sorted(o.key for o in store.list("data/")) == ["data/a/1", "data/a/2", "data/b/1"]
    assert sorted(o.key for o in store.list("data/a/")) == ["data/a/1", "data/a/2"]
    assert sorted(o.key for o in store.list("data")) == [
        "data/a/1",
        "data/a/2",
        "data/b/1",
        "datab",
    ]
    assert sorted(o.key for o in store.list("data/a/1")) == ["data/a/1"]
    assert len(list(store.list(""))) == 5
    assert list(store.list("nothing/")) == []
    sizes = {o.key: o.size for o in store.list("manifests/")}
    assert sizes == {"manifests/a": len(b"manifests/a")}


def test_list_on_missing_root(tmp_path: Path) -> None:
    assert list(LocalStorage(tmp_path / "none").list()) == []


def test_incomplete_uploads_listed_and_aborted(store: LocalStorage) -> None:
    store.put("data/a/1", BytesReader(b"x"))
    tmp = store.root / "data/a" / f"{TEMP_MARK}big.age.0011aa"
    tmp.write_bytes(b"partial")
    ups = store.list_incomplete_uploads()
    assert [(k, u) for k, u, _ in ups] == [("data/a/big.age", str(tmp))]
    store.abort_upload("data/a/big.age", str(tmp))
    assert not tmp.exists()
    assert store.list_incomplete_uploads() == []
    with pytest.raises(StorageError, match="not a vkbackup temporary file"):
        store.abort_upload("data/a/1", str(store.root / "data/a/1"))
    assert store.head("data/a/1") is not None


def test_delete_prunes_empty_dirs_and_ignores_missing(store: LocalStorage) -> None:
    store.put("data/a/1", BytesReader(b"x"))
    store.put("data/b/1", BytesReader(b"x"))
    store.delete("data/a/1")
    assert not (store.root / "data/a").exists()
    assert (store.root / "data/b/1").exists()
    store.delete("data/a/1")  # missing: fine
    store.delete("never/was")
    assert store.root.exists()


def test_missing_object(store: LocalStorage) -> None:
    with pytest.raises(ObjectNotFoundError, match="nope"):
        store.open("nope")
    assert store.head("nope") is None
    with pytest.raises(ObjectNotFoundError):
        store.retention_until("nope")


def test_retention_is_none(store: LocalStorage) -> None:
    store.put("k", BytesReader(b"x"))
    assert store.retention_until("k") is None


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "a//b", "./a", "a/", "a\\b", "a\0b", f"x/{TEMP_MARK}y"]
)
def test_bad_keys_refused(store: LocalStorage, key: str) -> None:
    with pytest.raises(StorageError):
        store.put(key, BytesReader(b"x"))
    assert not store.root.exists() or all_files(store.root) == []


def test_write_error_names_path_and_hints(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores modes; a file in the way of a directory fails for anyone
        (tmp_path / "repo").write_bytes(b"")
        store = LocalStorage(tmp_path / "repo" / "sub")
    else:
        (tmp_path / "repo").mkdir(mode=0o500)
        store = LocalStorage(tmp_path / "repo")
    with pytest.raises(StorageError, match=str(tmp_path / "repo")):
        store.put("a/b", BytesReader(b"x"))


def test_open_storage_local_with_prefix(tmp_path: Path) -> None:
    s = open_storage(StorageConfig(type="local", path=tmp_path, prefix="vk/prod"))
    assert isinstance(s, LocalStorage)
    assert s.root == tmp_path / "vk" / "prod"
    s.put("k", BytesReader(b"x"))
    assert (tmp_path / "vk/prod/k").read_bytes() == b"x"
    assert s.describe() == str(tmp_path / "vk" / "prod")


def test_large_stream_hash_matches(store: LocalStorage) -> None:
    data = os.urandom(9 * 1024 * 1024)
    store.put("big", BytesReader(data))
    h = hashlib.sha256()
    f = store.open("big")
    while chunk := f.read(65536):
        h.update(chunk)
    f.close()
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
