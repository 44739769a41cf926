"""Benchmark: point-in-time recovery on the lab (issue 21): what `vkbackup wal-stream`
costs on the backup machine, the load it adds on prod, and the RTO of a restore from
the base backup (+ WAL) beside the normal restore from pg_dump, in one run.

Usage (as root, the lab up; see tests/lab/README.md):
    .venv/bin/python benchmarks/pitr.py [--seconds 60] [--rate-mib 4] [--scale N] [--keep-scale]

Setup, in a temporary directory, with the helpers of tests/e2e/test_pitr.py: the
lab's config with `pitr = true` on chatwoot-db and a [pitr] table (max_lag 10 s,
base_every_days the default) over a new empty local storage (`pitr_config`);
prod's database prepared with exactly what `vkbackup init --pitr` prints
(`prepare_prod`); a table bench_pitr_load on prod (autovacuum off). With --scale,
prod is first reseeded at that scale (`reset-prod`) and put back to the scale it
had at the end (not with --keep-scale).

The load: one psql session on prod (ssh, `docker exec -i ... psql`) gets one INSERT
a second of rows with a 1 KiB text payload, as many rows as make --rate-mib MiB of
WAL: the WAL bytes per row are measured first with one INSERT of 4000 rows
(pg_wal_lsn_diff). The WAL a phase really generated is pg_current_wal_lsn() after
the load minus before. A CHECKPOINT precedes each phase, so both start alike.

1. without: the load for --seconds, no stream (and no replication slot yet).
2. with: `vkbackup wal-stream` started as the e2e tests start it (a subprocess),
   up ("receiving from" in its log) and settled for max_lag + 2 s; then the same
   load. On this machine, every 0.5 s, the VmRSS of the stream's process and of
   every process under it (pg_receivewal), found by scanning /proc/*/stat for
   parents; their CPU (utime + stime of /proc/PID/stat; for the children also
   what the parent reaped, so a pg_receivewal that exited still counts) at the
   start of the load, at its end, and once the stored WAL reached prod's flush LSN
   at the end of the load. The lag is the store time (the WAL record's `time`) of
   the first object that reaches that LSN, minus the end of the load (a partial is
   stored without its trailing zero bytes, so "reaches" allows 256 bytes short).
   On prod, for both phases, before and after the load: every process's
   /proc/PID/stat and process title (cmdline up to its first NUL), read in one
   `ssh prod bash -s`, which sees the processes of the containers inside prod too.
   "all" = the sum of utime + stime + cutime + cstime over every process (what
   exits in between still counts through its parent); the walsender (cmdline
   "postgres: walsender ..."); sshd (own CPU of the processes named sshd*: the
   listener and the live sessions, the stream's among them). As a cross-check, the
   lab's cgroup counters of prod (benchmarks/run.py's Probe: prod.host = the host
   container's own processes, prod.ctr = the containers in it; prod.proxy = the
   loopback docker-proxy in front of prod's sshd, a lab artefact).
3. snapshot: the load's table dropped, then `vkbackup snapshot prod` while the
   stream runs (the base backup and the pg_dump of the lab's database); the stream
   is stopped (SIGTERM) max_lag + 2 s later. The base backup is taken after the
   stream started on purpose: a restore to a time replays the WAL from the base
   backup on, and the WAL of phase 1 was never streamed.
4. RTO: `reset-fresh`, then `vkbackup --config CFG restore --to fresh --host prod
   --yes --json` (the database from pg_dump); `reset-fresh` again, then the same
   with `--to-time latest` (the base backup + the WAL after it). From each report:
   rto_seconds, the database step (database:*) and the start of the database's
   container (start:*, titled "... (database)").

Cleanup, whatever failed: the stream stopped (killed after 120 s), the load stopped,
the table dropped, prod unprepared as the e2e tests do (slot, role, pg_hba line),
the spool directory removed.

Output: a compact table on stdout, and benchmarks/results/<stamp>-pitr.json (every
number, the command line, the commit, the error of every phase that failed). A
harness: it asserts nothing; a phase that fails is recorded and the rest goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from run import Probe  # noqa: E402  (benchmarks/run.py, beside this file)

from tests.e2e.test_pitr import (  # noqa: E402
    DB,
    PG,
    Stream,
    pitr_config,
    prepare_prod,
    start_stream,
    unprepare_prod,
)
from tests.lab import lab as labctl  # noqa: E402
from tests.lab.api import Lab, get_lab  # noqa: E402
from vkbackup.errors import VkError  # noqa: E402
from vkbackup.pitr import wal  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
VKBACKUP = [sys.executable, "-m", "vkbackup"]
TABLE = "bench_pitr_load"
MAX_LAG = 10  # seconds: [pitr] max_lag of the benchmark's config
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
CALIBRATION_ROWS = 4000
FALLBACK_ROW_WAL = 1200.0  # WAL bytes per row, should the calibration fail
SAMPLE_EVERY = 0.5
COVER_SLACK = 256  # bytes a stored partial may end short of the LSN it reaches
COVER_TIMEOUT = 3 * MAX_LAG + 30

# every process of prod: its stat line, a tab, its cmdline up to the first NUL
PROC_SCRIPT = r"""
exec 2>/dev/null
cd /proc || exit 1
for p in [0-9]*; do
  read -r s < "$p/stat" || continue
  c=
  IFS= read -r -d '' c < "$p/cmdline"
  printf '%s\t%s\n' "$s" "$c"
