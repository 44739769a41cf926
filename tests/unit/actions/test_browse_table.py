"""`dump --table`: the pg_restore argv, the table name as data, which table a bare
name means (from the snapshot's row counts), and the local pg_restore's failures
(missing, too old, non-zero exit), with a stand-in pg_restore on PATH that
records its argv and its stdin (no PostgreSQL server here)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from vkbackup.actions import browse
from vkbackup.actions.browse import (
    SourceView,
    dump_table,
    pg_restore_argv,
    restore_table,
    split_table,
)
from vkbackup.errors import RestoreError, UsageError
from vkbackup.manifest import Manifest, ObjectRecord
from vkbackup.sources import postgres
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader
from vkbackup.transport.local import LocalTransport


def test_argv_schema_and_table() -> None:
    assert pg_restore_argv("public.contacts") == [
        "pg_restore", "--data-only", "--schema=public", "--table=contacts", "-f", "-",
    ]  # fmt: skip
    assert pg_restore_argv("contacts") == [
        "pg_restore", "--data-only", "--table=contacts", "-f", "-",
    ]  # fmt: skip
    assert split_table("app-v2.Users_1") == ("app-v2", "Users_1")


@pytest.mark.parametrize(
    "bad",
    ["--help", "x; drop table y", "a b", "", ".t", "s.", "t\x1b[2J", "s.-f", "é", "a" * 64],
)
def test_table_names_are_checked(bad: str) -> None:
    with pytest.raises(UsageError):
        pg_restore_argv(bad)


def fake_pg_restore(tmp: Path, body: str, version: str = "16.2") -> Path:
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "pg_restore"
    script.write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = --version ]; then echo "pg_restore (PostgreSQL) {version}"; exit 0; fi\n'
        f'printf "%s\\n" "$@" > {tmp}/argv\n' + body
    )
    script.chmod(0o755)
    return bindir


def test_dump_streams_into_pg_restore_and_writes_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = fake_pg_restore(
        tmp_path, f'cat > {tmp_path}/stdin; echo "COPY public.t FROM stdin;"\n'
    )
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    archive = b"PGDMP" + os.urandom(300_000)
    out = io.BytesIO()
    restore_table(BytesReader(archive), "public.t", LocalTransport(), out.write, major=15)
    assert out.getvalue() == b"COPY public.t FROM stdin;\n"
    assert (tmp_path / "stdin").read_bytes() == archive
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == ["--data-only", "--schema=public", "--table=t", "-f", "-"]


def test_missing_pg_restore_names_the_tool_and_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RestoreError) as e:
        restore_table(BytesReader(b"PGDMP"), "t", LocalTransport(), io.BytesIO().write, major=16)
    assert "pg_restore" in str(e.value)
    assert e.value.hint is not None and "postgresql-client" in e.value.hint and "16" in e.value.hint


def test_too_old_pg_restore_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = fake_pg_restore(tmp_path, "cat >/dev/null\n", version="13.4")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(RestoreError) as e:
        restore_table(BytesReader(b"PGDMP"), "t", LocalTransport(), io.BytesIO().write, major=15)
    assert "version 13" in str(e.value) and "15" in str(e.value)
    assert e.value.hint is not None and "postgresql-client" in e.value.hint


def test_pg_restore_failure_is_an_error_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (
        "head -c 10 >/dev/null\n"
        'echo "pg_restore: error: unsupported version (1.16) in file header" >&2\nexit 1\n'
    )
    bindir = fake_pg_restore(tmp_path, body)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(RestoreError) as e:
        restore_table(
            BytesReader(os.urandom(1_000_000)), "t", LocalTransport(), io.BytesIO().write, 16
        )
    assert "status 1" in str(e.value) and "unsupported version" in str(e.value)
    assert e.value.hint is not None and "postgresql-client" in e.value.hint


# -- which table a name means -----------------------------------------------------------


def db_view(counts: dict[str, int]) -> SourceView:
    meta = postgres.Meta("db-1", "app", "postgres", 16, "postgres:16", counts)
    manifest = cast("Manifest", SimpleNamespace(id="20240501T030000Z-1a2b", host="prod"))
    dump = ObjectRecord("k/dump", "app-db", "dump.pgdump.age", "pg-dump", 1, "0" * 64)
    return SourceView(manifest, "app-db", "postgres", meta, [dump])


COUNTS = {"public.contacts": 3, "archive.contacts": 1, "public.users": 2}


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """dump_table with the archive and pg_restore stood in for: the table names it
    hands pg_restore."""
    tables: list[str] = []
    monkeypatch.setattr(
        browse, "open_object", lambda *a, **k: contextlib.nullcontext(BytesReader(b""))
    )
    monkeypatch.setattr(browse, "restore_table", lambda _s, table, *a: tables.append(table))
    return tables


def run_dump(counts: dict[str, int], table: str) -> None:
    dump_table(cast("Storage", None), db_view(counts), [], table, LocalTransport(), print)


def test_a_bare_table_name_in_one_schema_is_that_schemas(restored: list[str]) -> None:
    run_dump(COUNTS, "users")
    assert restored == ["public.users"]
    assert pg_restore_argv(restored[0])[2:4] == ["--schema=public", "--table=users"]
    run_dump(COUNTS, "archive.contacts")
    assert restored[-1] == "archive.contacts"


def test_a_bare_table_name_in_several_schemas_is_refused_naming_them(
    restored: list[str],
) -> None:
    with pytest.raises(UsageError) as e:
        run_dump(COUNTS, "contacts")
    assert "archive.contacts" in str(e.value) and "public.contacts" in str(e.value)
    assert restored == []


def test_a_table_the_snapshot_does_not_have_is_refused(restored: list[str]) -> None:
    for missing in ("nope", "other.users"):
        with pytest.raises(RestoreError) as e:
            run_dump(COUNTS, missing)
        assert missing in str(e.value)
    with pytest.raises(UsageError):  # nothing counted: a bare name cannot be resolved
        run_dump({}, "users")
    run_dump({}, "public.users")
    assert restored == ["public.users"]
