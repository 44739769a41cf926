"""Issue 16: a reused database dump is never stale, against the lab's real PostgreSQL.

vkbackup/sources/postgres.py references the previous dump when the cluster's state
(txid_current_snapshot with no transaction listed in progress, xmin == xmax, plus a
digest of every sequence) is the same as when that dump was taken. Each test here
first proves the database is quiet (a second snapshot reuses the first one's dump),
then makes one change that a dump can show and asserts that the next snapshot dumps
again (bytes_new > 0, nothing reused):

    - a single `nextval` inside the sequence's pre-logged range (no transaction id is
      given: proved by txid_current_if_assigned() in its transaction; only the
      sequence digest can see it);
    - `setval`; `ALTER SEQUENCE ... RESTART`; DDL (CREATE TABLE);
    - a write transaction open at the state check while a later one has committed
      (it is listed as running: xmin < xmax), and again after it commits;
    - a write transaction holding the newest id, open across the snapshot: it is not
      listed (xmax is one past the latest *completed* id), so the dump may be reused,
      which is sound (the same MVCC snapshot); asserted: the snapshot never holds the
      uncommitted row, and the snapshot after its commit dumps again;
    - a transaction that commits while the reused dump's row counts are being taken
      (the counting blocks on a lock the committing transaction holds, so the commit
      lands in the middle of the count, deterministically).

And one case that may (and must) reuse: a long read-only transaction open across the
snapshot (it holds no transaction id and changes nothing).

Every object the tests create on prod (a sequence, tables) is dropped afterwards, so
prod's row counts stay the seeded ones.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_reliability import config_file, lab_cfg
from tests.lab.api import Lab
from vkbackup import catalog
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.crypto import load_identity_file
from vkbackup.manifest import open_private
from vkbackup.sources import postgres
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import Readable
from vkbackup.transport.base import Completed, Process, Transport
from vkbackup.transport.ssh import connect

SOURCE = "chatwoot-db"
SEQ = "public.vk_reuse_seq"
TABLE = "public.vk_reuse_rows"
DDL_TABLE = "public.vk_reuse_ddl"
PSQL = "psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -d "


class Session:
    """One psql session in prod's database container, kept open between statements
    (stdin and stdout piped over SSH; never a pty)."""

    def __init__(self, lab: Lab, app: str) -> None:
        cmd = f"docker exec -i -e PGAPPNAME={app} chatwoot-postgres-1 {PSQL}{lab.database}"
        self.proc = subprocess.Popen(
            [*lab.ssh_argv("prod"), cmd],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.marks = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def run(self, sql: str, timeout: float = 60) -> list[str]:
        """Send *sql*, wait until psql has executed it; return the output lines."""
        self.marks += 1
        mark = f"__vk_mark_{self.marks}__"
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{sql}\nSELECT '{mark}';\n")
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"psql on prod did not answer {sql!r} in {timeout:.0f}s")
            if line is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                pytest.fail(f"psql on prod ended during {sql!r}: {err}")
            if line == mark:
                return out
            out.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # psql ends at EOF: an open transaction rolls back
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def backend_of(lab: Lab, app: str) -> dict[str, str]:
    """pg_stat_activity of the one session named *app* (its application_name)."""
    out = lab.psql(
        "prod",
        "SELECT state || '|' || coalesce(backend_xid::text, '') || '|' || "
        "coalesce(backend_xmin::text, '') FROM pg_stat_activity "
        f"WHERE application_name = '{app}';",
    )
    rows = out.splitlines()
    assert len(rows) == 1, rows
    state, xid, xmin = rows[0].split("|")
    return {"state": state, "xid": xid, "xmin": xmin}


def others_hold_xids(lab: Lab) -> bool:
    """Whether a session other than this query's holds a transaction id now."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid();"
    )
    return lab.psql("prod", sql, database_name="postgres") != "0"


def xmax(lab: Lab) -> int:
    return int(lab.psql("prod", "SELECT txid_snapshot_xmax(txid_current_snapshot());"))