done
exit 0
"""


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[pitr {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """One process as /proc/PID/stat shows it; CPU in seconds."""

    pid: int
    comm: str
    ppid: int
    start: int  # starttime (clock ticks after boot): with the pid, names one process
    cpu: float  # utime + stime
    reaped: float  # cutime + cstime: the children it waited for
    cmd: str = ""


def parse_stat(line: str, cmd: str = "") -> Proc | None:
    """The Proc of one /proc/PID/stat line (None when it is not one)."""
    head, sep, rest = line.rpartition(")")
    pid, _, comm = head.partition(" (")
    f = rest.split()
    if not sep or len(f) < 20 or not pid.strip().isdigit():
        return None
    cpu = (int(f[11]) + int(f[12])) / CLK_TCK
    reaped = (int(f[13]) + int(f[14])) / CLK_TCK
    return Proc(int(pid), comm, int(f[1]), int(f[19]), cpu, reaped, cmd)


def local_procs() -> dict[int, Proc]:
    """Every process of this machine, by pid."""
    out: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                p = parse_stat(Path(f"/proc/{entry}/stat").read_text())
            except OSError:
                continue
            if p is not None:
                out[p.pid] = p
    return out


def local_tree(root: int) -> list[Proc]:
    """*root* (first) and every live process under it; empty when *root* is gone."""
    procs = local_procs()
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    out: list[Proc] = []
    todo = [root]
    while todo:
        pid = todo.pop(0)
        if pid in procs:
            out.append(procs[pid])
            todo.extend(kids.get(pid, []))
    return out


def status_kib(pid: int, key: str) -> int:
    """A /proc/PID/status value in KiB (VmRSS, VmHWM); 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class TreeCpu:
    """CPU seconds so far of the stream's process tree, read at *t* (monotonic)."""

    t: float
    own: float  # the vkbackup process, every thread
    reaped: float  # the children it waited for
    children: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> comm, cpu


def tree_cpu(root: int) -> TreeCpu | None:
    """The CPU of *root*'s tree now (None when *root* is gone)."""
    tree = local_tree(root)
    if not tree:
        return None
    top = tree[0]
    kids = {p.pid: (p.comm, p.cpu) for p in tree[1:]}
    return TreeCpu(time.monotonic(), top.cpu, top.reaped, kids)


def cpu_delta(a: TreeCpu | None, b: TreeCpu | None) -> dict[str, Any]:
    """CPU seconds from *a* to *b*: the vkbackup process, its children (the live ones'
    growth, plus what it reaped minus what the reaped ones had at *a*), the total."""
    if a is None or b is None:
        return {"error": "the stream's process was gone"}
    kids = sum(cpu - a.children.get(pid, ("", 0.0))[1] for pid, (_, cpu) in b.children.items())
    gone = sum(cpu for pid, (_, cpu) in a.children.items() if pid not in b.children)
    kids += (b.reaped - a.reaped) - gone
    own = b.own - a.own
    wall = b.t - a.t
    names = sorted({c for c, _ in a.children.values()} | {c for c, _ in b.children.values()})
    return {
        "wall": wall,
        "vkbackup": own,
        "children": kids,
        "total": own + kids,
        "core_pct": 100 * (own + kids) / wall if wall > 0 else None,
        "children_names": names,
    }


