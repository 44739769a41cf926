"""Signed records (issue 16, finding 1): manifests, verify and drill records are
signed on their way into storage and checked on their way out; a record that is
unsigned, edited, re-dated, moved, or signed by another key is refused, naming
the file; reuse takes objects only from snapshots whose signature checks.

Real snapshots on this machine (LocalTransport, age, a local storage directory),
as tests/unit/actions/test_key_rotation.py runs them."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.actions.test_key_rotation import local, make_cfg
from vkbackup import catalog, layout, sshsig, verify_records
from vkbackup.actions.drill import last_drill
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.errors import ConfigError, IntegrityError
from vkbackup.manifest import open_private
from vkbackup.restore.objects import PlainCheck, open_object
from vkbackup.restore.session import plain_checks
from vkbackup.signed_storage import SignedStorage
from vkbackup.signing import Trust
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader

KEY = "snapshots/box/20261130T020000Z-abcd.json"


def signed(storage: LocalStorage, key: Ed25519PrivateKey | None = None) -> SignedStorage:
    k = key or Ed25519PrivateKey.generate()
    return SignedStorage(storage, Trust(key=k, trusted=(k.public_key(),)))


def read(store: SignedStorage, key: str) -> bytes:
    with store.open(key) as s:
        return s.read()


@pytest.fixture
def raw(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_signature_is_written_before_the_record_and_checks_by_hand(raw: LocalStorage) -> None:
    order: list[str] = []
    put = raw.put

    def recording_put(key: str, src: object, **kw: object) -> object:
        order.append(key)
        return put(key, src, **kw)  # type: ignore[arg-type]

    raw.put = recording_put  # type: ignore[method-assign, assignment]
    key = Ed25519PrivateKey.generate()
    store = signed(raw, key)
    store.put(KEY, BytesReader(b'{"a": 1}'))
    assert order == [KEY + ".sig", KEY]
    assert read(store, KEY) == b'{"a": 1}'
    with raw.open(KEY + ".sig") as s:
        assert sshsig.verify(s.read(), b'{"a": 1}', [key.public_key()], KEY) == key.public_key()


def test_data_objects_and_locks_are_not_signed(raw: LocalStorage) -> None:
    store = signed(raw)
    store.put("data/box/20261130T020000Z-abcd/etc/files.tar.age", BytesReader(b"x"))
    store.put("locks/box.lock", BytesReader(b"{}"))
    assert sorted(i.key for i in raw.list("")) == [
        "data/box/20261130T020000Z-abcd/etc/files.tar.age",
        "locks/box.lock",
    ]


@pytest.mark.parametrize("prefix", ["snapshots/box/", "verify/box/", "drills/box/"])
def test_unsigned_edited_or_foreign_records_are_refused_naming_them(
    raw: LocalStorage, prefix: str
) -> None:
    key = prefix + "20261130T020000Z-abcd.json"
    store = signed(raw)
    raw.put(key, BytesReader(b"{}"))
    with pytest.raises(IntegrityError, match=rf"^{key}: not signed \({key}\.sig is missing\)"):
        read(store, key)
    store.put(key, BytesReader(b'{"ok": true}'))
    raw.put(key, BytesReader(b'{"ok": false}'))  # edited after signing
    with pytest.raises(IntegrityError, match=rf"^{key}: BAD signature"):
        read(store, key)
    signed(raw).put(key, BytesReader(b"{}"))  # signed by someone else's key
    with pytest.raises(IntegrityError, match=rf"^{key}: signed by SHA256:.* not in signing"):
        read(store, key)


def test_without_signing_records_are_read_with_one_warning(
    raw: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    store = SignedStorage(raw, Trust.none())
    store.put(KEY, BytesReader(b"{}"))
    assert [i.key for i in raw.list("snapshots/")] == [KEY]  # no signature written
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert read(store, KEY) == b"{}"
    notes = [r.getMessage() for r in caplog.records if "not signed" in r.getMessage()]
    assert len(notes) <= 1  # once per process: an earlier test may have said it already
    assert all("anyone with write access to the storage could forge" in n for n in notes)


def test_a_machine_with_only_trusted_keys_refuses_to_write_records(raw: LocalStorage) -> None:
    k = Ed25519PrivateKey.generate()
    store = SignedStorage(raw, Trust(key=None, trusted=(k.public_key(),)))
    with pytest.raises(ConfigError, match=rf"^{KEY}: cannot be signed"):
        store.put(KEY, BytesReader(b"{}"))
    assert list(raw.list("")) == []


def test_delete_removes_the_record_and_its_signature(raw: LocalStorage) -> None:
    store = signed(raw)
    store.put(KEY, BytesReader(b"{}"))
    store.delete(KEY)
    assert list(raw.list("")) == []


def test_trust_from_config_includes_the_key_and_refuses_bad_lines(tmp_path: Path) -> None:
    from vkbackup.signing import generate_key_file

    line = generate_key_file(tmp_path / "k")
    other = sshsig.public_line(Ed25519PrivateKey.generate().public_key())
    cfg = parse_config({"signing": {"key": str(tmp_path / "k"), "trusted": [other]}}, "t.toml")
    trust = Trust.from_config(cfg.signing)
    assert trust.key is not None and trust.configured
    lines = sorted(sshsig.public_line(k) for k in trust.trusted)
    assert lines == sorted([other, " ".join(line.split()[:2])])
    with pytest.raises(ConfigError, match=r"t\.toml: .*signing\.trusted\[0\]: must be"):
        parse_config({"signing": {"trusted": ["ssh-rsa AAAAB3Nza"]}}, "t.toml")
    with pytest.raises(ConfigError, match=r"signing\.key: must be a path"):
        parse_config({"signing": {"key": "-----BEGIN OPENSSH PRIVATE KEY-----"}}, "t.toml")
    assert not Trust.from_config(parse_config({}, "t.toml").signing).configured


# -- real snapshots ---------------------------------------------------------------------------


@pytest.fixture
def ident() -> X25519Identity:
    return generate_identity()


def tree_of(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    if not d.exists():
        d.mkdir()
        (d / "a.conf").write_text("a = 1\n")
        (d / "b.conf").write_text("b = 2\n")
        (d / ".env").write_text("SECRET=abc\n")
    return d


def snap(tmp_path: Path, store: SignedStorage, ident: X25519Identity) -> str:
    cfg = make_cfg(tmp_path, [ident], tree_of(tmp_path))
    r = run_snapshot(cfg, "box", storage=store, connect=local)
    assert r.status == "complete", [s.error for s in r.sources]
    return r.id


def test_a_re_dated_or_moved_manifest_is_refused(
    tmp_path: Path, raw: LocalStorage, ident: X25519Identity
) -> None:
    store = signed(raw)
    sid = snap(tmp_path, store, ident)
    key = layout.manifest_key("box", sid)
    newer = layout.new_snapshot_id(layout.snapshot_time(sid) + timedelta(seconds=1))
    with raw.open(key) as s:
        body = s.read()
    with raw.open(key + ".sig") as s:
        sig = s.read()
    # copied whole (signature too) under a newer id: the signed bytes name the old id
    raw.put(layout.manifest_key("box", newer), BytesReader(body))
    raw.put(layout.manifest_key("box", newer) + ".sig", BytesReader(sig))
    with pytest.raises(IntegrityError, match="it was moved or swapped"):
        catalog.resolve(store, newer, "box")
    # re-dated inside: the signature no longer checks
    doc = json.loads(body)
    doc["id"] = newer
    raw.put(layout.manifest_key("box", newer), BytesReader(json.dumps(doc).encode()))
    with pytest.raises(IntegrityError, match=rf"{newer}\.json: BAD signature"):
        catalog.resolve(store, "latest", "box")


def test_an_object_list_edited_in_the_public_part_is_refused(
    tmp_path: Path, raw: LocalStorage, ident: X25519Identity
) -> None:
    store = signed(raw)
    sid = snap(tmp_path, store, ident)
    key = layout.manifest_key("box", sid)
    with raw.open(key) as s:
        doc = json.loads(s.read())
    doc["objects"] = doc["objects"][:-1]  # drop an object
    raw.put(key, BytesReader(json.dumps(doc).encode()))
    with pytest.raises(IntegrityError, match="BAD signature"):
        catalog.load_manifest(store, "box", sid)
    # without [signing] the edit is still caught once the private part is open: it
    # repeats the id, host and every object
    m = catalog.load_manifest(SignedStorage(raw, Trust.none()), "box", sid)
    with pytest.raises(IntegrityError, match="names another snapshot or other objects"):
        open_private(m, [ident])


def test_reuse_takes_objects_only_from_a_manifest_whose_signature_checks(
    tmp_path: Path, raw: LocalStorage, ident: X25519Identity, caplog: pytest.LogCaptureFixture
) -> None:
    store = signed(raw)
    first = snap(tmp_path, store, ident)
    second = snap(tmp_path, store, ident)
    m2 = catalog.load_manifest(store, "box", second)
    assert m2.bytes_reused > 0  # unchanged files: reused from the signed first snapshot
    # both earlier manifests lose their signatures (forged, or written before [signing])
    for sid in (first, second):
        raw.delete(layout.manifest_key("box", sid) + ".sig")
    caplog.set_level(logging.WARNING)
    third = snap(tmp_path, store, ident)
    m3 = catalog.load_manifest(store, "box", third)
    assert m3.bytes_reused == 0 and all(not o.uploaded_in for o in m3.objects)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"{layout.manifest_key('box', second)}: nothing is reused from it" in warned
    assert "not signed" in warned


def test_forged_verify_and_drill_records_count_as_absent(
    tmp_path: Path, raw: LocalStorage, ident: X25519Identity
) -> None:
    store = signed(raw)
    sid = snap(tmp_path, store, ident)
    record = {
        "format": verify_records.RECORD_FORMAT,
        "host": "box",
        "id": sid,
        "time": "2026-11-30T02:00:00+00:00",
        "ok": True,
        "bad": [],
    }
    key = verify_records.record_key("box", sid)
    raw.put(key, BytesReader(json.dumps(record).encode()))  # unsigned
    assert verify_records.load_record(store, "box", sid) is None
    store.put(key, BytesReader(json.dumps(record).encode()))
    assert verify_records.load_record(store, "box", sid) is not None
    # a signed record of another snapshot, moved here, names that snapshot: absent
    store.put(key, BytesReader(json.dumps({**record, "id": sid[:-4] + "0000"}).encode()))
    assert verify_records.load_record(store, "box", sid) is None
    drill = {"host": "box", "started": "2026-11-30T02:00:00+00:00", "status": "ok"}
    raw.put("drills/box/20261130T020000Z.json", BytesReader(json.dumps(drill).encode()))
    assert last_drill(store, "box") is None
    store.put("drills/box/20261130T020000Z.json", BytesReader(json.dumps(drill).encode()))
    assert last_drill(store, "box") == drill


def test_every_object_has_its_recorded_plaintext_checked_reused_ones_too(
    tmp_path: Path, raw: LocalStorage, ident: X25519Identity
) -> None:
    store = signed(raw)
    first = snap(tmp_path, store, ident)
    (tree_of(tmp_path) / "b.conf").write_text("b = 3\n")  # one source changes
    second = snap(tmp_path, store, ident)
    m2 = catalog.load_manifest(store, "box", second)
    reused = [o for o in m2.objects if o.uploaded_in == first]
    assert reused and len(reused) < len(m2.objects)
    checks, warnings = plain_checks(store, m2, [ident])
    assert warnings == []
    assert set(checks) == {o.key for o in m2.objects}
    for obj in m2.objects:
        with open_object(store, obj, [ident], expect=checks[obj.key]) as stream:
            data = stream.read(1 << 20) + stream.read()
        assert len(data) == checks[obj.key].size
        wrong = PlainCheck(checks[obj.key].size, "0" * 64)
        with (
            pytest.raises(IntegrityError, match=rf"{obj.key} \(plaintext\): stored object"),
            open_object(store, obj, [ident], expect=wrong) as stream,
        ):
            while stream.read(65536):
                pass
    # the first snapshot pruned: its objects are still checked by ciphertext and age
    store.delete(layout.manifest_key("box", first))
    m2 = catalog.load_manifest(store, "box", second)
    checks, warnings = plain_checks(store, m2, [ident])
    assert set(checks) == {o.key for o in m2.objects if not o.uploaded_in}
    assert warnings == []
