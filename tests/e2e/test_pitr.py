"""Point-in-time recovery against the lab (issue 21): prod's own PostgreSQL (the
Chatwoot compose service), the real `vkbackup wal-stream` (pg_receivewal through
prod's sshd), base backups taken by `vkbackup snapshot`, and `restore --to fresh
--to-time` rebuilding the whole host with the database recovered by PostgreSQL.

The database is prepared only with what `vkbackup init --pitr` prints (a
replication role and a pg_hba line), run literally on prod.

- test_recover_to_a_time: rows go in continuously; a marker table is written
  at T under a lock that holds every insert back, so exactly the rows committed
  before T are in it; then a table's rows are deleted. The restore to T gives
  exactly the marker's rows, no marker table (committed after T), and the
  deleted rows back; every other table equals prod's. Then
  restore-playbooks/BREAK-GLASS-PITR.md, every `sh` block run literally with
  stock tools (age, jq, ssh-keygen, tar), recovers that server's database to T
  once more, from its rows deleted.
- test_rpo_under_load: the stream's SSH connection is cut twice while rows go
  in, then prod's database and the stream are killed at once (no flush). A
  drill to `latest` restores every row committed up to max_lag + 10 s before
  the kill, and reports that RPO. Then the backup machine "restarts" (its
  spool in memory gone): the stream resumes at the slot, with no gap.
- test_prune_keeps_the_chain_and_verify_names_a_gap: a base backup outlives
  the snapshot that took it while a later one references it (a restore to
  just after it works); prune keeps the WAL the oldest kept base backup needs,
  and only that; verify names a segment taken out of the chain.

Each test leaves prod as it found it: the stream stopped (SIGTERM, exit 0), its
replication slot dropped, the test's tables dropped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.guides import PLAYBOOKS, guide_blocks
from tests.e2e.labconfig import own_config
from tests.integration.tcpproxy import TcpProxy
from tests.lab.api import Lab
from vkbackup import layout
from vkbackup.pitr.wal import WalRecord, format_lsn, parse_lsn, record_key

PG = "chatwoot-postgres-1"
DB = "chatwoot_production"
MAX_LAG = 4.0


def psql(lab: Lab, host: str, sql: str, db: str = DB) -> str:
    return lab.psql(host, sql, database_name=db)


def prepare_prod(lab: Lab, config: Path, tmp: Path) -> None:
    """Run what `vkbackup init --pitr` prints for prod's database, literally."""
    out = tmp / "init.toml"
    known = tmp / "init_known_hosts"
    known.write_text(lab.known_hosts.read_text())
    cp = subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config), "init",
         "root@127.0.0.1:2222", "--name", "prod", "--key-file", str(lab.key_file),
         "--known-hosts", str(known), "--yes", "--out", str(out), "--pitr"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    commands = init_commands(cp.stdout + cp.stderr)
    text = cp.stdout + cp.stderr
    assert "no replication role vkbackup_wal" in text, text
    assert any("pg_hba.conf" in c for c in commands), text
    for command in commands:
        lab.ssh("prod", command)
    again = subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config), "init",
         "root@127.0.0.1:2222", "--name", "prod", "--key-file", str(lab.key_file),
         "--known-hosts", str(known), "--yes", "--out", str(tmp / "init2.toml"), "--pitr"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"PITR: {PG}: ready" in again.stdout + again.stderr, again.stdout + again.stderr


def init_commands(text: str) -> list[str]:
    """The shell commands init printed: the lines indented by seven spaces."""
    return [m.group(1) for m in re.finditer(r"(?m)^ {7}(\S.*)$", text)]


def unprepare_prod(lab: Lab) -> None:
    """Prod's database as the lab built it: no slot, no replication role, no hba line."""
    psql(
        lab,
        "prod",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name = 'vkbackup';",
        db="postgres",
    )
    psql(lab, "prod", "DROP ROLE IF EXISTS vkbackup_wal;", db="postgres")
    lab.ssh(
        "prod",
        f'docker exec {PG} sh -c \'sed -i "/vkbackup/d" "$PGDATA/pg_hba.conf"\' && '
        f"docker exec {PG} psql -q -U postgres -c 'SELECT pg_reload_conf()' >/dev/null",
    )