class TreeSampler(threading.Thread):
    """Every SAMPLE_EVERY s, the VmRSS of the stream's process and of each process under it."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.samples: list[tuple[float, int, int]] = []  # monotonic, parent KiB, children KiB
        self.names: set[str] = set()  # the children's comm names seen
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(SAMPLE_EVERY)

    def sample(self) -> None:
        """One sample (none when the process is gone)."""
        tree = local_tree(self.root)
        if not tree:
            return
        parent = status_kib(self.root, "VmRSS")
        children = sum(status_kib(p.pid, "VmRSS") for p in tree[1:])
        self.names.update(p.comm for p in tree[1:])
        self.samples.append((time.monotonic(), parent, children))

    def peaks(self, start: float, end: float) -> dict[str, Any]:
        """Peak RSS (MiB) sampled in [start, end]: the process, its children, their sum."""
        window = [s for s in list(self.samples) if start <= s[0] <= end]
        return {
            "vkbackup_mib": max((s[1] for s in window), default=0) / 1024,
            "children_mib": max((s[2] for s in window), default=0) / 1024,
            "sum_mib": max((s[1] + s[2] for s in window), default=0) / 1024,
            "samples": len(window),
            "children_names": sorted(self.names),
        }


def prod_procs(lab: Lab) -> dict[tuple[int, int], Proc]:
    """Every process on prod (its containers' too), by (pid, starttime)."""
    text = lab.ssh("prod", "bash -s", input=PROC_SCRIPT, timeout=120).stdout
    out: dict[tuple[int, int], Proc] = {}
    for line in text.splitlines():
        stat, _, cmd = line.partition("\t")
        p = parse_stat(stat, cmd)
        if p is not None:
            out[(p.pid, p.start)] = p
    return out


def prod_delta(a: dict[tuple[int, int], Proc], b: dict[tuple[int, int], Proc]) -> dict[str, float]:
    """Prod's CPU seconds from *a* to *b*: all processes (with what they reaped), and the
    own CPU of the walsender, of sshd and of PostgreSQL's processes alive at *b*."""

    def own(match: Callable[[Proc], bool]) -> float:
        return sum(p.cpu - (a[k].cpu if k in a else 0.0) for k, p in b.items() if match(p))

    def whole(procs: dict[tuple[int, int], Proc]) -> float:
        return sum(p.cpu + p.reaped for p in procs.values())

    return {
        "all": whole(b) - whole(a),
        "walsender": own(lambda p: "walsender" in p.cmd),
        "sshd": own(lambda p: p.comm.startswith("sshd")),
        "postgres_alive": own(lambda p: p.comm == "postgres"),
        "walsenders_at_end": float(sum("walsender" in p.cmd for p in b.values())),
    }


# -- prod's database and the load --------------------------------------------------------


def insert_sql(rows: int) -> str:
    """One INSERT of *rows* rows with a 1 KiB text payload (1 KiB stays inline, not toasted)."""
    return (
        f"INSERT INTO {TABLE} (payload) "
        f"SELECT repeat(md5(random()::text), 32) FROM generate_series(1, {rows});\n"
    )


def wal_positions(lab: Lab) -> tuple[int, int]:
    """Prod's current WAL insert and flush positions."""
    out = lab.psql("prod", "SELECT pg_current_wal_lsn(), pg_current_wal_flush_lsn();")
    now, flushed = out.split("|")
    return wal.parse_lsn(now), wal.parse_lsn(flushed)


def wal_per_row(lab: Lab) -> float:
    """WAL bytes per row of the load's INSERT, from one INSERT of CALIBRATION_ROWS rows."""
    sql = (
        "SELECT pg_current_wal_lsn() AS before \\gset\n"
        + insert_sql(CALIBRATION_ROWS)
        + "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), :'before')::bigint;\n"
    )
    return int(lab.psql("prod", sql).split()[-1]) / CALIBRATION_ROWS


def run_load(lab: Lab, rows: int, seconds: int, errlog: Path) -> dict[str, Any]:
    """One INSERT of *rows* rows a second for *seconds* s into one psql session on prod;
    return once psql has run (and committed) the last one."""
    cmd = f"docker exec -i {PG} psql -X -q -v ON_ERROR_STOP=1 -U postgres -d {DB}"
    with errlog.open("a") as err:
        proc = subprocess.Popen(
            [*lab.ssh_argv("prod"), cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    t0 = time.monotonic()
    sent, code, problem = 0, None, None
    try:
        if proc.stdin is None:
            raise RuntimeError("psql has no stdin")
        for i in range(seconds):
            time.sleep(max(0.0, t0 + i - time.monotonic()))
            proc.stdin.write(insert_sql(rows))
            proc.stdin.flush()
            sent += 1
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        proc.stdin.close()
        code = proc.wait(timeout=seconds + 300)
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = f"{type(e).__name__}: {e}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    end = time.monotonic()
    return {
        "rows_per_batch": rows,
        "batches": sent,
        "rows": sent * rows,
        "psql_exit": code,
        "problem": problem,
        "seconds": end - t0,
        "drain_seconds": end - (t0 + seconds),  # psql still busy after the last second
    }


# -- the stored WAL ----------------------------------------------------------------------


def stored_records(storage: Path, seen: dict[str, tuple[int, datetime]]) -> None:
    """Add to *seen* (key@size -> end LSN, store time) every segment record in *storage*."""
    root = storage / "wal"
    if not root.exists():
        return
    for path in root.rglob("*.json"):
        key = path.relative_to(storage).as_posix()
        try:
            rec = wal.WalRecord.decode(path.read_bytes(), key)
        except (OSError, ValueError, VkError):
            continue  # being replaced, or not a record
        if rec.kind != "history":
            seen.setdefault(f"{key}@{rec.plain_size}", (rec.end_lsn, rec.time))


def wait_stored(storage: Path, lsn: int, timeout: float) -> datetime | None:
    """When the first stored WAL object reaching *lsn* was stored (its record's time);
    None when none does within *timeout* s."""
    seen: dict[str, tuple[int, datetime]] = {}
    deadline = time.monotonic() + timeout
    while True:
        stored_records(storage, seen)
        hits = [t for end, t in seen.values() if end >= lsn - COVER_SLACK]
        if hits:
            return min(hits)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)


# -- restores ----------------------------------------------------------------------------


def restore_once(config: Path, *extra: str) -> dict[str, Any]:
    """`vkbackup restore --to fresh --host prod --yes --json EXTRA`, summed up."""
    argv = [*VKBACKUP, "--config", str(config), "restore", "--to", "fresh", "--host", "prod",
            "--yes", "--json", *extra]  # fmt: skip
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=7200, check=False)
    wall = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict[str, Any] = {
        "command": shlex.join(argv[1:]),
        "exit": cp.returncode,
        "wall": wall,
        "cpu_here": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }
    try:
        report: dict[str, Any] = json.loads(cp.stdout)
    except ValueError:
        out["error"] = (cp.stdout[-1500:] + cp.stderr[-3000:]).strip()
        return out
    out.update(summarize_restore(report))
    if cp.returncode != 0:
        out["stderr_tail"] = cp.stderr[-3000:]
    return out


def summarize_restore(report: dict[str, Any]) -> dict[str, Any]:
    """RTO, the database step(s) and the database container's start step of a report."""
    steps: list[dict[str, Any]] = list(report.get("steps") or [])
    db = [s for s in steps if str(s.get("id", "")).startswith("database:")]
    starts = [s for s in steps if str(s.get("id", "")).startswith("start:")]
    db_start = [s for s in starts if "(database)" in str(s.get("title", ""))]
    if not db_start:
        db_start = [s for s in starts if "postgres" in str(s.get("id", ""))][:1]
    return {
        "status": report.get("status"),
        "rto_seconds": report.get("rto_seconds"),
        "recovered_age_seconds": report.get("recovered_age_seconds"),
        "database_seconds": sum(float(s.get("seconds", 0.0)) for s in db) if db else None,
        "database_steps": {s["id"]: s.get("seconds") for s in db},
        "database_detail": [s.get("detail", "") for s in db],
        "db_start_seconds": (
            sum(float(s.get("seconds", 0.0)) for s in db_start) if db_start else None
        ),
        "db_start_steps": {s["id"]: s.get("seconds") for s in db_start},
        "steps": [[s.get(k) for k in ("id", "started", "seconds", "status")] for s in steps],
        "error": report.get("error"),
    }


# -- the run -----------------------------------------------------------------------------


class Bench:
    """One run: the lab, the temporary directory, the results document."""

    def __init__(self, lab: Lab, tmp: Path, args: argparse.Namespace, doc: dict[str, Any]) -> None:
        self.lab = lab
        self.tmp = tmp
        self.args = args
        self.doc = doc
        self.config = tmp / "vk.toml"
        self.storage = tmp / "storage"
        self.spool: Path | None = None
        self.rows = 1
        self.stream: Stream | None = None
        self.sampler: TreeSampler | None = None
        self.probe: Probe | None = None
        self.save: Callable[[], None] = lambda: None

    # plumbing --------------------------------------------------------------------------

    def attempt(self, name: str, fn: Callable[[], Any]) -> bool:
        """Run phase *name*; record what it returns, or its error; True when it ran."""
        log(name)
        t0 = time.monotonic()
        try:
            value = fn()
            if value is not None:
                self.doc["phases"][name] = value
            ok = True
        except (Exception, KeyboardInterrupt) as e:
            tail = traceback.format_exc()[-3000:]
            self.doc["errors"].append({"phase": name, "error": repr(e)[:2000], "trace": tail})
            log(f"{name} failed: {e!r}"[:500])
            if isinstance(e, KeyboardInterrupt):
                raise
            ok = False
        self.doc["phase_seconds"][name] = round(time.monotonic() - t0, 1)
        self.save()
        return ok

    def psql(self, sql: str, db: str = DB) -> str:
        """SQL on prod's database."""
        return self.lab.psql("prod", sql, database_name=db)

    def reading(self) -> tuple[dict[tuple[int, int], Proc], dict[str, float], float]:
        """Prod's processes, the lab's cgroup counters, the time."""
        counters = self.probe.read() if self.probe is not None else {}
        return prod_procs(self.lab), counters, time.monotonic()

    def prod_numbers(
        self,
        a: tuple[dict[tuple[int, int], Proc], dict[str, float], float],
        b: tuple[dict[tuple[int, int], Proc], dict[str, float], float],
    ) -> dict[str, Any]:
        """Prod's CPU between two readings, with the cgroup counters' deltas."""
        out: dict[str, Any] = dict(prod_delta(a[0], b[0]))
        out["wall"] = b[2] - a[2]
        out["cgroups"] = {k: b[1][k] - a[1][k] for k in b[1] if k in a[1]}
        host, ctr = out["cgroups"].get("prod.host"), out["cgroups"].get("prod.ctr")
        out["cgroup_prod"] = host + ctr if host is not None and ctr is not None else None
        return out

    # phases ----------------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        """Config, prod prepared as `init --pitr` says, the load's table."""
        unprepare_prod(self.lab)  # whatever an earlier run left
        self.psql(
            f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, "
            "payload text NOT NULL) WITH (autovacuum_enabled = false);"
        )
        self.config = pitr_config(self.lab, self.tmp)
        text = re.sub(
            r'(?m)^max_lag = ".*"$', f'max_lag = "{MAX_LAG}s"', self.config.read_text(), count=1
        )
        self.config.write_text(text)
        self.spool = Path(tomllib.loads(text)["pitr"]["spool_dir"])
        prepare_prod(self.lab, self.config, self.tmp)
        try:
            self.probe = Probe(self.lab)
        except (OSError, subprocess.SubprocessError) as e:
            log(f"no cgroup counters: {e}")
        size = self.psql(f"SELECT pg_database_size('{DB}');")
        return {"database_bytes": int(size), "max_lag": MAX_LAG, "storage": str(self.storage)}

    def calibrate(self) -> dict[str, Any]:
        """Rows per INSERT for --rate-mib MiB/s of WAL."""
        per_row = FALLBACK_ROW_WAL
        try:
            per_row = wal_per_row(self.lab)
        finally:
            self.rows = max(1, round(self.args.rate_mib * MIB / per_row))
        return {"wal_bytes_per_row": per_row, "rows_per_second": self.rows}

    def load_phase(self, with_stream: bool) -> dict[str, Any]:
        """The load for --seconds with prod measured (and the stream, *with_stream*)."""
        root = self.stream.proc.pid if with_stream and self.stream is not None else None
        self.psql("CHECKPOINT;")
        before = self.reading()
        lsn0, _ = wal_positions(self.lab)
        cpu0 = tree_cpu(root) if root is not None else None
        mono0 = time.monotonic()
        load = run_load(self.lab, self.rows, self.args.seconds, self.tmp / "load.stderr")
        mono1, wall1 = time.monotonic(), datetime.now(UTC)
        cpu1 = tree_cpu(root) if root is not None else None
        lsn1, flushed = wal_positions(self.lab)
        after = self.reading()
        seconds = mono1 - mono0
        out: dict[str, Any] = {
            "load": load,
            "wal_bytes": lsn1 - lsn0,
            "wal_mib": (lsn1 - lsn0) / MIB,
            "wal_mib_per_s": (lsn1 - lsn0) / MIB / seconds if seconds > 0 else None,
            "prod": self.prod_numbers(before, after),
        }
        if root is not None:
            out["stream"] = self.stream_numbers(root, cpu0, cpu1, mono0, wall1, flushed)
        return out

    def stream_numbers(
        self,
        root: int,
        cpu0: TreeCpu | None,
        cpu1: TreeCpu | None,
        mono0: float,
        load_end: datetime,
        flushed: int,
    ) -> dict[str, Any]:
        """The stream's lag, CPU and peak RSS over the load and until its WAL was stored."""
        stored_at = wait_stored(self.storage, flushed, COVER_TIMEOUT)
        cpu2 = tree_cpu(root)
        mono2 = time.monotonic()
        lag = (stored_at - load_end).total_seconds() if stored_at is not None else None
        sampler = self.sampler
        return {
            "lag_seconds": lag,
            "flush_lsn_at_load_end": wal.format_lsn(flushed),
            "cpu_load": cpu_delta(cpu0, cpu1),
            "cpu_until_stored": cpu_delta(cpu0, cpu2),
            "rss_load": sampler.peaks(mono0, mono2) if sampler is not None else None,
        }

    def begin_stream(self) -> dict[str, Any]:
        """`vkbackup wal-stream`, up and settled; its RSS sampled from now on."""
        t0 = time.monotonic()
        self.stream = start_stream(self.config, self.tmp)
        self.sampler = TreeSampler(self.stream.proc.pid)
        self.sampler.start()
        while "receiving from" not in self.stream.log.read_text():
            if self.stream.proc.poll() is not None or time.monotonic() - t0 > 120:
                tail = self.stream.log.read_text()[-2000:]
                raise RuntimeError(f"wal-stream did not come up:\n{tail}")
            time.sleep(0.5)
        up = time.monotonic() - t0
        time.sleep(MAX_LAG + 2)
        return {"up_seconds": up, "pid": self.stream.proc.pid}

    def take_snapshot(self) -> dict[str, Any]:
        """The load's table dropped, then a snapshot (base backup and pg_dump), the stream on."""
        self.psql(f"DROP TABLE IF EXISTS {TABLE};")
        argv = [*VKBACKUP, "--config", str(self.config), "snapshot", "prod"]
        t0 = time.monotonic()
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=7200, check=False)
        out: dict[str, Any] = {"exit": cp.returncode, "seconds": time.monotonic() - t0}
        out["database_bytes"] = int(self.psql(f"SELECT pg_database_size('{DB}');"))
        if cp.returncode != 0:
            raise RuntimeError(f"snapshot: exit {cp.returncode}\n{cp.stderr[-3000:]}")
        if self.stream is not None:
            time.sleep(MAX_LAG + 2)  # the WAL after the base backup reaches storage
        return out

    def stop_stream(self) -> dict[str, Any] | None:
        """SIGTERM to the stream (its CPU read just before); kill after 120 s."""
        stream, self.stream = self.stream, None
        if stream is None:
            return None
        pid = stream.proc.pid
        final = tree_cpu(pid)
        hwm = status_kib(pid, "VmHWM") / 1024
        stream.proc.send_signal(signal.SIGTERM)
        try:
            code: int | str = stream.proc.wait(120)
        except subprocess.TimeoutExpired:
            stream.proc.kill()
            stream.proc.wait()
            code = "killed after 120 s"
        if self.sampler is not None:
            self.sampler.stop_event.set()
            self.sampler.join(5)
        text = stream.log.read_text(errors="replace")
        lifetime = None
        if final is not None:
            lifetime = final.own + final.reaped + sum(c for _, c in final.children.values())
        return {
            "exit": code,
            "cpu_lifetime": lifetime,
            "vkbackup_vmhwm_mib": hwm,
            "sessions": text.count("receiving from"),
            "retries": text.count("trying again"),
            "segments_stored": len(re.findall(r": stored [0-9A-F]{24}\b", text)),
            "log_tail": text.splitlines()[-40:],
        }

    def rto(self) -> dict[str, Any]:
        """reset-fresh + the pg_dump restore; reset-fresh + the restore to `latest`."""
        out: dict[str, Any] = {}
        for name, extra in (("pg_dump", ()), ("base_backup", ("--to-time", "latest"))):
            try:
                out[name] = {"reset_fresh_seconds": self.lab.reset_fresh()}
                out[name].update(restore_once(self.config, *extra))
            except Exception as e:
                out[name] = {"error": repr(e)[:2000]}
            log(f"restore {name}: {out[name].get('status')} RTO {out[name].get('rto_seconds')}")
            self.doc["phases"]["rto"] = out
            self.save()
        return out

    # cleanup ---------------------------------------------------------------------------

    def stop_load(self) -> None:
        """End any load session still inserting on prod."""
        self.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE query LIKE 'INSERT INTO {TABLE}%' AND pid <> pg_backend_pid();"
        )

    def drop_table(self) -> None:
        """The load's table, if it is still there."""
        self.psql(f"DROP TABLE IF EXISTS {TABLE};")

    def remove_spool(self) -> None:
        """The stream's spool directory (tmpfs)."""
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)

    def cleanup(self) -> None:
        """Prod as the lab built it, whatever failed."""
        if self.stream is not None:
            self.attempt("stream_stop", self.stop_stream)
        self.attempt("cleanup: stop load", self.stop_load)
        self.attempt("cleanup: drop table", self.drop_table)
        self.attempt("cleanup: unprepare prod", lambda: unprepare_prod(self.lab))
        self.attempt("cleanup: spool", self.remove_spool)

    def run(self) -> None:
        """Every phase in order; cleanup whatever happens."""
        snapshot_ok = False
        try:
            if not self.attempt("setup", self.setup):
                return
            self.attempt("calibrate", self.calibrate)
            self.attempt("without_stream", lambda: self.load_phase(False))
            if self.attempt("stream_start", self.begin_stream):
                self.attempt("with_stream", lambda: self.load_phase(True))
            snapshot_ok = self.attempt("snapshot", self.take_snapshot)
            if self.stream is not None:
                self.attempt("stream_stop", self.stop_stream)
        finally:
            self.cleanup()
        if snapshot_ok:
            self.attempt("rto", self.rto)


