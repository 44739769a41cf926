"""`dump --table`: the pg_restore argv, the table name as data, and the local
pg_restore's failures (missing, too old, non-zero exit), with a stand-in pg_restore
on PATH that records its argv and its stdin (no PostgreSQL server here)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from vkbackup.actions.browse import pg_restore_argv, restore_table, split_table
from vkbackup.errors import RestoreError, UsageError
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