def pitr_config(lab: Lab, tmp: Path, port: int | None = None, known: Path | None = None) -> Path:
    """The lab config with pitr = true on chatwoot-db and a [pitr] table of the test's."""
    path = own_config(lab, tmp / "vk.toml", tmp / "storage")
    text = path.read_text().replace(
        'name = "chatwoot-db"\n', 'name = "chatwoot-db"\npitr = true\n', 1
    )
    if port is not None:
        text = text.replace("port = 2222\n", f"port = {port}\n", 1)
    if known is not None:
        text = text.replace(str(lab.known_hosts), str(known))
    spool = f"/dev/shm/vkbackup-wal-e2e-{secrets.token_hex(3)}"
    text += (
        f'\n[pitr]\nmax_lag = "{int(MAX_LAG)}s"\nspool_dir = "{spool}"\n'
        f'password_file = "{tmp / "pitr-password"}"\n'
    )
    path.write_text(text)
    return path


@dataclass
class Stream:
    proc: subprocess.Popen[str]
    log: Path

    def kill(self) -> str:
        """SIGKILL to the stream and pg_receivewal both: nothing is flushed on the way."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        return self.log.read_text()

    def stop(self) -> str:
        """SIGTERM; it must store what it holds and exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        text = self.log.read_text()
        assert code == 0, text[-3000:]
        return text


def start_stream(config: Path, tmp: Path) -> Stream:
    log = tmp / "wal-stream.log"
    f = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vkbackup", "--config", str(config), "-v", "wal-stream"],
        stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    return Stream(proc, log)


def wal_keys(storage: Path) -> list[str]:
    root = storage / "wal"
    return sorted(str(p.relative_to(storage)) for p in root.rglob("*.age")) if root.exists() else []


class Ticker:
    """Rows into pitr_ticks, one transaction each, from a psql session on prod."""

    def __init__(self, lab: Lab) -> None:
        script = (
            f"while :; do echo 'INSERT INTO pitr_ticks DEFAULT VALUES;'; sleep 0.05; done | "
            f"docker exec -i {PG} psql -X -q -v ON_ERROR_STOP=1 -U postgres -d {DB}"
        )
        self.proc = subprocess.Popen(
            [*lab.ssh_argv("prod"), script], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def pitr_env(lab: Lab, tmp_path: Path) -> Iterator[tuple[Lab, Path]]:
    unprepare_prod(lab)
    psql(lab, "prod", "DROP TABLE IF EXISTS pitr_ticks, pitr_marker, pitr_victim;")
    psql(
        lab,
        "prod",
        "CREATE TABLE pitr_ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL "
        "DEFAULT clock_timestamp()); CREATE TABLE pitr_victim AS SELECT * FROM contacts;",
    )
    try:
        yield lab, tmp_path
    finally:
        psql(lab, "prod", "DROP TABLE IF EXISTS pitr_ticks, pitr_marker, pitr_victim;")
        unprepare_prod(lab)
        for spool in Path("/dev/shm").glob("vkbackup-wal-e2e-*"):
            shutil.rmtree(spool, ignore_errors=True)


def restore(lab: Lab, config: Path, *args: str) -> dict[str, object]:
    """`restore [ARGS] --to fresh --host prod --yes --json` (ARGS may start with a
    snapshot id); return its report."""
    cp = subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config), "restore", *args,
         "--to", "fresh", "--host", "prod", "--yes", "--json"],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    doc: dict[str, object] = json.loads(cp.stdout)
    return doc


def vk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config), *args],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip


def snapshot(config: Path) -> None:
    cp = subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config), "snapshot", "prod"],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr[-3000:]