# -- output ------------------------------------------------------------------------------


def dig(doc: Any, *keys: str) -> Any:
    """doc[k1][k2]..., None where one is missing."""
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    """A number formatted, or n/a."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:{spec}}{unit}"
    return "n/a"


def pct(cpu: Any, wall: Any) -> str:
    """CPU seconds as % of one core over *wall* seconds."""
    if isinstance(cpu, int | float) and isinstance(wall, int | float) and wall > 0:
        return f"{100 * cpu / wall:.1f}%"
    return "n/a"


def prod_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The prod lines of the table: without, with, difference."""
    a = dig(doc, "phases", "without_stream")
    b = dig(doc, "phases", "with_stream")

    def row(label: str, *keys: str) -> tuple[str, str, str, str]:
        x, y = dig(a, *keys), dig(b, *keys)
        wx, wy = dig(a, "prod", "wall"), dig(b, "prod", "wall")
        diff = y - x if isinstance(x, int | float) and isinstance(y, int | float) else None
        return (label, f"{fmt(x)} ({pct(x, wx)})", f"{fmt(y)} ({pct(y, wy)})", fmt(diff, "+.1f"))

    wal_x = f"{fmt(dig(a, 'wal_mib'))} ({fmt(dig(a, 'wal_mib_per_s'), '.2f')}/s)"
    wal_y = f"{fmt(dig(b, 'wal_mib'))} ({fmt(dig(b, 'wal_mib_per_s'), '.2f')}/s)"
    return [
        ("WAL generated, MiB (MiB/s)", wal_x, wal_y, ""),
        row("prod CPU s, all processes (% core)", "prod", "all"),
        row("prod CPU s, cgroups host + containers", "prod", "cgroup_prod"),
        row("prod CPU s, walsender", "prod", "walsender"),
        row("prod CPU s, sshd (live processes)", "prod", "sshd"),
        row("lab docker-proxy CPU s (artefact)", "prod", "cgroups", "prod.proxy"),
    ]


