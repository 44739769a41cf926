"""A manifest or record dated far in the future is no snapshot (finding 5).

Anyone who can write to the bucket can write
`snapshots/box/20991231T235959Z-0000.json`. Before, it made every snapshot
sleep until 2099 (before the lock, so cron runs piled up), and prune and
`restore latest` took it for the newest snapshot. Now list, prune and restore
leave out an id dated more than 10 minutes ahead (a warning names it), an
explicit future id is refused naming it, a manifest recording future times is
refused, verify and drill records dated ahead count as absent, and a new
snapshot never waits more than a few seconds for the clock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import catalog, layout, verify_records
from vkbackup.actions.drill import drill_age_warning, last_drill
from vkbackup.actions.list_show import list_rows
from vkbackup.actions.prune import run_prune
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import HostConfig, RetentionConfig
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.errors import IntegrityError, ObjectNotFoundError
from vkbackup.manifest import Manifest, encode
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader
from vkbackup.transport.local import LocalTransport

FAR = "20991231T235959Z-0000"
FAR_KEY = f"snapshots/box/{FAR}.json"
FAR_NOTE = f"{FAR_KEY}: dated 2099-12-31T23:59:59Z, more than 10 minutes in the future"


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@pytest.fixture
def ident() -> X25519Identity:
    return generate_identity()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture(autouse=True)
def warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[pytest.LogCaptureFixture]:
    monkeypatch.setattr(catalog, "_warned", set())
    monkeypatch.setattr(logging.getLogger("vkbackup"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="vkbackup"):
        yield caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def forge(
    storage: LocalStorage,
    ident: X25519Identity,
    sid: str,
    *,
    started: datetime | None = None,
    host: str = "box",
    status: str = "complete",
) -> str:
    """Write a manifest under *sid* the way someone with bucket access could."""
    when = started or layout.snapshot_time(sid)
    m = Manifest(
        id=sid,
        host=host,
        started=iso(when),
        finished=iso(when),
        tool_version="forged",
        status=status,
        objects=[],
        sources=[],
        private={},
    )
    key = layout.manifest_key(host, sid)
    storage.put(key, BytesReader(encode(m, [ident.recipient()])), if_absent=True)
    return key


def two_real(storage: LocalStorage, ident: X25519Identity) -> list[Manifest]:
    b = SnapshotBuilder(storage, "box", [ident.recipient()])
    now = utc_now()
    return [
        b.snapshot(now - timedelta(days=2), new={"db": b"dump 1"}),
        b.snapshot(now - timedelta(days=1), new={"db": b"dump 2"}),
    ]


# -- list -------------------------------------------------------------------------------------


def test_list_leaves_out_a_future_id_and_names_it(
    storage: LocalStorage, ident: X25519Identity, warnings: pytest.LogCaptureFixture
) -> None:
    m1, m2 = two_real(storage, ident)
    forge(storage, ident, FAR)
    assert catalog.list_snapshots(storage, "box") == [("box", m1.id), ("box", m2.id)]
    assert catalog.list_snapshots(storage) == [("box", m1.id), ("box", m2.id)]
    assert messages(warnings) == [FAR_NOTE + ": ignored"]  # once, however often listed
    assert [r.id for r in list_rows(storage, "box")] == [m1.id, m2.id]
    assert catalog.future_snapshots(storage, "box") == [("box", FAR)]


def test_ten_minutes_of_clock_skew_is_tolerated(
    storage: LocalStorage, ident: X25519Identity
) -> None:
    now = utc_now()
    near = layout.new_snapshot_id(now + timedelta(minutes=9))
    far = layout.new_snapshot_id(now + timedelta(minutes=11))
    forge(storage, ident, near)
    forge(storage, ident, far)
    assert catalog.list_snapshots(storage, "box", now=now) == [("box", near)]
    assert catalog.load_manifest(storage, "box", near, now=now).id == near


def test_a_manifest_recording_future_times_is_refused(
    storage: LocalStorage, ident: X25519Identity
) -> None:
    sid = layout.new_snapshot_id(utc_now() - timedelta(hours=1))
    key = forge(storage, ident, sid, started=datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC))
    with pytest.raises(IntegrityError) as raised:
        catalog.load_manifest(storage, "box", sid)
    assert str(raised.value) == (
        f"{key}: dated 2099-12-31T23:59:59Z, more than 10 minutes in the future: refused"
    )
    (row,) = list_rows(storage, "box")
    assert row.status == "unreadable" and "in the future" in (row.error or "")


# -- restore: resolve ---------------------------------------------------------------------------


def test_latest_never_resolves_to_a_future_id(storage: LocalStorage, ident: X25519Identity) -> None:
    _, m2 = two_real(storage, ident)
    forge(storage, ident, FAR)
    assert catalog.resolve(storage, "latest", "box").id == m2.id
    assert catalog.resolve(storage, "latest").id == m2.id


def test_latest_with_only_a_future_id_finds_nothing(
    storage: LocalStorage, ident: X25519Identity
) -> None:
    forge(storage, ident, FAR)
    with pytest.raises(ObjectNotFoundError, match="no complete snapshot"):
        catalog.resolve(storage, "latest", "box")


@pytest.mark.parametrize("ref", [FAR, "2099", "20991231T"])
def test_an_explicit_future_id_is_an_error_naming_it(
    storage: LocalStorage, ident: X25519Identity, ref: str
) -> None:
    two_real(storage, ident)
    forge(storage, ident, FAR)
    with pytest.raises(IntegrityError) as raised:
        catalog.resolve(storage, ref, "box")
    assert str(raised.value) == FAR_NOTE + ": refused"
    with pytest.raises(IntegrityError, match="more than 10 minutes in the future: refused"):
        catalog.load_manifest(storage, "box", FAR)


# -- prune --------------------------------------------------------------------------------------


def test_prune_keeps_the_real_newest_and_leaves_the_future_one_alone(
    storage: LocalStorage, ident: X25519Identity, warnings: pytest.LogCaptureFixture
) -> None:
    m1, m2 = two_real(storage, ident)
    forge(storage, ident, FAR)
    b = SnapshotBuilder(storage, "box", [ident.recipient()])
    far_object = b.put_object(FAR, "db", "data.age", b"forged").key
    report = run_prune(storage, RetentionConfig(keep_last=1), hosts=["box"])
    assert report.failure() is None
    (hp,) = report.hosts
    decisions = {d.snapshot.id: d for d in hp.plan.decisions}
    assert decisions[m2.id].keep and "newest complete" in decisions[m2.id].reasons
    assert not decisions[m1.id].keep
    # its data looks like a run that started in the future: the grace keeps it
    assert decisions[FAR].snapshot.status == "incomplete" and decisions[FAR].keep
    assert storage.head(FAR_KEY) is not None and storage.head(far_object) is not None
    assert storage.head(layout.manifest_key("box", m2.id)) is not None
    assert storage.head(layout.manifest_key("box", m1.id)) is None
    assert FAR_NOTE + ": ignored" in messages(warnings)


# -- a new snapshot's id ------------------------------------------------------------------------


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start
        self.slept = 0.0

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += timedelta(seconds=seconds)


def test_a_far_future_id_makes_no_snapshot_wait(
    storage: LocalStorage, ident: X25519Identity
) -> None:
    forge(storage, ident, FAR)
    clock = Clock(utc_now())
    sid, started = catalog.next_snapshot_id(storage, "box", clock=clock, sleep=clock.sleep)
    assert clock.slept == 0 and started == clock.now
    assert sid[:16] == layout.new_snapshot_id(clock.now)[:16]


def test_a_near_future_id_is_passed_after_a_few_seconds_not_waited_for(
    storage: LocalStorage, ident: X25519Identity, warnings: pytest.LogCaptureFixture
) -> None:
    now = utc_now()
    ahead = layout.new_snapshot_id(now + timedelta(minutes=8))
    forge(storage, ident, ahead)
    clock = Clock(now)
    sid, started = catalog.next_snapshot_id(storage, "box", clock=clock, sleep=clock.sleep)
    assert clock.slept <= catalog.CLOCK_WAIT <= 5
    assert (
        sid[:16] == layout.new_snapshot_id(layout.snapshot_time(ahead) + timedelta(seconds=1))[:16]
    )
    assert sid > ahead  # still sorts after every listed id: it is the new latest
    assert started == clock.now  # the manifest records the real start
    assert any(f"snapshots/box/{ahead}.json" in m and "ahead" in m for m in messages(warnings))


def test_a_snapshot_in_the_same_second_waits_for_the_next_one(
    storage: LocalStorage, ident: X25519Identity
) -> None:
    now = utc_now()
    forge(storage, ident, layout.new_snapshot_id(now))
    clock = Clock(now)
    sid, _ = catalog.next_snapshot_id(storage, "box", clock=clock, sleep=clock.sleep)
    assert 0 < clock.slept <= 1
    assert sid[:16] == layout.new_snapshot_id(now + timedelta(seconds=1))[:16]


@pytest.mark.timeout(120)
def test_a_real_snapshot_is_not_stalled_by_a_2099_manifest_and_becomes_latest(
    tmp_path: Path, storage: LocalStorage, ident: X25519Identity
) -> None:
    """Before: run_snapshot slept until 2099, before taking the lock."""
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "a.conf").write_text("a = 1\n")
    doc = {
        "storage": {"type": "local", "path": str(storage.root)},
        "encryption": {"recipients": [str(ident.recipient())]},
        "hosts": {
            "box": {
                "address": "127.0.0.1",
                "sources": [{"type": "files", "name": "etc", "paths": [str(tree / "a.conf")]}],
            }
        },
    }
    forge(storage, ident, FAR)

    def local(_: HostConfig) -> LocalTransport:
        return LocalTransport("local")

    t0 = time.monotonic()
    r = run_snapshot(parse_config(doc, "test.toml"), "box", storage=storage, connect=local)
    assert time.monotonic() - t0 < 60
    assert r.status == "complete", [s.error for s in r.sources]
    assert r.id < FAR
    assert catalog.resolve(storage, "latest", "box").id == r.id


# -- records ------------------------------------------------------------------------------------


def test_a_future_verify_record_counts_as_absent(
    storage: LocalStorage, ident: X25519Identity, warnings: pytest.LogCaptureFixture
) -> None:
    _, m2 = two_real(storage, ident)
    key = verify_records.record_key("box", m2.id)
    doc = {
        "format": verify_records.RECORD_FORMAT,
        "host": "box",
        "id": m2.id,
        "time": "2099-01-01T00:00:00Z",
        "ok": True,
    }
    storage.put(key, BytesReader(json.dumps({**doc, "bad": []}).encode()))
    assert verify_records.load_record(storage, "box", m2.id) is None
    assert verify_records.load_records(storage, "box") == {}
    assert (
        f"{key}: dated 2099-01-01T00:00:00Z, more than 10 minutes in the future: ignored"
        in messages(warnings)
    )
    doc["time"] = iso(utc_now())
    storage.put(key, BytesReader(json.dumps({**doc, "bad": []}).encode()))
    assert verify_records.load_record(storage, "box", m2.id) is not None


def test_a_future_drill_record_does_not_silence_the_drill_age_warning(
    storage: LocalStorage,
) -> None:
    now = utc_now()
    old = {"host": "box", "status": "ok", "started": iso(now - timedelta(days=200))}
    forged = {"host": "box", "status": "ok", "started": "2099-01-01T00:00:00Z"}
    storage.put("drills/box/20260101T000000Z.json", BytesReader(json.dumps(old).encode()))
    storage.put("drills/box/20990101T000000Z.json", BytesReader(json.dumps(forged).encode()))
    assert last_drill(storage, "box") == old
    warning = drill_age_warning(storage, "box", 90, now)
    assert warning is not None and "200 days ago" in warning
