"""`vkbackup check`'s age logic with a fixed clock (`assess`, `check_hosts`), and
what it reads from a real local storage (`gather`): newest complete snapshot,
passing verify records, successful drills; forged and future-dated records
count as absent."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.actions.builders import SnapshotBuilder, iso
from vkbackup import catalog, layout, verify_records
from vkbackup.actions.check import (
    FORMAT,
    CheckReport,
    Finding,
    Limits,
    OnRecord,
    Record,
    assess,
    check_hosts,
    format_check,
    gather,
    hosts_to_check,
)
from vkbackup.actions.drill import record as record_drill
from vkbackup.actions.verify import BadObject, SnapshotVerify, write_record
from vkbackup.config import parse_config
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.manifest import Manifest, encode
from vkbackup.signed_storage import SignedStorage
from vkbackup.signing import Trust
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits(timedelta(hours=26), timedelta(days=8), timedelta(days=100))


def rec(age: timedelta, ref: str = "r") -> Record:
    return Record(NOW - age, ref)


def fresh(host: str = "prod") -> OnRecord:
    return OnRecord(
        host,
        snapshot=(rec(timedelta(hours=3), "20260310T090000Z-aaaa"),),
        verify=(rec(timedelta(days=2), "20260308T020000Z-bbbb"),),
        drill=(rec(timedelta(days=30), "2026-02-08T12:00:00Z"),),
    )


# -- the pure part ------------------------------------------------------------------------


def test_everything_fresh() -> None:
    h = assess(fresh(), LIMITS, NOW)
    assert h.ok
    assert [(f.kind, f.stale) for f in h.findings] == [
        ("snapshot", False),
        ("verify", False),
        ("drill", False),
    ]
    assert h.snapshot_age_seconds == 3 * 3600
    assert h.verify_age_seconds == 2 * 86400
    assert h.drill_age_seconds == 30 * 86400
    assert h.finding("snapshot").describe() == (
        "host prod: newest complete snapshot is 3h old (2026-03-10T09:00:00Z; limit 26h)"
    )


@pytest.mark.parametrize(
    ("kind", "age", "line"),
    [
        (
            "snapshot",
            timedelta(hours=27, minutes=3),
            "host prod: newest complete snapshot is 27h 3m old (2026-03-09T08:57:00Z; limit 26h)",
        ),
        (
            "verify",
            timedelta(days=9, hours=1),
            "host prod: newest passing verify is 9d 1h old (2026-03-01T11:00:00Z; limit 8d)",
        ),
        (
            "drill",
            timedelta(days=123),
            "host prod: newest successful drill is 123d old (2025-11-07T12:00:00Z; limit 100d)",
        ),
    ],
)
def test_each_kind_stale_alone(kind: str, age: timedelta, line: str) -> None:
    on = fresh()
    on = OnRecord(**{**on.__dict__, kind: (rec(age),)})
    h = assess(on, LIMITS, NOW)
    assert not h.ok
    assert [f.kind for f in h.findings if f.stale] == [kind]
    assert h.finding(kind).describe() == line
    assert h.finding(kind).age == age


def test_exactly_at_the_limit_is_fresh_one_second_more_is_stale() -> None:
    on = OnRecord("prod", snapshot=(rec(timedelta(hours=26)),))
    assert not assess(on, LIMITS, NOW).finding("snapshot").stale
    on = OnRecord("prod", snapshot=(rec(timedelta(hours=26, seconds=1)),))
    assert assess(on, LIMITS, NOW).finding("snapshot").stale


def test_none_on_record_is_stale() -> None:
    h = assess(OnRecord("prod"), LIMITS, NOW)
    assert [f.stale for f in h.findings] == [True, True, True]
    assert [f.describe() for f in h.findings] == [
        "host prod: newest complete snapshot: none on record (limit 26h)",
        "host prod: newest passing verify: none on record (limit 8d)",
        "host prod: newest successful drill: none on record (limit 100d)",
    ]
    assert (h.snapshot_age_seconds, h.verify_age_seconds, h.drill_age_seconds) == (
        None,
        None,
        None,
    )


def test_the_newest_of_several_records_counts() -> None:
    on = OnRecord(
        "prod",
        verify=(rec(timedelta(days=20), "old"), rec(timedelta(days=1), "new"), rec(timedelta(9))),
    )
    f = assess(on, LIMITS, NOW).finding("verify")
    assert f.newest is not None and f.newest.ref == "new" and not f.stale


def test_future_dated_records_are_ignored_a_little_skew_is_zero_seconds_old() -> None:
    far = Record(NOW + timedelta(days=365), "20270310T120000Z-ffff")
    on = OnRecord("prod", snapshot=(rec(timedelta(days=3), "old"), far))
    f = assess(on, LIMITS, NOW).finding("snapshot")
    assert f.newest is not None and f.newest.ref == "old"
    assert f.stale and f.future == (far,)
    assert f.to_json()["ignored_future"] == ["20270310T120000Z-ffff (2027-03-10T12:00:00Z)"]
    # only a future one: none on record
    only = assess(OnRecord("prod", drill=(far,)), LIMITS, NOW).finding("drill")
    assert only.newest is None and only.stale
    # within the tolerance (10 minutes): used, zero seconds old
    near = Record(NOW + timedelta(minutes=9), "near")
    f = assess(OnRecord("prod", snapshot=(near,)), LIMITS, NOW).finding("snapshot")
    assert f.newest == near and f.age == timedelta(0) and not f.stale


def test_per_host_report_failure_names_only_the_stale_host_and_kind() -> None:
    stale = OnRecord("staging", snapshot=(rec(timedelta(days=2)),), verify=fresh().verify)
    hosts = (assess(fresh("prod"), LIMITS, NOW), assess(stale, LIMITS, NOW))
    report = CheckReport(NOW, "/var/backups/vkbackup", LIMITS, hosts)
    assert not report.ok and hosts[0].ok and not hosts[1].ok
    err = report.failure()
    assert err is not None and err.exit_code == 1
    assert str(err) == (
        "stale:\n"
        "  host staging: newest complete snapshot is 2d old "
        "(2026-03-08T12:00:00Z; limit 26h)\n"
        "  host staging: newest successful drill: none on record (limit 100d)"
    )
    assert err.hint == "vkbackup snapshot staging; vkbackup drill --host staging --to SCRATCH"
    doc = report.to_json()
    assert doc["format"] == FORMAT and doc["ok"] is False
    assert doc["limits"] == {"snapshot": 93600, "verify": 691200, "drill": 8640000}
    assert [(h["host"], h["ok"]) for h in doc["hosts"]] == [("prod", True), ("staging", False)]
    snap = doc["hosts"][1]["checks"][0]
    assert snap == {
        "kind": "snapshot",
        "what": "newest complete snapshot",
        "newest": "2026-03-08T12:00:00Z",
        "ref": "r",
        "age_seconds": 172800,
        "limit_seconds": 93600,
        "stale": True,
        "ignored_future": [],
    }
    assert doc["stale"] == [line.strip() for line in str(err).splitlines()[1:]]
    assert CheckReport(NOW, "x", LIMITS, hosts[:1]).failure() is None


def test_format_check_is_a_table_with_one_line_per_host_and_kind() -> None:
    hosts = (assess(fresh("prod"), LIMITS, NOW), assess(OnRecord("db2"), LIMITS, NOW))
    lines = format_check(CheckReport(NOW, "x", LIMITS, hosts))
    assert lines == [
        "HOST  CHECK                     NEWEST                AGE  LIMIT  STATUS",
        "prod  newest complete snapshot  2026-03-10T09:00:00Z  3h   26h    ok",
        "prod  newest passing verify     2026-03-08T12:00:00Z  2d   8d     ok",
        "prod  newest successful drill   2026-02-08T12:00:00Z  30d  100d   ok",
        "db2   newest complete snapshot  none on record        -    26h    STALE",
        "db2   newest passing verify     none on record        -    8d     STALE",
        "db2   newest successful drill   none on record        -    100d   STALE",
    ]


def test_finding_of_an_absent_record_has_no_age_in_json() -> None:
    f = Finding("prod", "verify", timedelta(days=8), None, None)
    assert f.to_json()["age_seconds"] is None and f.to_json()["newest"] is None


# -- reading storage ---------------------------------------------------------------------


@pytest.fixture
def ident() -> X25519Identity:
    return generate_identity()


@pytest.fixture
def raw(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture
def store(raw: LocalStorage) -> SignedStorage:
    k = Ed25519PrivateKey.generate()
    return SignedStorage(raw, Trust(key=k, trusted=(k.public_key(),)))


@pytest.fixture(autouse=True)
def quiet_future_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(catalog, "_warned", set())
    monkeypatch.setattr(logging.getLogger("vkbackup"), "propagate", True)
    yield


def now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def verify(store: SignedStorage, host: str, sid: str, when: datetime, ok: bool) -> None:
    r = SnapshotVerify(host=host, id=sid, time=iso(when), mode="full", objects=1)
    if not ok:
        r.bad.append(BadObject("k", "db", "sha256", "k: sha256 differs"))
    write_record(store, r)


def drill(store: SignedStorage, host: str, when: datetime, status: str) -> None:
    record_drill(store, {"host": host, "started": iso(when), "status": status})


def test_gather_reads_the_newest_complete_snapshot_passing_verify_and_successful_drill(
    store: SignedStorage, ident: X25519Identity
) -> None:
    now = now_s()
    b = SnapshotBuilder(store, "box", [ident.recipient()])
    complete = b.snapshot(now - timedelta(hours=30), new={"db": b"dump 1"})
    partial = b.snapshot(now - timedelta(hours=2), new={"db": b"dump 2"}, status="partial")
    verify(store, "box", complete.id, now - timedelta(days=3), ok=True)
    verify(store, "box", partial.id, now - timedelta(hours=1), ok=False)  # proves nothing
    drill(store, "box", now - timedelta(days=50), "ok")
    drill(store, "box", now - timedelta(days=5), "failed")
    on = gather(store, "box", now)
    assert [r.ref for r in on.snapshot] == [complete.id]
    assert [(r.ref, r.time) for r in on.verify] == [(complete.id, now - timedelta(days=3))]
    assert [r.time for r in on.drill] == [now - timedelta(days=50)]
    report = check_hosts(store, ["box", "ghost"], LIMITS, now)
    box, ghost = report.hosts
    assert [f.kind for f in box.findings if f.stale] == ["snapshot"]  # 30h > 26h
    assert box.snapshot_age_seconds == 30 * 3600
    assert ghost.findings[0].describe() == (
        "host ghost: newest complete snapshot: none on record (limit 26h)"
    )
    assert report.storage == store.describe()


def test_forged_and_future_records_count_as_absent(
    store: SignedStorage, raw: LocalStorage, ident: X25519Identity
) -> None:
    now = now_s()
    # unsigned records written straight to the bucket: each one absent
    forged = SnapshotBuilder(raw, "box", [ident.recipient()])
    m = forged.snapshot(now - timedelta(hours=1), new={"db": b"planted"})
    doc = {
        "format": verify_records.RECORD_FORMAT,
        "host": "box",
        "id": m.id,
        "time": iso(now),
        "ok": True,
        "bad": [],
    }
    raw.put(verify_records.record_key("box", m.id), BytesReader(json.dumps(doc).encode()))
    raw.put(
        "drills/box/20260101T000000Z.json",
        BytesReader(json.dumps({"host": "box", "started": iso(now), "status": "ok"}).encode()),
    )
    assert gather(store, "box", now) == OnRecord("box")
    # signed, but dated a year ahead: absent too
    later = now + timedelta(days=365)
    ahead = Manifest(
        id=layout.new_snapshot_id(later),
        host="box",
        started=iso(later),
        finished=iso(later),
        tool_version="test",
        status="complete",
    )
    store.put(layout.manifest_key("box", ahead.id), BytesReader(encode(ahead, [ident.recipient()])))
    drill(store, "box", later, "ok")
    assert gather(store, "box", now) == OnRecord("box")
    # a signed, current drill counts
    drill(store, "box", now - timedelta(days=1), "ok")
    assert [r.time for r in gather(store, "box", now).drill] == [now - timedelta(days=1)]


def test_hosts_to_check() -> None:
    store = LocalStorage(Path("/nonexistent-never-listed"))
    cfg = parse_config({"hosts": {"b": {"address": "x"}, "a": {"address": "y"}}}, "vk.toml")
    assert hosts_to_check(cfg, store, "z") == ["z"]
    assert hosts_to_check(cfg, store, None) == ["a", "b"]


def test_hosts_to_check_without_configured_hosts_is_every_host_with_a_snapshot(
    raw: LocalStorage, ident: X25519Identity
) -> None:
    now = now_s()
    for host in ("web", "db"):
        SnapshotBuilder(raw, host, [ident.recipient()]).snapshot(now, new={"x": b"x"})
    assert hosts_to_check(parse_config({}, "vk.toml"), raw, None) == ["db", "web"]