def stream_lines(doc: dict[str, Any]) -> list[str]:
    """The backup machine's lines: the stream's CPU, RSS and lag."""
    s = dig(doc, "phases", "with_stream", "stream")
    c, r = dig(s, "cpu_load"), dig(s, "rss_load")
    u = dig(s, "cpu_until_stored")
    stop = dig(doc, "phases", "stream_stop")
    return [
        f"stream CPU s during the load, vkbackup / children / total: {fmt(dig(c, 'vkbackup'))}"
        f" / {fmt(dig(c, 'children'))} / {fmt(dig(c, 'total'))}"
        f" ({fmt(dig(c, 'core_pct'), '.1f', '%')} of one core over {fmt(dig(c, 'wall'))} s)",
        f"stream CPU s until the load's WAL was stored: {fmt(dig(u, 'total'))}"
        f" ({fmt(dig(u, 'core_pct'), '.1f', '%')} of one core over {fmt(dig(u, 'wall'))} s)",
        f"stream peak RSS MiB, vkbackup / children / sum: {fmt(dig(r, 'vkbackup_mib'))}"
        f" / {fmt(dig(r, 'children_mib'))} / {fmt(dig(r, 'sum_mib'))}"
        f" (children: {', '.join(dig(r, 'children_names') or []) or 'none seen'})",
        f"lag, end of the load -> its WAL stored: {fmt(dig(s, 'lag_seconds'))} s"
        f" (max_lag {MAX_LAG} s)",
        f"stream stop: exit {dig(stop, 'exit')}, sessions {dig(stop, 'sessions')}, retries "
        f"{dig(stop, 'retries')}, vkbackup VmHWM {fmt(dig(stop, 'vkbackup_vmhwm_mib'))} MiB",
    ]


