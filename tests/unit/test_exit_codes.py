"""The exit codes of issue 17 and where they are raised, at the unit level (the
real faults through the CLI are integration tests:
tests/integration/cli/test_exit_codes.py, reliability/test_signals_and_locks.py,
reliability/test_security.py).

    10 StorageUnreachableError  a local storage directory that is missing (read side)
    11 LockHeldError            a lock held by a live process
    12 WrongKeyError            an identity that is no recipient, a wrong passphrase
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vkbackup import layout, lock
from vkbackup.config.model import StorageConfig
from vkbackup.crypto import ScryptIdentity, ScryptRecipient, decrypt_bytes, encrypt_bytes
from vkbackup.crypto import generate_identity as new_identity
from vkbackup.errors import (
    CryptoError,
    ExitCode,
    LockError,
    LockHeldError,
    StorageError,
    StorageUnreachableError,
    WrongKeyError,
)
from vkbackup.storage import open_storage
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader


def test_the_codes() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 10, 11, 12, 130]
    assert StorageUnreachableError.exit_code == 10 and issubclass(
        StorageUnreachableError, StorageError
    )
    assert LockHeldError.exit_code == 11 and issubclass(LockHeldError, LockError)
    assert LockError.exit_code == 1  # a stale lock: waiting will not clear it
    assert WrongKeyError.exit_code == 12 and issubclass(WrongKeyError, CryptoError)


# -- 10 -----------------------------------------------------------------------------------


def test_a_missing_directory_is_unreachable_for_readers(tmp_path: Path) -> None:
    gone = tmp_path / "mnt" / "backups"
    store = LocalStorage(gone, create=False)
    for call in (
        lambda: list(store.list("snapshots/")),
        lambda: store.head("snapshots/prod/x.json"),
        lambda: store.open("snapshots/prod/x.json"),
        lambda: store.put("locks/prod.lock", BytesReader(b"x"), if_absent=True),
        lambda: store.list_incomplete_uploads(),
    ):
        with pytest.raises(StorageUnreachableError) as info:
            call()
        assert str(info.value) == f"{gone}: the storage directory does not exist (storage.path)"
    assert not gone.exists()  # nothing created it
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "backups").write_text("")
    with pytest.raises(StorageUnreachableError, match="is not a directory"):
        list(LocalStorage(gone, create=False).list(""))


def test_an_existing_empty_directory_is_just_empty(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path, create=False)
    assert list(store.list("")) == [] and store.head("k") is None


def test_a_writer_creates_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "new" / "store"
    store = open_storage(StorageConfig(path=root), create=True)
    assert list(store.list("")) == []  # nothing yet, and no error
    store.put("a/b", BytesReader(b"x"))
    assert (root / "a" / "b").read_bytes() == b"x"
    assert [o.key for o in open_storage(StorageConfig(path=root), create=False).list("")] == ["a/b"]


# -- 11 -----------------------------------------------------------------------------------


def test_a_live_holder_is_lock_held_and_a_stale_one_is_not(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    held = lock.acquire(store, "prod", "20260101T000000Z-aaaa")
    with pytest.raises(LockHeldError) as info:
        lock.acquire(store, "prod", "20260101T000001Z-bbbb")
    assert f"(pid {os.getpid()})" in str(info.value) and "another snapshot is running" in str(
        info.value
    )
    lock.release(store, "prod", held)
    # a lock whose process is gone: stale, exit 1 with the --break-lock hint
    doc = json.loads(json.dumps(held.__dict__))
    doc["pid"] = 2**22 + 12345  # above pid_max's default: no such process
    doc["time"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    (tmp_path / layout.lock_key("prod")).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / layout.lock_key("prod")).write_text(json.dumps(doc))
    with pytest.raises(LockError) as stale:
        lock.acquire(store, "prod", "20260101T000002Z-cccc")
    assert not isinstance(stale.value, LockHeldError)
    assert "a stale lock remains" in str(stale.value) and "--break-lock" in (stale.value.hint or "")


# -- 12 -----------------------------------------------------------------------------------


def test_wrong_identity_and_wrong_passphrase_are_wrong_key() -> None:
    ct = encrypt_bytes(b"data", [new_identity().recipient()])
    stranger = new_identity()
    with pytest.raises(WrongKeyError) as info:
        decrypt_bytes(ct, [stranger], name="obj")
    assert str(stranger.recipient()) in str(info.value)  # names the key it tried
    sealed = encrypt_bytes(b"data", [ScryptRecipient("right horse", work_factor=10)])
    with pytest.raises(WrongKeyError, match="obj: incorrect passphrase"):
        decrypt_bytes(sealed, [ScryptIdentity("wrong horse")], name="obj")


def test_damaged_data_is_not_wrong_key() -> None:
    ident = new_identity()
    ct = bytearray(encrypt_bytes(b"data" * 100, [ident.recipient()]))
    ct[-3] ^= 1
    with pytest.raises(CryptoError) as info:
        decrypt_bytes(bytes(ct), [ident], name="obj")
    assert not isinstance(info.value, WrongKeyError)
