"""Issue 17, browse and single-file restore, against the lab:

- `dump` of a file changed across a volume's incremental chain gives each
  snapshot's own version, and `ls` honours a deletion;
- `dump --table` (the local pg_restore's SQL) loads into a scratch database on
  prod's PostgreSQL with rows equal to prod's, digest for digest;
- `restore --into` puts one volume file, as the snapshot had it, under a new
  directory on prod and leaves the live volume exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import treesig
from tests.e2e.labconfig import drop_volume, own_config, volume_source
from tests.lab.api import Lab

VOLUME = "vk_browse"
SOURCE = "browse"
MP = f"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME})"
TABLE = "public.contacts"
SCRATCH = "vk_scratch"
INTO = "/root/vk-into-test"


def vk(cfg: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args]
    return subprocess.run(argv, capture_output=True, timeout=600)


def vk_json(cfg: Path, *args: str) -> Any:
    cp = vk(cfg, *args, "--json")
    assert cp.returncode == 0, cp.stderr.decode()
    return json.loads(cp.stdout)


@pytest.fixture
def volume(lab: Lab) -> Iterator[str]:
    lab.ssh("prod", f"docker volume create {VOLUME} >/dev/null; rm -rf {INTO}")
    try:
        yield VOLUME
    finally:
        drop_volume(lab, VOLUME)
        lab.ssh("prod", f"rm -rf {INTO}")


@pytest.fixture
def cfg(lab: Lab, tmp_path: Path, volume: str) -> Path:
    """The lab config with its own local storage and the test volume as a source."""
    return own_config(
        lab, tmp_path / "vkbackup.toml", tmp_path / "store", volume_source(SOURCE, volume)
    )


def snapshot(cfg: Path, source: str = SOURCE) -> str:
    """Snapshot one source of prod ("partial": --only leaves the others out); its id."""
    doc = vk_json(cfg, "snapshot", "prod", "--only", source)
    assert [(s["name"], s["status"]) for s in doc["sources"]] == [(source, "ok")], doc
    return str(doc["id"])


def test_dump_gives_each_snapshot_its_own_version_across_the_chain(lab: Lab, cfg: Path) -> None:
    versions = [f"version {i}\n".encode() * (i * 1000) for i in (1, 2, 3)]
    ids = []
    lab.ssh("prod", f"mkdir -p {MP}/notes && echo bye > {MP}/gone.txt")
    for i, body in enumerate(versions):
        if i == 1:
            lab.ssh("prod", f"rm {MP}/gone.txt")
        lab.ssh("prod", f"cat > {MP}/notes/f.txt", input=body)
        ids.append(snapshot(cfg))
    last = cfg.parent / "store" / "snapshots" / "prod" / f"{ids[-1]}.json"
    objects = json.loads(last.read_text())["objects"]
    roles = [o["role"] for o in sorted(objects, key=lambda o: o["chain"]) if o["source"] == SOURCE]
    assert roles == ["tar", "tar-incremental", "tar-incremental"]  # a real chain

    for sid, body in zip(ids, versions, strict=True):
        cp = vk(cfg, "dump", sid, SOURCE, "notes/f.txt")
        assert cp.returncode == 0, cp.stderr.decode()
        assert cp.stdout == body, sid
    names = [
        [e["path"] for e in vk_json(cfg, "ls", sid, SOURCE)["entries"]] for sid in (ids[0], ids[2])
    ]
    assert "gone.txt" in names[0] and "notes/f.txt" in names[0]
    assert "gone.txt" not in names[1] and "notes/f.txt" in names[1]
    missing = vk(cfg, "dump", ids[2], SOURCE, "gone.txt")
    assert missing.returncode == 1
    assert b"gone.txt" in missing.stderr


def test_dump_table_loads_into_a_scratch_database_with_equal_rows(lab: Lab, cfg: Path) -> None:
    sid = snapshot(cfg, "chatwoot-db")
    listed = vk_json(cfg, "ls", sid, "chatwoot-db")
    rows = {t["table"]: t["rows"] for t in listed["tables"]}
    assert rows[TABLE] == lab.row_counts[TABLE] > 0

    cp = vk(cfg, "dump", sid, "chatwoot-db", "--table", TABLE)
    assert cp.returncode == 0, cp.stderr.decode()
    assert b"COPY public.contacts" in cp.stdout

    c = "docker exec -i chatwoot-postgres-1"
    lab.ssh("prod", f"{c} psql -X -q -U postgres -c 'DROP DATABASE IF EXISTS {SCRATCH}'")
    lab.ssh("prod", f"{c} psql -X -q -U postgres -c 'CREATE DATABASE {SCRATCH}'")
    try:
        # the table definitions (no data, no constraints) from prod, then the dumped rows
        lab.ssh(
            "prod",
            f"{c} pg_dump -U postgres --schema-only --section=pre-data -d {lab.database}"
            f" | {c} psql -X -q -v ON_ERROR_STOP=1 -U postgres -d {SCRATCH} >/dev/null",
        )
        lab.psql("prod", cp.stdout.decode(), database_name=SCRATCH)
        # the digest of tests.lab.database.CHECKSUM_SQL, of this one table
        digest = lab.psql(
            "prod",
            "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
            f" FROM {TABLE} t",
            database_name=SCRATCH,
        )
        assert digest == lab.table_checksums("prod")[TABLE]
        count = lab.psql("prod", f"SELECT count(*) FROM {TABLE}", database_name=SCRATCH)
        assert int(count) == rows[TABLE]
    finally:
        lab.ssh("prod", f"{c} psql -X -q -U postgres -c 'DROP DATABASE IF EXISTS {SCRATCH}'")


def test_restore_into_leaves_the_live_volume_untouched(lab: Lab, cfg: Path) -> None:
    old, new = b"as in the snapshot\n", b"changed since\n"
    lab.ssh("prod", f"mkdir -p {MP}/keep && printf 'x' > {MP}/keep/other.txt")
    lab.ssh("prod", f"cat > {MP}/keep/f.txt", input=old)
    sid = snapshot(cfg)
    lab.ssh("prod", f"cat > {MP}/keep/f.txt", input=new)
    live = treesig.volume_signature(lab, "prod", VOLUME)

    cp = vk(
        cfg, "restore", sid, "--host", "prod", "--to", "prod", "--only", SOURCE,
        "--path", "keep/f.txt", "--into", INTO, "--yes",
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr.decode()
    assert treesig.volume_signature(lab, "prod", VOLUME) == live  # untouched
    got = lab.ssh_bytes("prod", f"cat {INTO}/keep/f.txt").stdout
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(old).hexdigest()
    listed = lab.ssh("prod", f"cd {INTO} && find . | sort").stdout.split()
    assert listed == [".", "./keep", "./keep/f.txt"]  # only the path asked for