def status(run: Any) -> str:
    """A restore's status: its report's, else "error" when it failed before one."""
    value = dig(run, "status")
    if value is None:
        return "error" if dig(run, "error") else "n/a"
    return str(value)


def rto_rows(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The RTO lines: pg_dump restore beside base backup + WAL."""
    a = dig(doc, "phases", "rto", "pg_dump")
    b = dig(doc, "phases", "rto", "base_backup")
    return [
        ("status", status(a), status(b)),
        ("RTO s (rto_seconds)", fmt(dig(a, "rto_seconds")), fmt(dig(b, "rto_seconds"))),
        ("database step s", fmt(dig(a, "database_seconds")), fmt(dig(b, "database_seconds"))),
        ("database container start s", fmt(dig(a, "db_start_seconds")),
         fmt(dig(b, "db_start_seconds"))),
        ("restore wall s", fmt(dig(a, "wall")), fmt(dig(b, "wall"))),
    ]  # fmt: skip


def print_table(doc: dict[str, Any]) -> None:
    """The compact summary on stdout."""
    calib = dig(doc, "phases", "calibrate")
    print(
        f"\nPITR benchmark: {doc['args']['seconds']} s per phase, target "
        f"{doc['args']['rate_mib']} MiB/s of WAL ({fmt(dig(calib, 'rows_per_second'), 'd')} "
        f"rows/s, {fmt(dig(calib, 'wal_bytes_per_row'), '.0f')} WAL bytes/row)"
    )
    print(f"  {'':40} {'without stream':>18} {'with stream':>18} {'diff':>8}")
    for label, x, y, d in prod_rows(doc):
        print(f"  {label:40} {x:>18} {y:>18} {d:>8}")
    for line in stream_lines(doc):
        print(f"  {line}")
    db = dig(doc, "phases", "snapshot", "database_bytes")
    print(f"\n  RTO, database {fmt(db / 1e6 if db else None, '.0f')} MB at the snapshot:")
    print(f"  {'':40} {'pg_dump':>18} {'base backup + WAL':>18}")
    for label, x, y in rto_rows(doc):
        print(f"  {label:40} {x:>18} {y:>18}")
    for err in doc["errors"]:
        print(f"  FAILED {err['phase']}: {err['error'][:200]}")


# -- main --------------------------------------------------------------------------------


def new_doc(args: argparse.Namespace) -> dict[str, Any]:
    """The results document's head: when, what command, which commit, which machine."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": (".venv/bin/python benchmarks/pitr.py " + shlex.join(sys.argv[1:])).strip(),
        "commit": commit,
        "args": vars(args),
        "nproc": os.cpu_count(),
        "load_before": list(os.getloadavg()),
        "phases": {},
        "phase_seconds": {},
        "errors": [],
    }


