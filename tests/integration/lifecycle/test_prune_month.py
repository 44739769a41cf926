"""A month of nightly snapshots (injected clock), pruned to the policy.

January 2026, one snapshot a night at 02:15 UTC, written through the manifest
module into a local storage: a database dump uploaded every night, an image
uploaded on the 1st and reused by every later night, and a volume as an
incremental chain (a full every 7 days, then each night reuses the full and
the earlier incrementals and adds one). Plus a partial run, a crashed run (data
without a manifest), a run still uploading, verify records and leftover
uploads. The prune must keep exactly the snapshots the policy names and every
object they use, and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.actions.builders import SnapshotBuilder, snapshot_id
from vkbackup import catalog, layout
from vkbackup.actions.prune import format_prune, run_prune
from vkbackup.actions.verify import run_verify
from vkbackup.config.model import RetentionConfig
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.manifest import Manifest, ObjectRecord
from vkbackup.storage.local import TEMP_MARK, LocalStorage

START = datetime(2026, 1, 1, 2, 15, tzinfo=UTC)
NOW = datetime(2026, 1, 31, 3, 0, tzinfo=UTC)
POLICY = RetentionConfig(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=2)


def night(day: int) -> datetime:
    return START + timedelta(days=day - 1)


# Worked out by hand from the policy (ISO weeks: W02 = Jan 5-11, W03 = 12-18,
# W04 = 19-25, W05 = Jan 26 - Feb 1):
#   keep_last 3     -> 31, 30, 29
#   keep_daily 7    -> 31, 30, 29, 28, 27, 26, 25
#   keep_weekly 4   -> 31 (W05), 25 (W04), 18 (W03), 11 (W02)
#   keep_monthly 2  -> 31 (2026-01), then no older month: the oldest complete, Jan 1
EXPECTED_KEPT_DAYS = {1, 11, 18, 25, 26, 27, 28, 29, 30, 31}


@dataclass
class Month:
    storage: LocalStorage
    identity: X25519Identity
    manifests: dict[int, Manifest]  # day -> manifest
    partial: Manifest
    crashed_keys: list[str]
    running_keys: list[str]
    stale_upload: Path
    fresh_upload: Path


def _temp_upload(root: Path, key: str, mtime: datetime) -> Path:
    final = root.joinpath(*key.split("/"))
    final.parent.mkdir(parents=True, exist_ok=True)
    p = final.with_name(f"{TEMP_MARK}{final.name}.abc123")
    p.write_bytes(b"half an upload")
    os.utime(p, (mtime.timestamp(), mtime.timestamp()))
    return p


@pytest.fixture
def month(tmp_path: Path) -> Iterator[Month]:
    ident = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    b = SnapshotBuilder(storage, "box", [ident.recipient()])
    manifests: dict[int, Manifest] = {}
    image: ObjectRecord | None = None
    chain: list[ObjectRecord] = []
    for day in range(1, 32):
        new: dict[str, bytes | list[tuple[str, bytes, int]]] = {
            "db": f"pg_dump of night {day}".encode()
        }
        reuse: dict[str, list[ObjectRecord]] = {}
        if image is None:
            new["img"] = b"docker save output"
        else:
            reuse["img"] = [image]
        if (day - 1) % 7 == 0:
            chain = []
            new["vol"] = [("volume.tar.age", f"full tar of night {day}".encode(), 0)]
        else:
            reuse["vol"] = list(chain)
            pos = len(chain)
            new["vol"] = [(f"volume.inc{pos}.tar.age", f"incremental of night {day}".encode(), pos)]
        m = b.snapshot(night(day), new=new, reuse=reuse)
        manifests[day] = m
        if image is None:
            image = next(o for o in m.objects if o.source == "img")
        own_vol = [o for o in m.objects if o.source == "vol" and not o.uploaded_in]
        chain = chain + own_vol
        assert [o.chain for o in m.objects if o.source == "vol"] == list(range(len(chain)))
    partial = b.snapshot(
        datetime(2026, 1, 20, 14, 0, tzinfo=UTC),
        new={"db": b"daytime dump"},
        failed=["vol"],
        status="partial",
    )
    crashed = b.incomplete(datetime(2026, 1, 15, 10, 0, tzinfo=UTC), ["a.age", "b.age"])
    running = b.incomplete(NOW - timedelta(minutes=30))
    # every snapshot was verified once (light mode: the public part is enough)
    targets = catalog.list_snapshots(storage, "box")
    results = run_verify(storage, targets, clock=lambda: NOW - timedelta(hours=1))
    assert all(r.ok for r in results), [r.bad for r in results]
    stale = _temp_upload(
        storage.root,
        layout.object_key("box", manifests[30].id, "db", "x.age"),
        NOW - timedelta(days=2),
    )
    fresh = _temp_upload(
        storage.root,
        layout.object_key("box", snapshot_id(NOW - timedelta(minutes=30)), "vol", "y.age"),
        NOW - timedelta(minutes=5),
    )
    yield Month(storage, ident, manifests, partial, crashed, running, stale, fresh)


def data_keys(storage: LocalStorage) -> set[str]:
    return {i.key for i in storage.list("data/")}


def manifest_ids(storage: LocalStorage) -> set[str]:
    return {sid for _, sid in catalog.list_snapshots(storage, "box")}


def used_keys(manifests: list[Manifest]) -> set[str]:
    return {o.key for m in manifests for o in m.objects}


def test_a_month_pruned_keeps_exactly_what_the_policy_names(month: Month) -> None:
    storage = month.storage
    before = data_keys(storage)
    expected_ids = {month.manifests[d].id for d in EXPECTED_KEPT_DAYS}

    # a dry run plans the same and deletes nothing
    dry = run_prune(storage, POLICY, now=NOW, dry_run=True)
    assert dry.failure() is None
    assert data_keys(storage) == before
    assert len(manifest_ids(storage)) == 32
    assert month.stale_upload.exists()
    dry_kept = {d.snapshot.id for d in dry.hosts[0].plan.decisions if d.keep}
    assert dry_kept - {snapshot_id(NOW - timedelta(minutes=30))} == expected_ids

    report = run_prune(storage, POLICY, now=NOW)
    assert report.failure() is None
    [hp] = report.hosts
    plan = hp.plan

    # exactly the snapshots the policy names survive, listed and restorable
    assert manifest_ids(storage) == expected_ids
    kept = [catalog.load_manifest(storage, "box", sid) for sid in sorted(expected_ids)]
    assert all(m.status == "complete" for m in kept)
    reasons = {d.snapshot.id: d.reasons for d in plan.decisions}
    assert "newest complete" in reasons[month.manifests[31].id]
    assert any("oldest complete" in r for r in reasons[month.manifests[1].id])
    assert any(r.startswith("weekly 2026-W03") for r in reasons[month.manifests[18].id])
    assert reasons[month.partial.id] == ("partial, older than the newest complete snapshot",)
    assert reasons[snapshot_id(datetime(2026, 1, 15, 10, 0, tzinfo=UTC))] == (
        "incomplete (no manifest)",
    )
    running_id = snapshot_id(NOW - timedelta(minutes=30))
    assert plan.decision(running_id).keep  # may still be uploading: grace period

    # every object a kept snapshot uses is still there, and nothing else is
    remaining = data_keys(storage)
    assert remaining == used_keys(kept) | set(month.running_keys)
    # the chains of kept snapshots reach into dropped ones: those objects stayed
    jan25 = month.manifests[25]
    reused = [o for o in jan25.objects if o.uploaded_in]
    assert {o.uploaded_in for o in reused} >= {month.manifests[d].id for d in (22, 23, 24)}
    assert all(storage.head(o.key) is not None for o in reused)
    # the dropped ones' own objects are gone: the dumps, the partial run, the crashed run
    dump2 = next(o for o in month.manifests[2].objects if o.source == "db")
    assert storage.head(dump2.key) is None
    assert all(storage.head(o.key) is None for o in month.partial.objects)
    assert all(storage.head(k) is None for k in month.crashed_keys)
    assert hp.kept_shared > 0

    # verify records follow their snapshots
    records = {i.key.rsplit("/", 1)[1][:-5] for i in storage.list("verify/box/")}
    assert records == expected_ids
    # the old leftover upload was aborted, the fresh one (a run in progress) not
    assert not month.stale_upload.exists()
    assert month.fresh_upload.exists()
    assert storage.head(layout.lock_key("box")) is None

    # what remains is whole: a light verify of every kept snapshot passes
    results = run_verify(storage, sorted(("box", i) for i in expected_ids), record=False)
    assert all(r.ok for r in results), [b for r in results for b in r.bad]

    text = "\n".join(format_prune(report))
    assert f"keep  {month.manifests[31].id}" in text
    assert f"drop  {month.manifests[2].id}" in text
    assert "newest complete" in text and "not selected by the retention policy" in text

    # a second prune has nothing left to do
    again = run_prune(storage, POLICY, now=NOW)
    assert again.hosts[0].deleted == [] and again.failure() is None
    assert manifest_ids(storage) == expected_ids


def test_pruning_a_chain_never_breaks_the_kept_snapshot(month: Month) -> None:
    storage = month.storage
    run_prune(storage, POLICY, now=NOW)
    # now keep only the newest: it reuses the image of Jan 1, the full of Jan 29
    # and the incremental of Jan 30, whose snapshots all go
    report = run_prune(storage, RetentionConfig(keep_last=1), now=NOW)
    assert report.failure() is None
    newest = month.manifests[31]
    assert manifest_ids(storage) == {newest.id}
    assert data_keys(storage) == used_keys([newest]) | set(month.running_keys)
    origins = {o.uploaded_in for o in newest.objects if o.uploaded_in}
    assert origins == {month.manifests[d].id for d in (1, 29, 30)}
    # their data is kept without a manifest, and not mistaken for a crashed run
    later = NOW + timedelta(hours=7)  # the running upload's grace is over
    third = run_prune(storage, RetentionConfig(keep_last=1), now=later)
    [hp] = third.hosts
    assert set(hp.retained_prefixes) == origins
    assert [s.id for s in hp.plan.dropped] == [snapshot_id(NOW - timedelta(minutes=30))]
    assert data_keys(storage) == used_keys([newest])
    # and the kept snapshot still decrypts end to end
    [result] = run_verify(storage, [("box", newest.id)], identities=[month.identity])
    assert result.ok and result.mode == "full"


def test_an_empty_policy_deletes_no_snapshot(month: Month) -> None:
    before = data_keys(month.storage)
    report = run_prune(month.storage, RetentionConfig(), now=NOW)
    assert report.failure() is None
    assert report.hosts[0].plan.policy_empty
    assert len(manifest_ids(month.storage)) == 32
    assert data_keys(month.storage) == before
    assert "no retention policy configured" in "\n".join(format_prune(report))