def ids(lab: Lab, host: str, table: str) -> list[int]:
    text = psql(lab, host, f"SELECT id FROM {table} ORDER BY id;")
    return [int(x) for x in text.split()]


def test_recover_to_a_time(pitr_env: tuple[Lab, Path], fresh_lab: Lab) -> None:
    lab, tmp = pitr_env
    config = pitr_config(lab, tmp)
    prepare_prod(lab, config, tmp)
    stream = start_stream(config, tmp)
    ticker = Ticker(lab)
    try:
        time.sleep(3)
        snapshot(config)  # its base backup is taken while rows go in
        time.sleep(3)
        # the marker at T: the lock holds every insert back, so the rows in it are
        # exactly those committed before T, and every later one commits after T
        t = psql(
            lab,
            "prod",
            "BEGIN; LOCK TABLE pitr_ticks IN EXCLUSIVE MODE; "
            "CREATE TABLE pitr_marker AS SELECT id FROM pitr_ticks; "
            "SELECT clock_timestamp(); COMMIT;",
        )
        time.sleep(2)
        deleted = psql(lab, "prod", "DELETE FROM pitr_victim; SELECT count(*) FROM contacts;")
        time.sleep(MAX_LAG + 3)
    finally:
        ticker.stop()
        text = stream.stop()
    assert "finished segment" in text or "receiving from" in text, text[-2000:]
    assert wal_keys(tmp / "storage"), "the stream stored no WAL"
    marker = ids(lab, "prod", "pitr_marker")
    assert len(marker) > 20, marker  # rows went in before T
    assert len(ids(lab, "prod", "pitr_ticks")) > len(marker)  # and after T

    doc = restore(lab, config, "--to-time", t)
    assert doc["status"] == "ok", doc
    steps = {s["id"]: s for s in doc["steps"]}  # type: ignore[attr-defined]
    assert "recovered to" in steps["database:chatwoot-db"]["detail"], steps
    # exactly the rows committed before T
    assert ids(fresh_lab, "fresh", "pitr_ticks") == marker
    assert psql(fresh_lab, "fresh", "SELECT to_regclass('pitr_marker') IS NULL;") == "t"
    # the rows deleted after T are back
    assert psql(fresh_lab, "fresh", "SELECT count(*) FROM pitr_victim;") == deleted.split()[-1]
    # every other table is prod's
    skip = {"public.pitr_ticks", "public.pitr_marker", "public.pitr_victim"}
    want = {k: v for k, v in lab.table_checksums("prod").items() if k not in skip}
    got = {k: v for k, v in fresh_lab.table_checksums("fresh").items() if k not in skip}
    assert got == want
    # the recovery settings are gone and the staged WAL removed
    conf = fresh_lab.ssh(
        "fresh", f'docker exec {PG} sh -c \'cat "$PGDATA/postgresql.auto.conf"; ls "$PGDATA"\''
    ).stdout
    assert "recovery_target" not in conf and "vkbackup_wal" not in conf, conf
    assert psql(fresh_lab, "fresh", "SELECT pg_is_in_recovery();") == "f"
    assert doc["recovered_age_seconds"] is not None

    # the same by hand: BREAK-GLASS-PITR.md, every `sh` block as written, with stock
    # tools, over this server's database (its rows changed first, so the guide's
    # recovery is what brings them back)
    psql(fresh_lab, "fresh", "DELETE FROM pitr_ticks; DELETE FROM pitr_victim;")
    out = follow_guide(lab, tmp, t)
    assert 'Good "vkbackup" signature' in out
    assert "manifest and WAL records signed, objects match" in out
    assert "recovery stopping before commit" in out, out[-3000:]
    assert "last completed transaction was at log time" in out, out[-3000:]
    assert f"recovered to {t}" in out
    assert ids(fresh_lab, "fresh", "pitr_ticks") == marker
    assert psql(fresh_lab, "fresh", "SELECT count(*) FROM pitr_victim;") == deleted.split()[-1]
    assert psql(fresh_lab, "fresh", "SELECT to_regclass('pitr_marker') IS NULL;") == "t"
    assert psql(fresh_lab, "fresh", "SELECT pg_is_in_recovery();") == "f"