def reseed(doc: dict[str, Any], scale: float) -> Lab | None:
    """Prod reseeded at *scale* (`reset-prod`); None when that failed (recorded)."""
    log(f"reset-prod --scale {scale}")
    try:
        labctl.reset_prod(scale)
        return get_lab(bring_up=False)
    except Exception as e:
        doc["errors"].append({"phase": "reseed", "error": repr(e)[:2000]})
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="seconds of load per phase")
    parser.add_argument("--rate-mib", type=float, default=4.0, help="MiB/s of WAL to generate")
    parser.add_argument("--scale", type=float, default=None, help="reseed prod at this scale")
    parser.add_argument("--keep-scale", action="store_true", help="leave prod at --scale")
    args = parser.parse_args()
    doc = new_doc(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-pitr.json"
    t0 = time.monotonic()

    def save() -> None:
        doc["seconds"] = round(time.monotonic() - t0, 1)
        out.write_text(json.dumps(doc, indent=1, default=str))

    lab = get_lab()
    scale_before = lab.scale
    doc["lab_scale"] = scale_before
    try:
        ready: Lab | None = lab
        if args.scale is not None:
            ready = reseed(doc, args.scale)
            doc["lab_scale"] = args.scale
        if ready is not None:
            with tempfile.TemporaryDirectory(prefix="vkbench-pitr-") as tmp:
                bench = Bench(ready, Path(tmp), args, doc)
                bench.save = save
                bench.run()
    finally:
        if args.scale is not None and not args.keep_scale:
            reseed(doc, scale_before)
        doc["load_after"] = list(os.getloadavg())
        save()
    print_table(doc)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