def snapshot(lab: Lab, cfg: Path) -> dict[str, Any]:
    """`vkbackup snapshot prod --only chatwoot-db --json`: the database source's result,
    with the snapshot id and the row counts its manifest recorded."""
    cp = subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), "snapshot", "prod",
         "--only", SOURCE, "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert cp.returncode in (0, 3), cp.stdout + cp.stderr  # 3: partial (--only)
    doc = json.loads(cp.stdout)
    (src,) = [s for s in doc["sources"] if s["name"] == SOURCE]
    assert src["status"] == "ok", src
    counts, dump_key = recorded(lab, cfg.parent / "store", doc["id"])
    return {**src, "id": doc["id"], "row_counts": counts, "dump_key": dump_key}


def recorded(lab: Lab, store: Path, snapshot_id: str) -> tuple[dict[str, int], str]:
    """The row counts a snapshot's manifest recorded for the database, and its dump's key."""
    m = catalog.load_manifest(LocalStorage(store), "prod", snapshot_id)
    private = open_private(m, load_identity_file(lab.identity))
    counts: dict[str, int] = private["sources"][SOURCE]["meta"]["row_counts"]
    (dump,) = [o.key for o in m.objects if o.source == SOURCE and o.role == "pg-dump"]
    return counts, dump


def assert_dumped(src: dict[str, Any]) -> None:
    assert src["bytes_new"] > 100_000 and src["bytes_reused"] == 0, src


def assert_reused(src: dict[str, Any]) -> None:
    assert src["bytes_new"] == 0 and src["bytes_reused"] > 100_000, src


def quiet(lab: Lab, cfg: Path) -> dict[str, Any]:
    """Take snapshots until one reuses the previous one's dump, and return it: the
    database is quiet, the precondition of every case. The first may dump (after a
    change, or in an empty storage); a few more are allowed for background work
    that takes a transaction id (autovacuum's ANALYZE), which the fixture's
    VACUUM ANALYZE leaves none of."""
    snapshot(lab, cfg)
    tries: list[dict[str, Any]] = []
    for _ in range(4):
        tries.append(snapshot(lab, cfg))
        if tries[-1]["bytes_new"] == 0:
            assert_reused(tries[-1])
            return tries[-1]
    pytest.fail(f"the database never stayed quiet between two snapshots: {tries}")