def test_rpo_under_load(pitr_env: tuple[Lab, Path], fresh_lab: Lab) -> None:
    lab, tmp = pitr_env
    prod_port = lab._spec("prod").port
    with TcpProxy(prod_port) as proxy:
        known = tmp / "known_hosts"
        known.write_text(
            lab.known_hosts.read_text().replace(
                f"[127.0.0.1]:{prod_port} ", f"[127.0.0.1]:{proxy.port} "
            )
        )
        base_config = pitr_config(lab, tmp)
        prepare_prod(lab, base_config, tmp)
        snapshot(base_config)  # the base backup, straight
        config = pitr_config(lab, tmp, port=proxy.port, known=known)
        stream = start_stream(config, tmp)
        ticker = Ticker(lab)
        killed = False
        try:
            time.sleep(4)
            for _ in range(2):  # two SSH cuts under load
                proxy.refuse_all(True)
                time.sleep(3)
                proxy.refuse_all(False)
                time.sleep(6)
            time.sleep(MAX_LAG + 2)
            # the server dies, and the stream with it (SIGKILL: no flush on the way
            # out): what is stored is what the stream stored as it went, every max_lag/2
            lab.ssh("prod", f"docker kill {PG} >/dev/null")
            text = stream.kill()
            killed = True
            ticker.stop()
        finally:
            ticker.stop()
            if not killed:
                stream.stop()
            else:
                lab.ssh("prod", f"docker start {PG} >/dev/null")
                lab.ssh("prod", f"until docker exec {PG} pg_isready -q; do sleep 1; done")
    # each cut ended a session, and the stream came back by itself each time
    assert text.count("receiving from") >= 3, text[-3000:]
    assert text.count("trying again") >= 2, text[-3000:]
    print(text[-6000:])
    last_prod = psql(lab, "prod", "SELECT max(at) FROM pitr_ticks;")

    cp = vk(config, "drill", "--to", "fresh", "--host", "prod", "--to-time", "latest",
            "--report", str(tmp / "drills"), "--json")  # fmt: skip
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    drill = json.loads(cp.stdout)
    assert drill["status"] == "ok", drill
    last_restored = psql(fresh_lab, "fresh", "SELECT max(at) FROM pitr_ticks;")
    behind = psql(
        fresh_lab,
        "fresh",
        f"SELECT extract(epoch FROM '{last_prod}'::timestamptz - '{last_restored}'::timestamptz);",
    )
    print("restored rows end", behind, "s before prod's last commit")
    assert float(behind) <= MAX_LAG + 10, (last_prod, last_restored)
    # the drill's RPO is the age of the newest WAL it replayed, not the snapshot's
    assert drill["rpo_seconds"] < drill["restore"]["snapshot_age_seconds"], drill
    # no row missing in between: the restored ids are exactly prod's up to that point
    got = ids(fresh_lab, "fresh", "pitr_ticks")
    want = [i for i in ids(lab, "prod", "pitr_ticks") if i <= got[-1]]
    assert got == want

    # the backup machine restarts: its spool (memory) is gone, the stream starts at
    # the slot, which kept prod's WAL meanwhile: the chain from the base backup has
    # no gap, and what prod wrote since is stored
    for spool in Path("/dev/shm").glob("vkbackup-wal-e2e-*"):
        shutil.rmtree(spool)
    config = pitr_config(lab, tmp)  # straight to prod's sshd again
    stream = start_stream(config, tmp)
    ticker = Ticker(lab)
    try:
        time.sleep(6)
    finally:
        ticker.stop()
        time.sleep(MAX_LAG + 1)
        # what prod wrote until now (the stream received it within milliseconds)
        written = parse_lsn(psql(lab, "prod", "SELECT pg_current_wal_flush_lsn();"))
        time.sleep(2)
        text = stream.stop()
    assert "(the slot's)" in text and "gone from prod" not in text, text[-3000:]
    cp = vk(config, "verify", "--latest", "--host", "prod")
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
    stored = [
        WalRecord.decode((tmp / "storage" / record_key(k)).read_bytes(), record_key(k))
        for k in wal_keys(tmp / "storage")
    ]
    end = max(r.end_lsn for r in stored if r.kind != "history")
    # a stored partial has its trailing zero bytes trimmed: it may end a little short
    assert end >= written - 256, (format_lsn(end), format_lsn(written), text[-2000:])
    for key in wal_keys(tmp / "storage"):  # every WAL object is an age file
        assert (tmp / "storage" / key).read_bytes()[:22] == b"age-encryption.org/v1\n", key


