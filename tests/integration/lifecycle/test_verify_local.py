"""`verify` against real snapshots: a good one passes, and each kind of damage
(missing, truncated, flipped bit, swapped with another snapshot's object, a
forged manifest) is named with its object key."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.lifecycle.conftest import LifecycleEnv, make_env
from vkbackup import catalog, layout
from vkbackup.actions.list_show import list_rows
from vkbackup.actions.verify import (
    failure,
    run_verify,
    select_snapshots,
    verify_snapshot,
)
from vkbackup.crypto import decrypt_bytes, encrypt_bytes, generate_identity
from vkbackup.errors import IntegrityError, UsageError, WrongKeyError
from vkbackup.manifest import encode
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader
from vkbackup.verify_records import load_record


@pytest.fixture(scope="module")
def three_template(tmp_path_factory: pytest.TempPathFactory) -> LifecycleEnv:
    """s1 (content A), s2 (content B), s3 (unchanged: reuses s2's object)."""
    env = make_env(tmp_path_factory.mktemp("three"))
    env.snap()
    (env.tree / "Caddyfile").write_text("example.test { respond 200 }\n")
    env.snap()
    r3 = env.snap()
    assert r3.bytes_new == 0 and r3.bytes_reused > 0
    return env


@pytest.fixture
def three(three_template: LifecycleEnv, tmp_path: Path) -> LifecycleEnv:
    """A private copy of the three snapshots, free to damage."""
    store = tmp_path / "store"
    shutil.copytree(three_template.storage.root, store)
    return dataclasses.replace(three_template, storage=LocalStorage(store))


def objects(env: LifecycleEnv) -> list[str]:
    """The one object of s1, s2 (s3 reuses s2's)."""
    snaps = catalog.load_all(env.storage, "box")
    assert snaps[2].objects[0].key == snaps[1].objects[0].key
    return [snaps[0].objects[0].key, snaps[1].objects[0].key]


def test_good_snapshots_pass_and_shared_objects_are_read_once(three: LifecycleEnv) -> None:
    env = three
    targets = select_snapshots(env.storage, all_=True)
    assert len(targets) == 3
    results = run_verify(env.storage, targets, identities=[env.identity])
    assert [r.ok for r in results] == [True, True, True]
    assert [r.mode for r in results] == ["full"] * 3
    assert results[2].shared == 1 and results[2].bytes == 0
    assert results[1].bytes == catalog.load_all(env.storage, "box")[1].objects[0].size
    assert failure(results) is None
    rec = load_record(env.storage, "box", results[0].id)
    assert rec is not None and rec.ok and rec.mode == "full" and rec.bad_count == 0
    rows = list_rows(env.storage, "box")
    assert all(r.last_verified is not None and r.last_verified.ok for r in rows)


def test_missing_object_is_named(three: LifecycleEnv) -> None:
    env = three
    k1, _ = objects(env)
    env.path(k1).unlink()
    results = run_verify(env.storage, select_snapshots(env.storage, all_=True), identities=[])
    assert [r.ok for r in results] == [False, True, True]
    [bad] = results[0].bad
    assert bad.problem == "missing" and bad.key == k1 and k1 in bad.detail
    err = failure(results)
    assert isinstance(err, IntegrityError) and k1 in str(err) and "missing" in str(err)
    rec = load_record(env.storage, "box", results[0].id)
    assert rec is not None and not rec.ok and rec.bad_count == 1


def test_truncated_shared_object_fails_every_snapshot_that_uses_it(three: LifecycleEnv) -> None:
    env = three
    _, k2 = objects(env)
    data = env.path(k2).read_bytes()
    env.path(k2).write_bytes(data[:-100])
    results = run_verify(
        env.storage, select_snapshots(env.storage, all_=True), identities=[env.identity]
    )
    assert [r.ok for r in results] == [True, False, False]
    for r in results[1:]:
        [bad] = r.bad
        assert bad.problem == "size" and bad.key == k2
        assert f"truncated: {len(data) - 100} bytes in storage, the manifest records " in (
            bad.detail
        )
    assert results[2].shared == 1  # read once, reported in both snapshots


@pytest.mark.parametrize("decrypt", [True, False])
def test_flipped_bit_is_named(three: LifecycleEnv, decrypt: bool) -> None:
    env = three
    k1, _ = objects(env)
    data = bytearray(env.path(k1).read_bytes())
    data[len(data) // 2] ^= 0x10
    env.path(k1).write_bytes(bytes(data))
    m1 = catalog.load_all(env.storage, "box")[0]
    res = verify_snapshot(env.storage, m1, identities=[env.identity] if decrypt else None)
    [bad] = res.bad
    assert bad.problem == "sha256" and bad.key == k1
    assert "content differs from the manifest" in bad.detail
    # with the key, age's authentication failure is reported too
    assert ("; age: " in bad.detail) is decrypt


def test_object_swapped_with_another_snapshots_is_named(three: LifecycleEnv) -> None:
    env = three
    k1, k2 = objects(env)
    env.path(k2).write_bytes(env.path(k1).read_bytes())
    results = run_verify(env.storage, [("box", catalog.load_all(env.storage, "box")[1].id)])
    [bad] = results[0].bad
    assert bad.problem == "swapped" and bad.key == k2
    assert f"holds the content of {k1}" in bad.detail


def test_forged_manifest_is_caught_only_by_age(three: LifecycleEnv) -> None:
    """An object replaced by one encrypted to another key, with the manifest
    rewritten to match: size and sha256 agree, age does not."""
    env = three
    k1, _ = objects(env)
    m1 = catalog.load_all(env.storage, "box")[0]
    plain = decrypt_bytes(env.path(k1).read_bytes(), [env.identity])
    forged = encrypt_bytes(plain, [generate_identity().recipient()])
    env.path(k1).write_bytes(forged)
    rec = replace(m1.objects[0], size=len(forged), sha256=hashlib.sha256(forged).hexdigest())
    m1.objects = [rec]
    mkey = layout.manifest_key("box", m1.id)
    env.storage.put(mkey, BytesReader(encode(m1, [env.identity.recipient()])))
    m1 = catalog.load_manifest(env.storage, "box", m1.id)
    light = verify_snapshot(env.storage, m1)
    assert light.ok and light.mode == "no-decrypt"
    full = verify_snapshot(env.storage, m1, identities=[env.identity])
    [bad] = full.bad
    assert bad.problem == "age" and bad.key == k1
    assert "size and sha256 match the manifest but age refuses it" in bad.detail


def test_unreadable_manifest_is_a_bad_result(three: LifecycleEnv) -> None:
    env = three
    snaps = select_snapshots(env.storage, all_=True)
    mkey = layout.manifest_key(*snaps[0])
    env.path(mkey).write_text('{"format": "something else"}')
    results = run_verify(env.storage, snaps, identities=[env.identity])
    [bad] = results[0].bad
    assert bad.problem == "manifest" and bad.key == mkey
    assert [r.ok for r in results[1:]] == [True, True]


def test_private_part_sealed_to_another_key_is_named(three: LifecycleEnv) -> None:
    """Another key proves nothing about the data: verify stops with WrongKeyError
    (exit 12) naming the manifest and the key tried, and records no result."""
    env = three
    m = catalog.resolve(env.storage, "latest", "box")
    stranger = generate_identity()
    with pytest.raises(WrongKeyError) as info:
        run_verify(env.storage, [("box", m.id)], identities=[stranger])
    assert f"{layout.manifest_key('box', m.id)} (private part): no identity matches" in str(
        info.value
    )
    assert str(stranger.recipient()) in str(info.value)
    assert load_record(env.storage, "box", m.id) is None


def test_selection(three: LifecycleEnv) -> None:
    env = three
    snaps = catalog.list_snapshots(env.storage, "box")
    assert select_snapshots(env.storage) == [snaps[-1]]
    assert select_snapshots(env.storage, latest=True, host="box") == [snaps[-1]]
    assert select_snapshots(env.storage, snaps[0][1][:18]) == [snaps[0]]
    with pytest.raises(UsageError):
        select_snapshots(env.storage, snaps[0][1], latest=True)
    with pytest.raises(UsageError):
        select_snapshots(env.storage, latest=True, all_=True)
