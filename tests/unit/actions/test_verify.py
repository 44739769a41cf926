"""verify's parts on hand-built snapshots: chain gaps, the deep-check hook,
records, the error message, and selection on an empty storage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import layout
from vkbackup.actions.verify import (
    BadObject,
    SnapshotVerify,
    chain_problems,
    failure,
    run_verify,
    select_snapshots,
    verify_snapshot,
)
from vkbackup.crypto import Identity, X25519Identity, generate_identity
from vkbackup.errors import IntegrityError, ObjectNotFoundError
from vkbackup.manifest import Manifest
from vkbackup.storage.base import Storage
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader
from vkbackup.verify_records import load_record, load_records, record_key

T0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def ident() -> X25519Identity:
    return generate_identity()


@pytest.fixture
def b(tmp_path: Path, ident: X25519Identity) -> SnapshotBuilder:
    return SnapshotBuilder(LocalStorage(tmp_path / "store"), "box", [ident.recipient()])


def test_a_gap_in_an_incremental_chain_is_named(b: SnapshotBuilder) -> None:
    whole = b.snapshot(
        T0, new={"vol": [("full.age", b"f", 0), ("inc1.age", b"1", 1), ("inc2.age", b"2", 2)]}
    )
    assert chain_problems(whole) == []
    broken = b.snapshot(
        T0 + timedelta(days=1),
        new={"vol": [("full.age", b"f", 0), ("inc2.age", b"2", 2), ("inc4.age", b"4", 4)]},
    )
    [bad] = chain_problems(broken)
    assert bad.problem == "chain" and bad.source == "vol"
    assert bad.key == layout.manifest_key("box", broken.id)
    assert "no object at positions 1, 3" in bad.detail
    res = verify_snapshot(b.storage, broken)
    assert [x.problem for x in res.bad] == ["chain"]


def test_deep_check_runs_only_on_intact_snapshots_with_a_key(
    b: SnapshotBuilder, ident: X25519Identity
) -> None:
    m = b.snapshot(T0, new={"db": b"dump"})
    seen: list[str] = []

    def deep(manifest: Manifest, storage: Storage, ids: Sequence[Identity]) -> list[BadObject]:
        seen.append(manifest.id)
        return [BadObject("row-counts", "db", "deep", "table users: 3 rows, recorded 4")]

    res = verify_snapshot(b.storage, m, identities=[ident], deep_check=deep)
    assert seen == [m.id] and res.deep
    assert [x.problem for x in res.bad] == ["deep"]
    # light mode: no key, no deep check
    assert verify_snapshot(b.storage, m, deep_check=deep).ok
    # a damaged object: the deep check is not attempted
    b.storage.delete(m.objects[0].key)
    res = verify_snapshot(b.storage, m, identities=[ident], deep_check=deep)
    assert seen == [m.id] and [x.problem for x in res.bad] == ["missing"]


def test_records_roundtrip_and_garbage_is_ignored(b: SnapshotBuilder) -> None:
    m = b.snapshot(T0, new={"db": b"dump"})
    [res] = run_verify(b.storage, [("box", m.id)], clock=lambda: T0 + timedelta(hours=1))
    rec = load_record(b.storage, "box", m.id)
    assert rec is not None
    assert (rec.time, rec.ok, rec.mode, rec.bad_count) == ("2026-06-01T03:00:00Z", True,
                                                          "no-decrypt", 0)  # fmt: skip
    assert rec.describe() == "2026-06-01T03:00:00Z ok (no-decrypt)"
    assert isinstance(b.storage, LocalStorage)
    doc = json.loads(b.storage.root.joinpath(*record_key("box", m.id).split("/")).read_text())
    assert doc == res.to_json()
    b.storage.put(record_key("box", "20260101T000000Z-0000"), BytesReader(b"not json"))
    b.storage.put("verify/box/notes.txt", BytesReader(b"x"))
    assert list(load_records(b.storage)) == [("box", m.id)]
    assert load_record(b.storage, "box", "20260101T000000Z-0000") is None
    assert load_record(b.storage, "box", "20260102T000000Z-0000") is None


def test_failure_names_every_bad_object() -> None:
    ok = SnapshotVerify(host="box", id="20260601T020000Z-aaaa", time="t", mode="full")
    assert failure([ok]) is None
    bad = SnapshotVerify(
        host="box",
        id="20260602T020000Z-bbbb",
        time="t",
        mode="full",
        bad=[
            BadObject("data/box/x/db/a.age", "db", "missing", "data/box/x/db/a.age: missing"),
            BadObject("data/box/x/db/b.age", "db", "size", "data/box/x/db/b.age: truncated"),
        ],
    )
    err = failure([ok, bad])
    assert isinstance(err, IntegrityError)
    text = str(err)
    assert text.startswith("verify found 2 bad objects in 1 snapshot:")
    assert "box/20260602T020000Z-bbbb: missing: data/box/x/db/a.age: missing" in text
    assert "box/20260602T020000Z-bbbb: size: data/box/x/db/b.age: truncated" in text
    assert err.hint and "take a new snapshot" in err.hint


def test_select_on_empty_storage(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="no snapshot"):
        select_snapshots(LocalStorage(tmp_path))


def test_latest_of_every_host(tmp_path: Path, ident: X25519Identity) -> None:
    st = LocalStorage(tmp_path)
    for host in ("alpha", "beta"):
        sb = SnapshotBuilder(st, host, [ident.recipient()])
        sb.snapshot(T0, new={"db": b"1"})
        sb.snapshot(T0 + timedelta(days=1), new={"db": b"2"})
        sb.snapshot(T0 + timedelta(days=2), new={"db": b"3"}, failed=["x"], status="partial")
    picked = select_snapshots(st, latest=True)
    day2 = (T0 + timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")
    assert [h for h, _ in picked] == ["alpha", "beta"]
    assert all(sid.startswith(day2) for _, sid in picked)  # newest complete, not the partial
    assert [h for h, _ in select_snapshots(st, latest=True, host="beta")] == ["beta"]