def test_prune_keeps_the_chain_and_verify_names_a_gap(
    pitr_env: tuple[Lab, Path], fresh_lab: Lab
) -> None:
    """Retention keep_last = 1, base_every_days = 7. Snapshot A takes a base backup,
    B references it. Prune drops A: the base backup stays (B uses it), so does all
    the WAL, and a restore to a moment just after that base backup ended works:
    its facts outlive A. Then C takes a new base backup (base_every_days = 0) and
    prune drops B: the first base backup goes, and exactly the WAL stored before C
    started; a restore to before C is refused; verify passes, then names the
    segment taken out of the chain."""
    lab, tmp = pitr_env
    config = pitr_config(lab, tmp)
    text = config.read_text().replace("keep_last = 3\n", "keep_last = 1\n", 1)
    text = text.replace("keep_daily = 7\n", "keep_daily = 0\n", 1)
    text = text.replace('max_lag = "', 'skew = "0s"\nmax_lag = "', 1)
    config.write_text(text)
    storage = tmp / "storage"
    prepare_prod(lab, config, tmp)
    stream = start_stream(config, tmp)
    ticker = Ticker(lab)

    def switch_wal() -> None:  # whole segments between the snapshots
        for _ in range(2):
            psql(lab, "prod", "SELECT pg_switch_wal();", db="postgres")
            time.sleep(1.5)

    try:
        time.sleep(2)
        snapshot(config)  # A: a base backup
        after_a = psql(lab, "prod", "SELECT clock_timestamp();")
        switch_wal()
        snapshot(config)  # B: references A's
        switch_wal()
        time.sleep(MAX_LAG + 2)
        cp = vk(config, "prune", "--json")
        assert cp.returncode == 0, cp.stderr[-3000:]
        first = json.loads(cp.stdout)["hosts"][0]
        assert sorted(d["keep"] for d in first["snapshots"]) == [False, True]
        assert first["wal"]["deleted"] == [] and first["wal"]["gaps"] == []
        base_a = [k for k in first["deleted"] if "/base." in k]
        assert base_a == [], "A's base backup is B's too: it must stay"

        config.write_text(
            config.read_text().replace('skew = "', 'base_every_days = 0\nskew = "', 1)
        )
        between = psql(lab, "prod", "SELECT clock_timestamp();")
        time.sleep(1)
        snapshot(config)  # C: a new base backup
        switch_wal()
        time.sleep(MAX_LAG + 2)
    finally:
        ticker.stop()
        stream.stop()

    # the restore to just after A's base backup: A's manifest is gone, its base
    # backup and facts are B's now
    snaps = sorted(p.stem for p in (storage / "snapshots" / "prod").glob("*.json"))
    assert len(snaps) == 2, snaps  # B and C
    doc = restore(lab, config, snaps[0], "--to-time", after_a)
    assert doc["status"] == "ok", doc
    want = [int(x) for x in psql(
        lab, "prod", f"SELECT id FROM pitr_ticks WHERE at < '{after_a}' ORDER BY id;"
    ).split()]  # fmt: skip
    got = ids(fresh_lab, "fresh", "pitr_ticks")
    # a row stamped just before the time may commit just after it
    n = min(len(got), len(want))
    assert n > 10 and got[:n] == want[:n] and abs(len(got) - len(want)) <= 1, (len(got), len(want))

    before = wal_keys(storage)
    records = {
        k: WalRecord.decode((storage / record_key(k)).read_bytes(), record_key(k)) for k in before
    }
    cp = vk(config, "prune", "--json")
    assert cp.returncode == 0, cp.stderr[-3000:]
    report = json.loads(cp.stdout)["hosts"][0]
    wal_report = report["wal"]
    assert wal_report["gaps"] == [] and wal_report["unreadable"] == []
    assert any("/base." in k for k in report["deleted"]), report["deleted"]  # A's base backup
    deleted = {k for k in wal_report["deleted"] if k.endswith(".age")}
    assert deleted and deleted < set(before), (deleted, before)
    kept = set(wal_keys(storage))
    assert kept == set(before) - deleted
    # exactly the WAL stored before the kept snapshot (C) started is gone
    kept_snapshot = snaps[1]
    started = layout.snapshot_time(kept_snapshot)
    for key, rec in records.items():
        if key in deleted:
            assert rec.time < started, key
        elif rec.kind != "history":
            assert rec.time >= started, key

    # before the kept base backup: refused, naming the oldest snapshot
    cp = vk(config, "restore", "--to", "fresh", "--host", "prod", "--to-time", between,
            "--yes", "--dry-run")  # fmt: skip
    assert cp.returncode != 0
    assert "was taken before" in cp.stderr and kept_snapshot in cp.stderr, cp.stderr
    # after it: planned (the restore itself was shown above)
    cp = vk(config, "restore", "--to", "fresh", "--host", "prod", "--to-time", "latest",
            "--yes", "--dry-run", "--json")  # fmt: skip
    assert cp.returncode == 0, cp.stderr[-2000:]

    cp = vk(config, "verify", "--latest", "--host", "prod")
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
    fulls = sorted(k for k in kept if re.search(r"/[0-9A-F]{24}\.age$", k))
    assert len(fulls) >= 3, fulls
    hole = fulls[1]
    (storage / hole).unlink()
    (storage / record_key(hole)).unlink()
    cp = vk(config, "verify", "--latest", "--host", "prod")
    assert cp.returncode == 1, cp.stdout[-2000:] + cp.stderr[-2000:]
    segment = hole.rsplit("/", 1)[1].removesuffix(".age")
    assert "wal:" in cp.stderr and segment in cp.stderr, cp.stderr[-2000:]