@pytest.fixture(scope="module")
def cfg(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The lab config on a storage of its own, and the test's objects on prod (created
    before any snapshot, dropped at the end)."""
    d = tmp_path_factory.mktemp("db-reuse")
    lab.psql(
        "prod",
        f"DROP TABLE IF EXISTS {TABLE}, {DDL_TABLE}; DROP SEQUENCE IF EXISTS {SEQ};"
        f"CREATE SEQUENCE {SEQ}; CREATE TABLE {TABLE} (id int PRIMARY KEY, note text);"
        # nothing left for autovacuum to do (its ANALYZE takes a transaction id)
        "VACUUM ANALYZE;",
        timeout=300,
    )
    try:
        yield config_file(lab, d / "store", d / "vkbackup.toml")
    finally:
        lab.psql("prod", f"DROP TABLE IF EXISTS {TABLE}, {DDL_TABLE}; DROP SEQUENCE {SEQ};")
        assert lab.table_row_counts("prod") == lab.row_counts


def test_nextval_inside_the_prelogged_range_dumps_again(lab: Lab, cfg: Path) -> None:
    # nextval WAL-logs (and takes a transaction id) once per 32 values, and again on
    # the first call after a checkpoint. So: a checkpoint (the next timed one is 5 min
    # away), a logging nextval, then the quiet snapshots; the next nextval is in the
    # pre-logged range.
    lab.psql("prod", f"CHECKPOINT; SELECT nextval('{SEQ}');")
    quiet(lab, cfg)
    got = lab.psql(
        "prod",
        f"BEGIN; SELECT nextval('{SEQ}'); "
        "SELECT coalesce(txid_current_if_assigned()::text, 'no id'); COMMIT;",
    )
    assert got.splitlines() == ["2", "no id"], f"that nextval was given a transaction id: {got}"
    assert_dumped(snapshot(lab, cfg))


def test_setval_dumps_again(lab: Lab, cfg: Path) -> None:
    quiet(lab, cfg)
    lab.psql("prod", f"SELECT setval('{SEQ}', 1000);")
    assert_dumped(snapshot(lab, cfg))


def test_alter_sequence_restart_dumps_again(lab: Lab, cfg: Path) -> None:
    lab.psql("prod", f"SELECT setval('{SEQ}', 7);")
    quiet(lab, cfg)
    # RESTART WITH the current value: last_value stays 7, only is_called changes
    lab.psql("prod", f"ALTER SEQUENCE {SEQ} RESTART WITH 7;")
    assert_dumped(snapshot(lab, cfg))
    assert lab.psql("prod", f"SELECT nextval('{SEQ}');") == "7"


def test_create_table_dumps_again(lab: Lab, cfg: Path) -> None:
    quiet(lab, cfg)
    lab.psql("prod", f"CREATE TABLE {DDL_TABLE} (id int);")
    src = snapshot(lab, cfg)
    assert_dumped(src)
    assert src["row_counts"][DDL_TABLE] == 0
    lab.psql("prod", f"DROP TABLE {DDL_TABLE};")


def test_open_write_transaction_never_shows_and_its_commit_dumps_again(lab: Lab, cfg: Path) -> None:
    """A transaction that inserted a row and holds the newest transaction id stays open
    across a snapshot. txid_current_snapshot() does not list it (its xmax is one past
    the latest *completed* id, so xmin == xmax still), so the earlier dump may be
    referenced: that is sound, since the same MVCC snapshot (every id below xmax
    completed, nothing completed since) shows exactly what the earlier dump holds.
    What must hold either way: the snapshot does not contain the uncommitted row, and
    once it commits the next snapshot dumps again and holds it."""
    before = quiet(lab, cfg)
    s = Session(lab, "vk-open-tx")
    try:
        s.run(f"BEGIN; INSERT INTO {TABLE} VALUES (1, 'open-tx');")
        b = backend_of(lab, "vk-open-tx")
        assert b["state"] == "idle in transaction" and b["xid"], b  # holds an id, uncommitted
        during = snapshot(lab, cfg)
        assert during["row_counts"][TABLE] == 0  # the uncommitted row is not in it
        if during["bytes_new"] == 0:  # referenced: the very dump the quiet snapshot had
            assert_reused(during)
            assert during["dump_key"] == before["dump_key"]
        else:
            assert_dumped(during)
        assert backend_of(lab, "vk-open-tx")["state"] == "idle in transaction"  # still open
        s.run("COMMIT;")
    finally:
        s.close()
    after = snapshot(lab, cfg)
    assert_dumped(after)
    assert after["row_counts"][TABLE] == 1
    lab.psql("prod", f"DELETE FROM {TABLE};")


def test_write_transaction_running_at_the_state_check_dumps_again(lab: Lab, cfg: Path) -> None:
    """An open write transaction older than one that commits after it: the state check
    sees it running (xmin < xmax), so the snapshot dumps, whatever the earlier state
    was; the dump holds the committed row, not the open one. After the open one
    commits, the next snapshot dumps again and holds both."""
    quiet(lab, cfg)
    s = Session(lab, "vk-open-tx")
    try:
        s.run(f"BEGIN; INSERT INTO {TABLE} VALUES (1, 'open-tx');")
        lab.psql("prod", f"INSERT INTO {TABLE} VALUES (2, 'committed');")
        xmin, xmax_, _ = lab.psql("prod", "SELECT txid_current_snapshot();").split(":")
        assert int(xmin) < int(xmax_), "the open transaction is not listed as running"
        during = snapshot(lab, cfg)
        assert_dumped(during)
        assert during["row_counts"][TABLE] == 1
        s.run("COMMIT;")
    finally:
        s.close()
    after = snapshot(lab, cfg)
    assert_dumped(after)
    assert after["row_counts"][TABLE] == 2
    lab.psql("prod", f"DELETE FROM {TABLE};")


def test_long_read_only_transaction_open_across_the_snapshot_reuses(lab: Lab, cfg: Path) -> None:
    """A REPEATABLE READ transaction that read a table stays open across the snapshot:
    it holds a snapshot (xmin) but no transaction id and changes nothing, so the dump
    is reused. Should another transaction holding an id (autovacuum's ANALYZE)
    overlap the state check, the attempt proves nothing (xmax moved, or it still
    runs): it is taken again (at most five times), from a quiet state."""
    s = Session(lab, "vk-ro-tx")
    try:
        counted = s.run(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) AS ro_tx FROM messages;"
        )
        assert counted == [str(lab.row_counts["public.messages"])]
        b = backend_of(lab, "vk-ro-tx")
        # open, holding a snapshot (xmin) but no transaction id
        assert b["state"] == "idle in transaction" and b["xmin"] and not b["xid"], b
        for _ in range(5):
            quiet(lab, cfg)
            before = xmax(lab)
            src = snapshot(lab, cfg)
            if src["bytes_new"] == 0:
                break
            # a fresh dump is right only when another transaction holding an id
            # overlapped the state check: it has completed since (xmax moved) or it
            # still runs now (autovacuum's ANALYZE, say); else it is the bug
            if xmax(lab) == before and not others_hold_xids(lab):
                break
        else:
            pytest.fail("other transactions kept running during every snapshot")
        assert_reused(src)
        assert backend_of(lab, "vk-ro-tx")["state"] == "idle in transaction"  # still open
        s.run("COMMIT;")
    finally:
        s.close()


class _CountHook:
    """A Transport wrapper that calls *before_counts* right before the command that
    re-counts the rows of a database whose dump is about to be reused (the probe
    running COUNTS_SQL then the state query)."""

    def __init__(self, inner: Transport, before_counts: Callable[[], None]) -> None:
        self.inner = inner
        self.before_counts = before_counts

    @property
    def name(self) -> str:
        return self.inner.name

    def start(self, argv: list[str]) -> Process:
        return self.inner.start(argv)

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        # probe_argv(COUNTS_SQL): the SQL is shell-quoted inside `sh -c`, so match words
        if any("query_to_xml" in a and postgres.STATE_MARK in a for a in argv):
            self.before_counts()
        return self.inner.run(argv, input=input, check=check, timeout=timeout)

    def feed(self, argv: list[str], src: Readable) -> Completed:
        return self.inner.feed(argv, src)

    def close(self) -> None:
        self.inner.close()


def test_commit_while_counting_for_a_reused_dump_dumps_again(
    lab: Lab, cfg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fingerprint matched (nothing ran, nothing moved) so the earlier dump is about
    to be reused; its row counts are re-taken, and a transaction commits while they
    are counted. The state read after counting sees it: a fresh dump is taken.

    Deterministic: right before the counting command starts, a session takes an ACCESS
    EXCLUSIVE lock on public.accounts, so the count blocks there; once PostgreSQL shows
    the counting backend waiting on that lock, the session inserts a row and commits."""
    store = cfg.parent / "store"
    config = lab_cfg(lab, store, sources=[SOURCE])  # the same storage as the CLI runs
    quiet(lab, cfg)
    locker = Session(lab, "vk-locker")
    fired: list[str] = []
    committer: list[threading.Thread] = []

    def commit_once_counting_waits() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = lab.psql(
                "prod",
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%query_to_xml%' AND pid <> pg_backend_pid();",
            )
            if waiting == "1":
                locker.run(f"INSERT INTO {TABLE} VALUES (2, 'while-counting'); COMMIT;")
                fired.append("committed while counting")
                return
            time.sleep(0.05)
        locker.run("ROLLBACK;")

    def before_counts() -> None:
        assert not fired, "counted twice"
        fired.append("counting")
        locker.run("BEGIN; LOCK TABLE public.accounts IN ACCESS EXCLUSIVE MODE;")
        t = threading.Thread(target=commit_once_counting_waits, daemon=True)
        t.start()
        committer.append(t)

    def hooked(host: Any) -> Transport:
        return _CountHook(connect(host), before_counts)

    try:
        with caplog.at_level(logging.INFO, logger="vkbackup"):
            r = run_snapshot(config, "prod", storage=LocalStorage(store), connect=hooked)
        for t in committer:
            t.join(60)
    finally:
        locker.close()
    assert fired == ["counting", "committed while counting"], fired
    assert r.status == "complete", r.to_json()
    (src,) = r.to_json()["sources"]
    assert_dumped(src)
    assert f"database {lab.database} changed while counting" in caplog.text
    assert recorded(lab, store, r.id)[0][TABLE] == 1  # the fresh dump holds the commit
    lab.psql("prod", f"DELETE FROM {TABLE};")
