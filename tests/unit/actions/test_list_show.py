"""list and show: rows from manifests, unreadable manifests, the private summary
of every source type, sealed and opened private parts, and the text forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import layout
from vkbackup.actions.list_show import (
    format_age,
    format_list,
    format_show,
    list_rows,
    show_snapshot,
    summarize_private,
)
from vkbackup.actions.verify import SnapshotVerify, write_record
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.errors import CryptoError, ObjectNotFoundError
from vkbackup.storage.local import LocalStorage

T0 = datetime(2026, 5, 1, 2, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"), (3 * 3600 + 300, "3h05m"),
     (86400 * 2 + 3600 * 4 + 59, "2d04h")],
)  # fmt: skip
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


@pytest.fixture
def ident() -> X25519Identity:
    return generate_identity()


@pytest.fixture
def storage(tmp_path: Path, ident: X25519Identity) -> LocalStorage:
    st = LocalStorage(tmp_path / "store")
    b = SnapshotBuilder(st, "box", [ident.recipient()])
    m1 = b.snapshot(T0, new={"db": b"x" * 1000, "img": b"image"})
    img = next(o for o in m1.objects if o.source == "img")
    b.snapshot(T0 + timedelta(days=1), new={"db": b"y" * 1000}, reuse={"img": [img]})
    b.snapshot(
        T0 + timedelta(days=2), new={"db": b"z"}, reuse={"img": [img]}, failed=["vol"],
        status="partial",
    )  # fmt: skip
    return st


def test_rows_count_new_reused_sources_and_verify_records(storage: LocalStorage) -> None:
    rows = list_rows(storage)
    assert [r.status for r in rows] == ["complete", "complete", "partial"]
    first, second, third = rows
    assert first.bytes_reused == 0 and first.bytes_new == first.bytes_total > 1000
    img_size = first.bytes_total - second.bytes_new
    assert second.bytes_reused == img_size == third.bytes_reused
    assert (third.sources_ok, third.sources_total) == (2, 3)
    assert all(r.last_verified is None for r in rows)
    write_record(
        storage, SnapshotVerify(host="box", id=second.id, time="2026-05-03T00:00:00Z", mode="full")
    )
    rows = list_rows(storage, "box")
    assert rows[1].last_verified is not None and rows[1].last_verified.ok
    assert rows[0].last_verified is None
    now = T0 + timedelta(days=3)
    doc = rows[1].to_json(now)
    assert doc["age_seconds"] == 2 * 86400
    assert doc["last_verified"] == {"time": "2026-05-03T00:00:00Z", "ok": True, "mode": "full",
                                    "bad": 0}  # fmt: skip
    lines = format_list(rows, now)
    assert lines[0].split()[:3] == ["ID", "HOST", "TIME"]
    assert lines[1].startswith(rows[0].id) and lines[1].rstrip().endswith("never")
    assert lines[2].rstrip().endswith("2026-05-03T00:00:00Z ok")
    assert " 2d00h " in lines[2] and " 2/3 " in lines[3] and "partial" in lines[3]


def test_an_unreadable_manifest_is_listed_with_its_error(storage: LocalStorage) -> None:
    rows = list_rows(storage)
    key = layout.manifest_key("box", rows[0].id)
    storage.root.joinpath(*key.split("/")).write_text("garbage")
    rows = list_rows(storage)
    assert rows[0].status == "unreadable"
    assert rows[0].error is not None and key in rows[0].error
    assert [r.status for r in rows[1:]] == ["complete", "partial"]
    text = format_list(rows, T0)
    assert any(key in line for line in text)


def test_empty_storage(tmp_path: Path) -> None:
    assert format_list(list_rows(LocalStorage(tmp_path)), T0) == ["no snapshots"]


def test_show_sealed_and_open(storage: LocalStorage, ident: X25519Identity) -> None:
    calls: list[int] = []

    def load() -> list[X25519Identity]:
        calls.append(1)
        return [ident]

    # an unknown id fails before any key is asked for
    with pytest.raises(ObjectNotFoundError):
        show_snapshot(storage, "2027", load_identities=load)
    assert calls == []
    sealed = show_snapshot(storage, "latest", sealed_reason="no key here")
    assert sealed.private is None and sealed.sealed == "sealed: no key here"
    text = "\n".join(format_show(sealed, T0 + timedelta(days=3)))
    assert "private part: sealed: no key here" in text
    assert f"reused from {list_rows(storage)[0].id}" in text
    assert text.startswith(f"snapshot {list_rows(storage)[1].id} of host box: complete")
    partial = show_snapshot(storage, list_rows(storage)[2].id[:18])
    assert partial.manifest.status == "partial"
    assert "    failed  files " in "\n".join(format_show(partial, T0))
    opened = show_snapshot(storage, "latest", load_identities=load)
    assert calls == [1] and opened.private is not None and opened.sealed is None
    doc = opened.to_json(T0 + timedelta(days=3))
    assert doc["private_summary"]["facts"]["os"] == "Test OS"
    assert doc["reused_from"] == [list_rows(storage)[0].id]
    with pytest.raises(CryptoError):
        show_snapshot(storage, "latest", load_identities=lambda: [generate_identity()])


def test_private_summary_of_every_source_type() -> None:
    private = {
        "host": {"address": "203.0.113.7", "port": 22, "user": "root"},
        "facts": {
            "os_release": {"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"},
            "docker_version": "24.0.7",
            "compose": "v2 2.24.1",
            "volumes": ["pgdata", "uploads"],
            "containers": [{"name": "db", "running": True}, {"name": "old", "running": False}],
            "compose_projects": {"chatwoot": {}, "visualkit": {}},
        },
        "sources": {
            "db": {
                "type": "postgres",
                "meta": {
                    "container": "chatwoot-db",
                    "database": "chatwoot",
                    "server": {"version": "15.4", "size": "1048576", "extensions": ["vector 0.5"]},
                    "row_counts": {"public.users": 10, "public.messages": 5000},
                },
                "error": None,
                "downtime_seconds": None,
            },
            "uploads": {
                "type": "docker-volume",
                "meta": {"volume": "uploads", "used_by": ["app"], "stopped": ["app"], "size": 2048},
                "error": None,
                "downtime_seconds": 3.25,
            },
            "images": {
                "type": "docker-image",
                "meta": {"images": [{"ref": "caddy:2", "id": "sha256:" + "ab" * 32}]},
                "error": None,
            },
            "etc": {
                "type": "files",
                "meta": {"files": [{"path": f"/etc/f{i}", "size": 10} for i in range(45)],
                         "secret": False},
                "error": None,
            },
            "gone": {"type": "files", "meta": {}, "error": "no file matches /srv/x*"},
        },
    }  # fmt: skip
    s = summarize_private(private)
    assert s["facts"] == {
        "os": "Debian GNU/Linux 12 (bookworm)",
        "docker": "24.0.7",
        "compose": "v2 2.24.1",
        "containers": 2,
        "running": 1,
        "volumes": 2,
        "compose_projects": ["chatwoot", "visualkit"],
    }
    db = s["sources"]["db"]
    assert (db["tables"], db["rows"], db["server_version"]) == (2, 5010, "15.4")
    assert s["sources"]["uploads"]["downtime_seconds"] == 3.25
    assert s["sources"]["images"]["images"][0]["ref"] == "caddy:2"
    assert s["sources"]["etc"]["file_bytes"] == 450
    assert s["sources"]["gone"]["error"] == "no file matches /srv/x*"

    from vkbackup.actions.list_show import _private_lines

    text = "\n".join(_private_lines(s))
    assert "PostgreSQL 15.4" in text and "2 tables, 5010 rows" in text
    assert text.index("public.messages") < text.index("public.users")  # biggest first
    assert "containers stopped for 3.2s" in text or "containers stopped for 3.3s" in text
    assert "... and 5 more" in text and "/etc/f39" in text and "/etc/f40" not in text
    assert "error: no file matches /srv/x*" in text
    assert "compose projects: chatwoot, visualkit" in text
    assert "used by app; stopped app" in text  # a snapshot from before quiesce: stopped


@pytest.mark.parametrize(
    ("quiesce", "held"),
    [("pause", "paused app"), ("stop", "stopped app"), ("none", "held nothing (quiesce = none)")],
)
def test_a_volume_says_what_was_held_as_its_quiesce_says(quiesce: str, held: str) -> None:
    from vkbackup.actions.list_show import _private_lines

    meta = {
        "volume": "uploads",
        "used_by": ["app"],
        "stopped": [] if quiesce == "none" else ["app"],
        "quiesce": quiesce,
        "size": 2048,
    }
    private = {"sources": {"uploads": {"type": "docker-volume", "meta": meta, "error": None}}}
    text = "\n".join(_private_lines(summarize_private(private)))
    assert f"volume uploads, 2.0 KiB; used by app; {held}" in text