GUIDE = PLAYBOOKS / "BREAK-GLASS-PITR.md"


def guide_script(values: dict[str, str]) -> str:
    """BREAK-GLASS-PITR.md as one bash script: every `sh` block in order, its
    variables block replaced by *values* (each name must be one the guide sets)."""
    variables, blocks = guide_blocks(GUIDE)
    names = [line.split("=", 1)[0] for line in variables.splitlines() if "=" in line]
    assert sorted(names) == sorted(values), names
    lines = [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    return "\n".join(["set -euo pipefail", *lines, *blocks])


def follow_guide(lab: Lab, tmp: Path, t: str) -> str:
    """Run BREAK-GLASS-PITR.md against the fresh host with the test's storage and
    TIME = *t*; return its output (it must exit 0)."""
    signer = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(lab.paths.signing_key)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    script = guide_script(
        {
            "VK": str(tmp / "storage"),
            "IDENTITY": str(lab.identity),
            "HOST": "prod",
            "TARGET": shlex.join(lab.ssh_argv("fresh")),
            "SIGNER": signer,
            "TIME": t,
            "PG": PG,
            "PGVOLUME": "chatwoot_postgres_data",
        }
    )
    (tmp / "break-glass-pitr.sh").write_text(script)
    cp = subprocess.run(
        ["bash", str(tmp / "break-glass-pitr.sh")], capture_output=True, text=True, timeout=900
    )
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out[-4000:]
    return out
