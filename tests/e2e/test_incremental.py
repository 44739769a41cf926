"""Issue 9 against the lab: unchanged sources are referenced, volumes form incremental
chains (GNU tar --listed-incremental), restore follows the chain (deletions included),
and pruning old snapshots never breaks a kept one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import treesig
from tests.e2e.test_snapshot_restore import PLAYBOOK, assert_fresh_equals_prod
from tests.lab.api import Lab
from vkbackup import catalog
from vkbackup.storage.local import LocalStorage

VOLUME = "chatwoot_storage_data"
MP = f"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME})"


@pytest.fixture
def cfg(lab: Lab, tmp_path: Path) -> Path:
    """The lab config with its own empty local storage and keep_last = 1."""
    text = lab.config_path.read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{tmp_path / "store"}"', text, count=1)
    text = re.sub(r"(?ms)^\[retention\]\n(keep_\w+ = \d+\n)+", "[retention]\nkeep_last = 1\n", text)
    p = tmp_path / "vkbackup.toml"
    p.write_text(text)
    return p


def vk(lab: Lab, cfg: Path, *args: str) -> dict[str, Any]:
    import subprocess
    import sys

    cp = subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args, "--json"],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout + cp.stderr
    doc: dict[str, Any] = json.loads(cp.stdout)
    return doc


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result["sources"]}


def test_unchanged_prod_uploads_under_one_percent(lab: Lab, cfg: Path) -> None:
    first = vk(lab, cfg, "snapshot", "prod")
    second = vk(lab, cfg, "snapshot", "prod")
    assert first["status"] == second["status"] == "complete"
    new = by_name(second)
    for name, s in new.items():
        # Redis writes a new dump.rdb (with its own timestamp) whenever the snapshot
        # stops it, so its tree is never unchanged; everything else is referenced,
        # the database too (no transaction was given an id: nothing was committed)
        if name != "redis-data":
            assert s["bytes_new"] == 0, f"{name} uploaded {s['bytes_new']} bytes unchanged"
    assert new["chatwoot-db"]["bytes_reused"] > 0
    assert new["redis-data"]["bytes_new"] < 20_000
    ratio = second["bytes_new"] / first["bytes_new"]
    speedup = first["seconds"] / second["seconds"]
    print(f"unchanged snapshot: {ratio:.3%} of the first one's bytes, {speedup:.1f}x faster")
    assert ratio < 0.01

    # one committed row is never hidden behind a reused dump
    lab.psql(
        "prod", "UPDATE accounts SET name = name || '.' WHERE id = (SELECT min(id) FROM accounts);"
    )
    third = by_name(vk(lab, cfg, "snapshot", "prod"))
    assert third["chatwoot-db"]["bytes_new"] > 0
    assert third["chatwoot-db"]["bytes_reused"] == 0


def test_ten_changed_files_upload_about_those_files(lab: Lab, cfg: Path) -> None:
    vk(lab, cfg, "snapshot", "prod")
    lab.ssh(
        "prod",
        f"cd {MP} && for i in $(seq 1 10); do head -c 50000 /dev/urandom > changed-$i.bin; done",
    )
    r = vk(lab, cfg, "snapshot", "prod")
    s = by_name(r)["chatwoot-storage"]
    # 10 x 50 kB of random data, plus tar headers and directory records
    assert 500_000 <= s["bytes_new"] < 800_000, s
    total = treesig.volume_signature(lab, "prod", VOLUME)
    assert len(total["entries"]) > 50  # the volume holds far more than the changed files


def test_chain_of_six_incrementals_restores_identically_and_survives_prune(
    fresh_lab: Lab, cfg: Path
) -> None:
    """Seven snapshots (a full, then six incrementals of the storage volume), pruned
    with keep_last = 1: exactly the six older snapshots go, with exactly the objects
    the newest one does not reference (its chain, uploaded by the dropped snapshots,
    stays); then every source of the kept snapshot restores onto fresh, identical to
    prod (the storage volume first onto a fresh without zstd)."""
    lab = fresh_lab
    # an earlier run's leftovers; a file of its own to delete later (the seeded files,
    # hard links included, stay as test_lab expects them)
    lab.ssh("prod", f"cd {MP} && rm -rf inc-* && echo doomed > inc-doomed.txt")
    ids = [vk(lab, cfg, "snapshot", "prod")["id"]]
    scripts = [
        "echo one > inc-a.txt",
        "echo two > inc-b.txt && mkdir -p inc-dir/sub && echo deep > inc-dir/sub/f",
        "rm inc-a.txt && echo changed >> inc-b.txt",
        "rm -r inc-dir && ln -s inc-b.txt inc-link",
        "head -c 300000 /dev/urandom > inc-big.bin && chmod 600 inc-big.bin",
        "rm inc-doomed.txt",  # a file the full holds
    ]
    for script in scripts:
        lab.ssh("prod", f"cd {MP} && {script}")
        ids.append(vk(lab, cfg, "snapshot", "prod")["id"])
    show = vk(lab, cfg, "show", "latest", "--host", "prod")
    text = json.dumps(show)
    assert "volume-6.tar.zst.age" in text and "volume-0.tar.zst.age" in text  # prod has zstd

    # keep_last = 1: everything but the newest snapshot goes, its chain must stay whole
    storage = LocalStorage(cfg.parent / "store")
    newest = ids[-1]
    dropped = set(ids[:-1])
    kept = catalog.load_manifest(storage, "prod", newest)
    kept_objects = {o.key for o in kept.objects}
    chain = [o for o in kept.objects if o.source == "chatwoot-storage"]
    assert sorted(o.chain for o in chain) == list(range(7))
    assert {o.uploaded_in or newest for o in chain} == set(ids)  # one level uploaded by each
    before = {i.key for i in storage.list("")}

    def of_dropped(key: str) -> bool:
        return any(key.startswith((f"snapshots/prod/{d}", f"data/prod/{d}/")) for d in dropped)

    want_deleted = {k for k in before if of_dropped(k) and k not in kept_objects}
    assert {k for k in want_deleted if k.startswith("snapshots/")} == {
        f"snapshots/prod/{d}.json{sig}" for d in dropped for sig in ("", ".sig")
    }
    report = vk(lab, cfg, "prune")
    (host,) = report["hosts"]
    decisions = {d["id"]: d for d in host["snapshots"]}
    assert set(decisions) == set(ids)
    assert {i for i, d in decisions.items() if d["keep"]} == {newest}
    assert "newest complete" in decisions[newest]["reasons"]
    for d in dropped:
        assert decisions[d]["reasons"] == ["not selected by the retention policy"], decisions[d]
    # the report names each manifest; its signature goes with it (signed_storage)
    assert set(host["deleted"]) == {k for k in want_deleted if not k.endswith(".sig")}
    assert host["failed"] == [] and host["not_pruned"] == []
    assert host["kept_shared_objects"] == len(kept_objects & {k for k in before if of_dropped(k)})
    assert host["kept_shared_objects"] >= 6  # the chain's levels 0-5, at least
    after = {i.key for i in storage.list("")}
    assert after == before - want_deleted
    assert kept_objects <= after
    assert [sid for _, sid in catalog.list_snapshots(storage, "prod")] == [newest]
    verified = vk(lab, cfg, "verify", "--latest")
    assert json.dumps(verified).count('"ok": true') >= 1

    # a target without zstd (a minimal Debian) gets the tars decompressed here
    lab.ssh("fresh", "mv /usr/bin/zstd /usr/bin/zstd.hidden")
    try:
        report = vk(
            lab, cfg, "restore", "latest", "--host", "prod", "--to", "fresh",
            "--only", "chatwoot-storage", "--yes",
        )  # fmt: skip
    finally:
        lab.ssh("fresh", "mv /usr/bin/zstd.hidden /usr/bin/zstd")
    assert report["status"] == "ok"
    assert any("zstd decompressed here" in v for v in report["verified"]), report["verified"]
    assert treesig.volume_signature(lab, "fresh", VOLUME) == treesig.volume_signature(
        lab, "prod", VOLUME
    )
    # then every other source of the kept snapshot (the same restore resumes)
    report = vk(
        lab, cfg, "restore", "latest", "--host", "prod", "--to", "fresh",
        "--playbook", PLAYBOOK, "--yes",
    )  # fmt: skip
    assert report["status"] == "ok"
    status = {s["id"]: s["status"] for s in report["steps"]}
    assert status["volume:chatwoot-storage"] == "already-done"
    for source in {o.source for o in kept.objects}:
        steps = [i for i in status if i.endswith(f":{source}")]
        assert steps and all(status[i] in ("done", "already-done") for i in steps), source
    assert_fresh_equals_prod(lab)


def test_object_lock_retention_covers_snapshots_that_reuse_an_object(
    lab: Lab, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    base = lab.s3_config_path.read_text()
    base = base.replace(f'bucket = "{lab.s3.bucket}"', f'bucket = "{lab.s3.locked_bucket}"', 1)
    base = base.replace('prefix = "lab"', f'prefix = "reuse-{tmp_path.name}"', 1)

    def cfg_days(days: int) -> Path:
        text = base.replace(
            "[encryption]",
            f'[storage.object_lock]\nmode = "governance"\ndays = {days}\n\n[encryption]',
            1,
        )
        p = tmp_path / f"s3-{days}.toml"
        p.write_text(text)
        p.chmod(0o600)
        return p

    vk(lab, cfg_days(1), "snapshot", "prod", "--only", "config")
    second = vk(lab, cfg_days(3), "snapshot", "prod", "--only", "config")
    assert second["bytes_new"] == 0 and second["bytes_reused"] > 0
    show = vk(lab, cfg_days(3), "show", second["id"])
    keys = [o["key"] for o in show["objects"]]
    assert keys
    client = lab.s3_client()
    prefix = f"reuse-{tmp_path.name}"
    for key in keys:
        got = client.get_object_retention(Bucket=lab.s3.locked_bucket, Key=f"{prefix}/{key}")
        until = got["Retention"]["RetainUntilDate"]
        # uploaded under a 1-day policy, referenced by a snapshot under a 3-day one
        assert until > datetime.now(UTC) + timedelta(days=2, hours=23), (key, until)
