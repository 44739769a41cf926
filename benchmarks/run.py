"""Benchmark: vkbackup snapshot and restore against the lab, beside restic, OpenSSH + age
and pg_dump on the same data, in the same run.

Usage (as root, the lab up or able to come up; see tests/lab/README.md):
    .venv/bin/python benchmarks/run.py [--sizes 256M,1G[,4G]] [--scales 8.4,34.3]
        [--repeat 1] [--skip restic,age,pg_dump,s3,restore,nozstd] [--profile] [--workdir DIR]
        [--markdown docs/benchmarks.md] [--keep-scale] [--vkbackup-src DIR] [--vk-env K=V]
    .venv/bin/python benchmarks/run.py --render benchmarks/results/<stamp>.json

For each size (database + attachments together, as the lab seeds them; the
lab's scale for a size comes from a linear fit measured on the lab, or from
--scales), the harness:
  1. reseeds prod (`python -m tests.lab reset-prod --scale N`), then measures
     the data on prod: pg_database_size, the seeded attachments, and the byte
     counts of the uncompressed streams every tool has to move (GNU tar of the
     configured volumes and files, `docker save` of the configured images,
     `pg_dump -Fc -Z0`). That pass also warms the host's page cache for every
     run after it. "source bytes" = the sum of those three streams; every MB/s
     figure is source bytes / wall seconds (MB = 10^6 bytes).
  2. vk-local: `vkbackup snapshot prod` with a copy of the lab config whose
     storage is a new empty directory (a full snapshot), then vk-local-2: the
     second, unchanged snapshot into the same storage (references; the
     database too: no transaction was given an id since the first). Its
     --json gives each held container's downtime, printed after the table.
  3. vk-nozstd: the same full snapshot into new empty storage with prod's
     /usr/bin/zstd hidden (moved aside for the run and put back whatever
     happens; also at start, should an earlier run have died with it hidden):
     the tars cross uncompressed and are compressed here (issue 18).
  4. restic: `ssh prod CMD | restic backup --stdin` into a new local repository
     (format 2, compression auto) for the three streams in turn (pg_dump
     -Fc -Z0, tar, docker save), then restic-2: the same three again, then
     restic-restore: `restic dump ID FILE | ssh fresh 'cat > /dev/null'` of the
     newest snapshot of each stream (the same data, read back onto fresh).
  5. ssh+age: `ssh prod CMD | age -r RECIPIENT -o FILE` for the three streams
     (pg_dump -Fc -Z1 as vkbackup takes it, tar and docker save uncompressed):
     the raw speed of moving and encrypting those bytes with stock tools.
  6. pg_dump: `ssh prod docker exec chatwoot-postgres-1 pg_dump -Fc ... > FILE`
     (default compression), beside vkbackup's database source.
  7. vk-s3: the same full snapshot to SeaweedFS (a new key prefix, deleted
     after vk-restore-s3).
  8. restore: `reset-fresh`, then `vkbackup restore latest --host prod --to fresh
     --playbook restore-playbooks/visualkit.toml --yes --json` from the local
     storage (RTO = the report's rto_seconds), beside raw: `cat` of the objects
     of that snapshot piped over OpenSSH into `cat > /dev/null` on fresh; then
     vk-restore-s3: `reset-fresh` and the same restore from vk-s3's prefix; then
     break-glass: `reset-fresh` and the same restore by hand, every `sh` block
     of restore-playbooks/BREAK-GLASS.md, from the local storage.

Every command runs as a child of GNU time (/usr/bin/time): CPU seconds (user +
system) of the whole local process tree and its largest process's peak RSS
(%M). A sampler also reads VmHWM of every process in the tree (peak per
program). Host-side CPU comes from the lab hosts' cgroups (cgroup v1
cpuacct): "host" = the host container's own processes (sshd, tar, gzip, the
docker CLI, dockerd), "ctr" = the containers inside it (pg_dump runs in the
PostgreSQL container). The loopback docker-proxy in front of each host's sshd
(a lab artefact: it copies every byte) and the SeaweedFS server are measured
on their own. All of it shares this machine's cores, so wall times are
bounded by the sum of everyone's CPU.

Output: a table per size on stdout (then its ratios and one line per held
container: `downtime NAME: S s (copy S s)`, the copy being the seconds of the
volume source that held it), benchmarks/results/<timestamp>.json (all
numbers), and the Markdown tables between the markers in docs/benchmarks.md
(--markdown '' to skip). At the end the lab is put back to scale 1 and the
fresh host is reset (--keep-scale to leave prod as it is).
This is a harness, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.lab.api import Lab, get_lab  # noqa: E402

GNU_TIME = "/usr/bin/time"
PLAYBOOK = REPO / "restore-playbooks" / "visualkit.toml"
RESULTS = REPO / "benchmarks" / "results"
MARK = "<!-- benchmarks/run.py {} sizes={} -->"  # one block per set of sizes
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
ZSTD = "/usr/bin/zstd"  # hidden on prod for the no-zstd runs (here and in nozstd.py)
HIDDEN = ZSTD + ".vkbench-hidden"

# Lab data size (database + attachments, bytes) as a function of the scale, fitted
# on the lab: scale 1 -> 40.0 MB, 8.4 -> 269.7 MB, 10 -> 320 MB.
FIT_BASE = 8.7e6
FIT_PER_SCALE = 31.04e6

TARGETS = {
    "throughput_vs_restic": 1.0,
    "throughput_vs_age": 0.6,
    "rss_mib": 150.0,
    "stored_vs_restic": 1.1,
    "rto_vs_raw": 5.0,  # issue 18: 5x at 1 GiB, 4x at 4 GiB (ratios() picks by size)
    "rto_vs_break_glass": 0.5,
    "s3_rss_mib": 100.0,  # issue 18: snapshot to S3 and restore from S3
    "nozstd_throughput_vs_restic": 1.0,
    "nozstd_throughput_vs_age": 0.6,
}


# -- small helpers --------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Given "1G", "256M", "64K" or a byte count, return bytes (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def scale_for(size: int) -> float:
    """The lab scale whose database + attachments come closest to *size* bytes."""
    return round(max(1.0, (size - FIT_BASE) / FIT_PER_SCALE), 1)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tree_bytes(path: Path) -> int:
    """Sum of the sizes of the regular files under *path*."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def mb(n: float) -> float:
    return n / 1e6


# -- CPU counters: cgroups of the lab hosts, docker-proxy, SeaweedFS, the machine --------------


def _cgroup_cpu(rel: str) -> float | None:
    """CPU seconds used so far by cgroup *rel* (v1 cpuacct, else v2 cpu.stat)."""
    v1 = Path("/sys/fs/cgroup/cpuacct") / rel / "cpuacct.usage"
    with contextlib.suppress(OSError, ValueError):
        return int(v1.read_text()) / 1e9
    v2 = Path("/sys/fs/cgroup") / rel / "cpu.stat"
    with contextlib.suppress(OSError, ValueError):
        for line in v2.read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return None


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process, 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK


def _cmdlines() -> Iterator[tuple[int, str]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
                yield int(entry), raw.replace(b"\0", b" ").decode(errors="replace")


def busy_fraction(window: float = 2.0) -> float:
    """Fraction of all cores busy over the next *window* seconds."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(values) - values[3] - values[4], sum(values)

    b0, t0 = sample()
    time.sleep(window)
    b1, t1 = sample()
    return (b1 - b0) / max(t1 - t0, 1)


def wait_quiet(below: float, max_wait: float) -> tuple[float, float]:
    """Wait (at most *max_wait* s) until the machine is less than *below* busy: other
    work on this shared machine (test runs) would steal the cores being measured.
    Return (seconds waited, the last busy fraction seen)."""
    start = time.monotonic()
    busy = busy_fraction()
    while busy >= below and time.monotonic() - start < max_wait:
        busy = busy_fraction()
    return time.monotonic() - start, busy


class Probe:
    """Reads the CPU counters this benchmark attributes; build a new one after a reset."""

    def __init__(self, lab: Lab) -> None:
        self.cgroups: dict[str, str] = {}
        for name, host in lab.hosts.items():
            cid = subprocess.run(
                ["docker", "inspect", "-f", "{{.Id}}", host.container],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if cid:
                self.cgroups[f"{name}.host"] = f"docker/{cid}"
            self.cgroups[f"{name}.ctr"] = host.container  # dockerd --cgroup-parent=/NAME
        ports = {f"-host-port {h.port} ": name for name, h in lab.hosts.items()}
        self.proxies: dict[str, list[int]] = {}
        self.weed: list[int] = []
        s3_dir = str(lab.root / "s3")
        for pid, cmd in _cmdlines():
            if "docker-proxy" in cmd:
                for needle, name in ports.items():
                    if needle in cmd + " ":
                        self.proxies.setdefault(f"{name}.proxy", []).append(pid)
            elif "weed" in cmd and " mini " in cmd and s3_dir in cmd:
                self.weed.append(pid)

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, rel in self.cgroups.items():
            value = _cgroup_cpu(rel)
            if value is not None:
                out[key] = value
        for key, pids in self.proxies.items():
            out[key] = sum(_proc_cpu(p) for p in pids)
        out["s3"] = sum(_proc_cpu(p) for p in self.weed)
        out["machine"] = _machine_busy()
        return out


# -- running one measured command ----------------------------------------------------------------


@dataclass
class Measure:
    """One measured command (or the sum of several, see combine)."""

    name: str
    wall: float
    cpu: float  # user + sys of the local process tree (this machine)
    max_rss_kib: int  # GNU time %M: the tree's largest process
    peaks_kib: dict[str, int] = field(default_factory=dict)  # program -> sampled VmHWM
    counters: dict[str, float] = field(default_factory=dict)  # Probe deltas, CPU seconds
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def host_cpu(self) -> float:
        """CPU seconds on the source side: prod's processes and containers."""
        return self.counters.get("prod.host", 0.0) + self.counters.get("prod.ctr", 0.0)


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _hwm(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    name, hwm = "?", 0
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1].strip() if len(line.split()) > 1 else "?"
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return name, hwm


class Sampler(threading.Thread):
    """Samples VmHWM of every process under *root* until stopped (peak per program)."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            kids = _children_map()
            todo, seen = [self.root], set()
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                todo.extend(kids.get(pid, []))
                got = _hwm(pid)
                if got and got[0] != "time" and got[1] > self.peaks.get(got[0], 0):
                    self.peaks[got[0]] = got[1]
            self.stop_event.wait(self.interval)


class CommandFailed(Exception):
    pass


def run_measured(
    name: str,
    argv: list[str],
    probe: Probe,
    logdir: Path,
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> tuple[Measure, str]:
    """Run *argv* under GNU time; return its Measure and stdout (stderr goes to a log)."""
    safe = name.replace("/", "_").replace(" ", "_")
    log_path = logdir / f"{safe}.stderr"
    with (
        tempfile.NamedTemporaryFile("r", dir=logdir, suffix=".time") as tf,
        open(log_path, "wb") as err,
        tempfile.TemporaryFile(dir=logdir) as out,
    ):
        wrapped = [GNU_TIME, "-f", "%M %U %S", "-o", tf.name, *argv]
        before = probe.read()
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, cwd=REPO)
        sampler = Sampler(proc.pid)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        after = probe.read()
        sampler.stop_event.set()
        sampler.join()
        fields = (tf.read().strip().splitlines() or ["0 0 0"])[-1].split()
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if check and code != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise CommandFailed(f"{name}: exit {code}: {shlex.join(argv)[:300]}\n{tail}")
    try:
        rss, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
    except (IndexError, ValueError):  # time wrote "Command exited with non-zero status"
        rss, cpu = 0, 0.0
    counters = {k: round(after[k] - before[k], 3) for k in after if k in before}
    m = Measure(name, wall, cpu, rss, sampler.peaks, counters, {"exit": code})
    return m, stdout


def combine(name: str, parts: list[Measure]) -> Measure:
    """Sequential parts as one job: times and CPU add up, memory is the largest."""
    total = Measure(name, 0.0, 0.0, 0)
    for p in parts:
        total.wall += p.wall
        total.cpu += p.cpu
        total.max_rss_kib = max(total.max_rss_kib, p.max_rss_kib)
        for k, v in p.peaks_kib.items():
            total.peaks_kib[k] = max(total.peaks_kib.get(k, 0), v)
        for k, c in p.counters.items():
            total.counters[k] = round(total.counters.get(k, 0.0) + c, 3)
    total.extra["parts"] = {p.name: round(p.wall, 3) for p in parts}
    return total


def best(runs: list[Measure]) -> Measure:
    """The fastest run, carrying every run's wall time."""
    fastest = min(runs, key=lambda r: r.wall)
    fastest.extra["walls"] = [round(r.wall, 3) for r in runs]
    return fastest


# -- what prod holds and how to stream it ----------------------------------------------------------


@dataclass
class Sources:
    """The lab config's prod sources, as the peers' remote commands need them."""

    container: str
    database: str
    db_user: str
    volumes: list[str]
    files: list[str]  # globs, expanded by the remote shell
    images: list[str]
    mountpoints: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, path: Path) -> Sources:
        doc = tomllib.loads(path.read_text())
        srcs = doc["hosts"]["prod"]["sources"]
        pg = next(s for s in srcs if s["type"] == "postgres")
        return cls(
            container=pg["container"],
            database=pg["database"],
            db_user=pg.get("user", "postgres"),
            volumes=[s["volume"] for s in srcs if s["type"] == "docker-volume"],
            files=[p for s in srcs if s["type"] == "files" for p in s["paths"]],
            images=[i for s in srcs if s["type"] == "docker-image" for i in s["images"]],
        )

    def pg_dump(self, level: int | None) -> str:
        argv = ["docker", "exec", self.container, "pg_dump", "-U", self.db_user]
        argv += ["-d", self.database, "-Fc"] + ([f"-Z{level}"] if level is not None else [])
        return shlex.join(argv)

    def tar(self) -> str:
        vols = " ".join(shlex.quote(m.lstrip("/")) for m in self.mountpoints)
        globs = " ".join(p.lstrip("/") for p in self.files)  # unquoted: the shell expands them
        return f"cd / && tar -cf - --numeric-owner -S -p {vols} {globs}"

    def docker_save(self) -> str:
        return shlex.join(["docker", "save", *self.images])


def stream_commands(src: Sources, db_level: int | None) -> dict[str, str]:
    return {"db": src.pg_dump(db_level), "volumes": src.tar(), "images": src.docker_save()}


# -- the benchmark -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, stamp: str) -> None:
        self.args = args
        self.work = workdir
        self.logs = RESULTS / f"{stamp}-logs"  # kept beside the JSON (git-ignored)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
        self.lab: Lab = get_lab(bring_up=True)
        self.probe = Probe(self.lab)
        self.env = dict(os.environ)
        self.env["RESTIC_PASSWORD"] = "vkbackup-benchmark"  # a throwaway repository
        self.env["RESTIC_CACHE_DIR"] = str(workdir / "restic-cache")
        self.env.pop("VKBACKUP_CONFIG", None)
        self.vk_env = dict(self.env)  # vkbackup's own runs: plus --vk-env
        for item in args.vk_env:
            key, _, value = item.partition("=")
            self.vk_env[key] = value

    # lab control
    def lab_cmd(self, *args: str) -> None:
        log(f"lab: {' '.join(args)}")
        with open(self.logs / "lab.log", "ab") as f:
            subprocess.run(
                [sys.executable, "-m", "tests.lab", *args],
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
                check=True,
            )
        self.lab = get_lab(bring_up=False)
        self.probe = Probe(self.lab)

    def ssh(self, host: str) -> list[str]:
        return self.lab.ssh_argv(host)

    def pipe(self, host: str, remote: str, local: str) -> list[str]:
        """argv of `ssh HOST REMOTE | LOCAL` under bash -o pipefail."""
        script = shlex.join([*self.ssh(host), remote]) + " | " + local
        return ["bash", "-o", "pipefail", "-c", script]

    def run(self, name: str, argv: list[str], *, check: bool = True) -> tuple[Measure, str]:
        waited, busy = wait_quiet(self.args.quiet_below, self.args.quiet_wait)
        log(f"run {name}" + (f" (waited {waited:.0f}s for a quiet machine)" if waited > 3 else ""))
        env = self.vk_env if name.startswith(("vk-", "py-spy")) else self.env
        m, out = run_measured(name, argv, self.probe, self.logs, env=env, check=check)
        m.extra["busy_before"] = round(busy, 3)
        m.extra["quiet_wait_s"] = round(waited, 1)
        log(f"    {name}: {m.wall:.1f}s, cpu {m.cpu:.1f}s, rss {m.max_rss_kib / 1024:.0f} MiB")
        return m, out

    # configs
    def config(self, tag: str, *, s3: bool) -> tuple[Path, str]:
        """A copy of the lab config with empty storage: a new dir, or a new S3 prefix."""
        src = self.lab.s3_config_path if s3 else self.lab.config_path
        text = src.read_text()
        if s3:
            where = f"bench/{self.work.name}/{tag}"
            text = text.replace('prefix = "lab"', f'prefix = "{where}"', 1)
            assert where in text, 'the lab\'s S3 config has no prefix = "lab" line'
        else:
            where = str(self.work / "storage" / tag)
            old = f'path = "{self.lab.storage_dir}"'
            assert old in text, f"the lab config has no {old} line"
            text = text.replace(old, f'path = "{where}"', 1)
        path = self.work / "configs" / f"{tag}{'-s3' if s3 else ''}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
        return path, where

    def vk(self, config: Path, *args: str) -> list[str]:
        if self.args.vkbackup_src:  # an experimental copy of the package (see --help)
            src = str(Path(self.args.vkbackup_src).resolve())
            boot = f"import sys; sys.path.insert(0, {src!r}); from vkbackup.cli.main import main; "
            boot += "sys.argv[0] = 'vkbackup'; main()"
            return [sys.executable, "-c", boot, "--config", str(config), *args]
        return [sys.executable, "-m", "vkbackup", "--config", str(config), *args]

    def s3_bytes(self, prefix: str, delete: bool = False) -> int:
        client = self.lab.s3_client()
        total, keys = 0, []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.lab.s3.bucket, Prefix=prefix + "/"):
            for obj in page.get("Contents", []):
                total += int(obj["Size"])
                keys.append(obj["Key"])
        if delete:
            for i in range(0, len(keys), 500):
                batch = [{"Key": k} for k in keys[i : i + 500]]
                client.delete_objects(Bucket=self.lab.s3.bucket, Delete={"Objects": batch})
        return total

    # one size
    def facts(self, src: Sources) -> dict[str, Any]:
        """Measure the data on prod; also warms the host's page cache for the runs."""
        out = self.lab.ssh(
            "prod",
            "docker volume inspect -f '{{.Mountpoint}}' " + " ".join(src.volumes),
        ).stdout.split()
        src.mountpoints = out
        streams = stream_commands(src, 0)
        sizes: dict[str, int] = {}
        for key, cmd in streams.items():
            log(f"measuring the {key} stream on prod")
            res = self.lab.ssh("prod", f"set -o pipefail; {cmd} | wc -c", timeout=3600)
            sizes[key] = int(res.stdout.strip())
        p = self.lab.state["prod"]
        data = int(p["database_bytes"]) + int(p["storage"]["bytes"])
        return {
            "scale": self.lab.scale,
            "database_bytes": int(p["database_bytes"]),
            "attachments_bytes": int(p["storage"]["bytes"]),
            "data_bytes": data,
            "stream_bytes": sizes,
            "source_bytes": sum(sizes.values()),
        }

    def vk_snapshot(
        self, tag: str, *, s3: bool, second: bool, keep_s3: bool = False
    ) -> tuple[Measure, Measure | None]:
        """A full snapshot into new empty storage (and the unchanged second one); an S3
        prefix is deleted after, unless *keep_s3* (the caller deletes extra["prefix"])."""
        config, where = self.config(tag, s3=s3)
        name = "vk-s3" if s3 else "vk-local"
        m, out = self.run(f"{name} {tag}", self.vk(config, "snapshot", "prod", "--json"))
        doc = json.loads(out)
        m.name = name
        m.extra.update(
            status=doc["status"],
            bytes_new=doc["bytes_new"],
            sources={s["name"]: s["seconds"] for s in doc["sources"]},
            downtime={s["name"]: s["downtime_seconds"] for s in doc["sources"]},
            # per container (issue 18): {source: {container: seconds held still}}
            downtime_containers={
                s["name"]: s["downtime"] for s in doc["sources"] if s.get("downtime")
            },
            config=str(config),
            prefix=where if s3 else None,
        )
        m.extra["stored"] = self.s3_bytes(where) if s3 else tree_bytes(Path(where))
        m2: Measure | None = None
        if second:
            m2, out2 = self.run(f"{name}-2 {tag}", self.vk(config, "snapshot", "prod", "--json"))
            doc2 = json.loads(out2)
            m2.name = f"{name}-2"
            m2.extra.update(
                status=doc2["status"],
                bytes_new=doc2["bytes_new"],
                bytes_reused=doc2["bytes_reused"],
                sources={s["name"]: s["seconds"] for s in doc2["sources"]},
                new_by_source={s["name"]: s["bytes_new"] for s in doc2["sources"]},
            )
        if s3 and not keep_s3:
            self.s3_bytes(where, delete=True)
        return m, m2

    def vk_nozstd(self, tag: str) -> Measure:
        """vk-local with prod's zstd hidden: a full snapshot into new empty storage."""
        config, where = self.config(f"{tag}-nozstd", s3=False)
        with zstd_hidden(self):
            m, out = self.run(f"vk-nozstd {tag}", self.vk(config, "snapshot", "prod", "--json"))
        doc = json.loads(out)
        m.name = "vk-nozstd"
        m.extra.update(
            status=doc["status"],
            bytes_new=doc["bytes_new"],
            sources={s["name"]: s["seconds"] for s in doc["sources"]},
            compressed_on={s["name"]: s.get("compressed_on") for s in doc["sources"]},
        )
        m.extra["stored"] = tree_bytes(Path(where))
        shutil.rmtree(where, ignore_errors=True)
        return m

    def restic(self, src: Sources, tag: str) -> tuple[Measure, Measure]:
        repo = self.work / "restic" / tag
        subprocess.run(
            ["restic", "-r", str(repo), "init", "-q"], env=self.env, check=True, cwd=REPO
        )
        rounds: list[Measure] = []
        for rnd in (1, 2):
            parts: list[Measure] = []
            added = 0
            for key, cmd in stream_commands(src, 0).items():
                local = shlex.join(
                    ["restic", "-r", str(repo), "backup", "--stdin", "--stdin-filename",
                     f"{key}.stream", "--host", "prod", "--json", "--quiet"]
                )  # fmt: skip
                m, out = self.run(f"restic{'-2' if rnd == 2 else ''} {key} {tag}",
                                  self.pipe("prod", cmd, local))  # fmt: skip
                for line in out.splitlines():
                    with contextlib.suppress(ValueError):
                        doc = json.loads(line)
                        if doc.get("message_type") == "summary":
                            added += int(doc.get("data_added", 0))
                parts.append(m)
            total = combine("restic" if rnd == 1 else "restic-2", parts)
            total.extra["data_added"] = added
            total.extra["stored"] = tree_bytes(repo)
            rounds.append(total)
        return rounds[0], rounds[1]

    def restic_latest(self, repo: Path) -> dict[str, str]:
        """The newest snapshot id per stdin filename ("db.stream" -> id) in *repo*."""
        cp = subprocess.run(
            ["restic", "-r", str(repo), "snapshots", "--json", "--latest", "1", "--host", "prod"],
            env=self.env, capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        return {Path(sn["paths"][0]).name: sn["id"] for sn in json.loads(cp.stdout) or []}

    def restic_restore(self, src: Sources, tag: str) -> Measure:
        """`restic dump` of each stream's newest snapshot over OpenSSH into
        `cat > /dev/null` on fresh: restic's side of a restore, the same bytes back."""
        repo = self.work / "restic" / tag
        ids = self.restic_latest(repo)
        parts = []
        for key in stream_commands(src, 0):
            name = f"{key}.stream"
            if name not in ids:
                raise CommandFailed(f"restic-restore: no snapshot of {name} in {repo}: {ids}")
            dump = shlex.join(["restic", "-r", str(repo), "dump", ids[name], f"/{name}"])
            script = dump + " | " + shlex.join([*self.ssh("fresh"), "cat > /dev/null"])
            m, _ = self.run(f"restic-restore {key} {tag}", ["bash", "-o", "pipefail", "-c", script])
            parts.append(m)
        total = combine("restic-restore", parts)
        total.extra["snapshots"] = ids
        return total

    def age(self, src: Sources, tag: str) -> Measure:
        out_dir = self.work / "age" / tag
        out_dir.mkdir(parents=True, exist_ok=True)
        parts = []
        for key, cmd in stream_commands(src, 1).items():
            dest = out_dir / f"{key}.age"
            local = shlex.join(["age", "-r", self.lab.recipient, "-o", str(dest)])
            m, _ = self.run(f"ssh+age {key} {tag}", self.pipe("prod", cmd, local))
            parts.append(m)
        total = combine("ssh+age", parts)
        total.extra["stored"] = tree_bytes(out_dir)
        shutil.rmtree(out_dir)
        return total

    def pg_dump(self, src: Sources, tag: str) -> Measure:
        dest = self.work / f"pg_dump-{tag}.dump"
        m, _ = self.run(
            f"pg_dump {tag}",
            self.pipe("prod", src.pg_dump(None), f"cat > {shlex.quote(str(dest))}"),
        )
        m.name = "pg_dump"
        m.extra["stored"] = dest.stat().st_size
        dest.unlink()
        return m

    def vk_restore(self, name: str, config: Path) -> Measure:
        """`reset-fresh`, then `vkbackup restore latest` of prod onto fresh from *config*'s
        storage; its report's RTO and steps in extra (a failure is a row, not an error)."""
        self.lab_cmd("reset-fresh")
        m, out = self.run(
            name,
            self.vk(config, "restore", "latest", "--host", "prod", "--to", "fresh",
                    "--playbook", str(PLAYBOOK), "--yes", "--json"),
            check=False,
        )  # fmt: skip
        try:
            doc = json.loads(out)
        except ValueError:
            doc = {"status": "failed", "error": f"no JSON report (exit {m.extra['exit']})"}
        m.extra.update(
            status=doc.get("status"),
            error=doc.get("error"),
            rto_seconds=doc.get("rto_seconds"),
            steps={s["id"]: round(float(s["seconds"]), 2) for s in doc.get("steps", [])},
            timeline=[
                [s["id"], round(float(s.get("started", 0.0)), 2), round(float(s["seconds"]), 2)]
                for s in doc.get("steps", [])
            ],
        )
        return m

    def restore(self, config: Path, storage: Path) -> tuple[Measure, Measure]:
        m = self.vk_restore("vk-restore", config)
        manifest = sorted((storage / "snapshots" / "prod").glob("*.json"))[-1]
        objects = json.loads(manifest.read_text())["objects"]
        files = [str(storage / o["key"]) for o in objects]
        raw_local = "cat " + " ".join(shlex.quote(f) for f in files)
        script = raw_local + " | " + shlex.join([*self.ssh("fresh"), "cat > /dev/null"])
        raw, _ = self.run("raw-transfer", ["bash", "-o", "pipefail", "-c", script])
        raw.extra["bytes"] = sum(int(o["size"]) for o in objects)
        m.extra["bytes"] = raw.extra["bytes"]
        return m, raw

    def break_glass(self, storage: Path) -> Measure:
        """The same restore by hand with stock tools: every `sh` block of
        restore-playbooks/BREAK-GLASS.md (as tests/e2e/test_break_glass.py runs it),
        onto a reset fresh host, from the same local storage. Its last block curls
        the health URLs once: it ends when the services answer."""
        from tests.e2e.test_break_glass import guide_script, public_line

        self.lab_cmd("reset-fresh")
        signer = public_line(self.lab.paths.signing_key)
        script = guide_script(storage, Path(self.lab.identity), self.ssh("fresh"), signer)
        path = self.work / "break-glass.sh"
        path.write_text(script)
        m, _ = self.run("break-glass", ["bash", str(path)], check=False)
        return m

    def profile(self, tag: str, out_dir: Path) -> dict[str, Any]:
        """py-spy (if installed) over one more local snapshot: top functions by samples."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.access(spy, os.X_OK):
            return {"error": "py-spy is not installed (pip install py-spy)"}
        config, _ = self.config(f"{tag}-profile", s3=False)
        raw = out_dir / f"profile-{tag}.txt"
        argv = [spy, "record", "-r", "200", "--format", "raw", "-o", str(raw), "--",
                *self.vk(config, "snapshot", "prod", "--json")]  # fmt: skip
        m, _ = self.run(f"py-spy {tag}", argv)
        return {"file": str(raw), "wall": m.wall, **summarize_profile(raw)}

    def one_size(self, label: str, scale: float) -> dict[str, Any]:
        log(f"== size {label}: scale {scale}")
        if not self.args.no_reseed and abs(self.lab.scale - scale) > 1e-9:
            self.lab_cmd("reset-prod", "--scale", str(scale))
        elif self.args.no_reseed:
            log(f"--no-reseed: using prod as it is (scale {self.lab.scale})")
        src = Sources.from_config(self.lab.config_path)
        facts = self.facts(src)
        log(f"data {mb(facts['data_bytes']):.0f} MB, source streams {facts['stream_bytes']}")

        runs: dict[str, list[Measure]] = {}
        last_local: tuple[Path, Path] | None = None
        last_s3: Path | None = None  # the config of the last vk-s3, for vk-restore-s3
        with contextlib.ExitStack() as s3_cleanup:  # its prefix: deleted after that restore
            for rep in range(self.args.repeat):
                tag = f"{label}-{rep}"
                m, m2 = self.vk_snapshot(tag, s3=False, second=True)
                runs.setdefault("vk-local", []).append(m)
                if m2 is not None:
                    runs.setdefault("vk-local-2", []).append(m2)
                last_local = (Path(m.extra["config"]), self.work / "storage" / tag)
                if "nozstd" not in self.skip:
                    runs.setdefault("vk-nozstd", []).append(self.vk_nozstd(tag))
                if "restic" not in self.skip:
                    r1, r2 = self.restic(src, tag)
                    runs.setdefault("restic", []).append(r1)
                    runs.setdefault("restic-2", []).append(r2)
                    runs.setdefault("restic-restore", []).append(self.restic_restore(src, tag))
                if "age" not in self.skip:
                    runs.setdefault("ssh+age", []).append(self.age(src, tag))
                if "pg_dump" not in self.skip:
                    runs.setdefault("pg_dump", []).append(self.pg_dump(src, tag))
                if "s3" not in self.skip:
                    keep = "restore" not in self.skip and rep == self.args.repeat - 1
                    s3m, _ = self.vk_snapshot(tag, s3=True, second=False, keep_s3=keep)
                    runs.setdefault("vk-s3", []).append(s3m)
                    if keep:
                        s3_cleanup.callback(self.s3_bytes, s3m.extra["prefix"], True)
                        last_s3 = Path(s3m.extra["config"])
            results = {k: best(v) for k, v in runs.items()}
            if "restore" not in self.skip and last_local is not None:
                rm, raw = self.restore(*last_local)
                results["vk-restore"] = rm
                results["raw-transfer"] = raw
                if last_s3 is not None:
                    results["vk-restore-s3"] = self.vk_restore("vk-restore-s3", last_s3)
                results["break-glass"] = self.break_glass(last_local[1])
        prof = None
        if self.args.profile:
            prof = self.profile(label, self.out_dir)
        for rep in range(self.args.repeat):  # the local stores are no longer needed
            shutil.rmtree(self.work / "storage" / f"{label}-{rep}", ignore_errors=True)
            shutil.rmtree(self.work / "restic" / f"{label}-{rep}", ignore_errors=True)
        doc = {
            "label": label,
            "facts": facts,
            "runs": {k: asdict(v) for k, v in results.items()},
            "ratios": ratios(facts, results),
            "profile": prof,
        }
        print_size(doc)
        return doc

    out_dir: Path = RESULTS


# -- prod without zstd (issue 18; benchmarks/nozstd.py uses these too) ----------------------------


@contextlib.contextmanager
def zstd_hidden(bench: Bench) -> Iterator[None]:
    """prod without zstd for the block, put back on any exit."""
    bench.lab.ssh("prod", f"mv {ZSTD} {HIDDEN}")
    try:
        gone = bench.lab.ssh("prod", "command -v zstd || echo none").stdout.strip()
        assert gone == "none", f"prod still has a zstd: {gone}"
        yield
    finally:
        bench.lab.ssh("prod", f"mv {HIDDEN} {ZSTD}")


def put_back(bench: Bench) -> None:
    """An earlier run died with zstd hidden: put it back."""
    bench.lab.ssh("prod", f"if [ -e {HIDDEN} ]; then mv {HIDDEN} {ZSTD}; fi")


# -- analysis and reports ----------------------------------------------------------------------


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n

    def pick(d: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [(k, round(100 * v / max(total, 1), 1)) for k, v in ranked]

    return {"samples": total, "self_pct": pick(own), "inclusive_pct": pick(incl)}


def critical_path(timeline: list[list[Any]]) -> list[str]:
    """Given a restore's [id, started, seconds] per step, the chain that set its RTO:
    from the step that ended last, back through the step that ended last before each
    one started (and started before it), as "id seconds" strings, first step first."""
    spans = [(str(i), float(a), float(b)) for i, a, b in timeline if float(b) > 0 or a == 0]
    if not spans:
        return []
    chain: list[str] = []
    cur = max(spans, key=lambda x: x[1] + x[2])
    while True:
        chain.append(f"{cur[0]} {cur[2]:.1f}s")
        end = cur[1] + cur[2]
        # 50 ms of rounding; strictly earlier ends, so the walk moves back and stops
        before = [x for x in spans if x[1] <= cur[1] and x[1] + x[2] <= cur[1] + 0.05
                  and x[1] + x[2] < end]  # fmt: skip
        if not before:
            return list(reversed(chain))
        cur = max(before, key=lambda x: x[1] + x[2])


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(facts: dict[str, Any], r: dict[str, Measure]) -> dict[str, Any]:
    """Ratios against each peer and the issue's targets (throughput = inverse time)."""
    vk = r.get("vk-local")
    out: dict[str, Any] = {}

    def wall(k: str) -> float | None:
        return r[k].wall if k in r else None

    def stored(k: str) -> float | None:
        return float(r[k].extra["stored"]) if k in r and "stored" in r[k].extra else None

    if vk is None:
        return out
    out["throughput_vs_restic"] = _ratio(wall("restic"), vk.wall)
    out["throughput_vs_age"] = _ratio(wall("ssh+age"), vk.wall)
    out["s3_throughput_vs_restic"] = _ratio(wall("restic"), wall("vk-s3"))
    out["s3_throughput_vs_age"] = _ratio(wall("ssh+age"), wall("vk-s3"))
    out["nozstd_throughput_vs_restic"] = _ratio(wall("restic"), wall("vk-nozstd"))
    out["nozstd_throughput_vs_age"] = _ratio(wall("ssh+age"), wall("vk-nozstd"))
    snaps = ("vk-local", "vk-s3", "vk-local-2", "vk-nozstd")
    out["rss_mib"] = round(max(r[k].max_rss_kib for k in snaps if k in r) / 1024, 1)
    restores = [r[k].max_rss_kib for k in ("vk-restore", "vk-restore-s3") if k in r]
    out["restore_rss_mib"] = round(max(restores) / 1024, 1) if restores else None
    out["stored_vs_restic"] = _ratio(stored("vk-local"), stored("restic"))
    out["stored_vs_age"] = _ratio(stored("vk-local"), stored("ssh+age"))
    if "chatwoot-db" in vk.extra.get("sources", {}):
        out["db_seconds_vs_pg_dump"] = _ratio(vk.extra["sources"]["chatwoot-db"], wall("pg_dump"))
    if "vk-local-2" in r:
        v2 = r["vk-local-2"]
        out["second_time_vs_first"] = _ratio(v2.wall, vk.wall)
        out["second_bytes_vs_first"] = _ratio(float(v2.extra["bytes_new"]), stored("vk-local"))
        if "restic-2" in r:
            out["second_time_vs_restic_second"] = _ratio(v2.wall, wall("restic-2"))
            out["second_bytes_vs_restic_second"] = _ratio(
                float(v2.extra["bytes_new"]), float(r["restic-2"].extra["data_added"])
            )
    if "vk-restore" in r and "raw-transfer" in r:
        rto = r["vk-restore"].extra.get("rto_seconds")
        out["rto_seconds"] = rto
        out["rto_vs_raw"] = _ratio(rto, r["raw-transfer"].wall)
        out["restore_wall_vs_raw"] = _ratio(r["vk-restore"].wall, r["raw-transfer"].wall)
        timeline = r["vk-restore"].extra.get("timeline") or []
        out["restore_critical_path"] = critical_path(timeline)
    # issue 18's RTO bound: at most 5x the raw transfer at 1 GiB, 4x at 4 GiB
    out["rto_vs_raw_target"] = 4.0 if facts.get("source_bytes", 0) >= 3e9 else 5.0
    for key, run in (("s3_rss_mib", "vk-s3"), ("restore_s3_rss_mib", "vk-restore-s3")):
        out[key] = round(r[run].max_rss_kib / 1024, 1) if run in r else None
    if "vk-restore" in r and "break-glass" in r and r["break-glass"].extra.get("exit") == 0:
        out["rto_vs_break_glass"] = _ratio(
            r["vk-restore"].extra.get("rto_seconds"), r["break-glass"].wall
        )
    checks = {
        "throughput_vs_restic": ("ge", TARGETS["throughput_vs_restic"]),
        "throughput_vs_age": ("ge", TARGETS["throughput_vs_age"]),
        "nozstd_throughput_vs_restic": ("ge", TARGETS["nozstd_throughput_vs_restic"]),
        "nozstd_throughput_vs_age": ("ge", TARGETS["nozstd_throughput_vs_age"]),
        "rss_mib": ("le", TARGETS["rss_mib"]),
        "stored_vs_restic": ("le", TARGETS["stored_vs_restic"]),
        "rto_vs_raw": ("le", out.get("rto_vs_raw_target", TARGETS["rto_vs_raw"])),
        "rto_vs_break_glass": ("le", TARGETS["rto_vs_break_glass"]),
        "s3_rss_mib": ("le", TARGETS["s3_rss_mib"]),
        "restore_s3_rss_mib": ("le", TARGETS["s3_rss_mib"]),
    }
    out["targets"] = {
        k: (None if out.get(k) is None else (out[k] >= v if op == "ge" else out[k] <= v))
        for k, (op, v) in checks.items()
    }
    return out


ORDER = ["vk-local", "vk-s3", "vk-nozstd", "restic", "ssh+age", "pg_dump", "vk-local-2",
         "restic-2", "vk-restore", "vk-restore-s3", "restic-restore", "raw-transfer",
         "break-glass"]  # fmt: skip
RESTORES = ("vk-restore", "vk-restore-s3", "restic-restore", "raw-transfer", "break-glass")
WHAT = {
    "vk-local": "vkbackup snapshot, local dir (full)",
    "vk-s3": "vkbackup snapshot, SeaweedFS S3 (full)",
    "vk-nozstd": "vkbackup snapshot, prod without zstd, local dir (full)",
    "restic": "ssh \\| restic backup --stdin (db -Z0, tar, docker save)",
    "ssh+age": "ssh \\| age -r (db -Z1, tar, docker save)",
    "pg_dump": "ssh pg_dump -Fc > file (database only)",
    "vk-local-2": "vkbackup 2nd snapshot, unchanged",
    "restic-2": "restic 2nd backup, unchanged",
    "vk-restore": "vkbackup restore latest --to fresh",
    "vk-restore-s3": "vkbackup restore latest --to fresh, from SeaweedFS S3",
    "restic-restore": "restic dump \\| ssh fresh cat >/dev/null (the 3 streams)",
    "raw-transfer": "cat objects \\| ssh fresh cat >/dev/null",
    "break-glass": "BREAK-GLASS.md by hand: age, zstd, tar, docker, pg_restore",
}


def _row(doc: dict[str, Any], key: str) -> dict[str, str] | None:
    run = doc["runs"].get(key)
    if run is None:
        return None
    src = doc["facts"]["source_bytes"]
    c = run["counters"]
    stored = run["extra"].get("stored")
    if key.endswith("-2"):
        stored = run["extra"].get("bytes_new", run["extra"].get("data_added"))
    if key == "raw-transfer":
        stored = run["extra"].get("bytes")
    if key == "break-glass":
        stored = None
    host = c.get("prod.host", 0.0) + c.get("prod.ctr", 0.0)
    if key in RESTORES:
        host = c.get("fresh.host", 0.0) + c.get("fresh.ctr", 0.0)
    proxy = sum(v for k, v in c.items() if k.endswith(".proxy"))
    hosts = sum(v for k, v in c.items() if k.endswith((".host", ".ctr")))
    other = c.get("machine", 0.0) - run["cpu"] - hosts - proxy - c.get("s3", 0.0)
    s3 = key in ("vk-s3", "vk-restore-s3")
    total = run["cpu"] + host + proxy + (c.get("s3", 0.0) if s3 else 0.0)
    # restic-restore moves exactly the source streams, so its MB/s compares with the rest
    no_rate = ("pg_dump", "vk-restore", "vk-restore-s3", "raw-transfer", "break-glass")
    rate = "" if key in no_rate else f"{mb(src) / run['wall']:.0f}"
    if run["extra"].get("exit") not in (0, None):
        rate = f"FAILED (exit {run['extra']['exit']})"
    if key in ("vk-restore", "vk-restore-s3"):
        rto = run["extra"].get("rto_seconds")
        rate = f"RTO {rto:.1f}s" if isinstance(rto, int | float) else str(run["extra"].get("error"))
    return {
        "run": key,
        "wall s": f"{run['wall']:.1f}",
        "MB/s": rate,
        "peak RSS MiB": f"{run['max_rss_kib'] / 1024:.0f}",
        "CPU s here": f"{run['cpu']:.1f}",
        "CPU s host": f"{host:.1f}",
        "CPU s proxy": f"{proxy:.1f}",
        "CPU s S3": f"{c.get('s3', 0.0):.1f}" if s3 else "",
        "CPU s total": f"{total:.1f}",
        "CPU s other": f"{max(other, 0.0):.1f}",
        "stored MB": "" if stored is None else f"{mb(float(stored)):.1f}",
    }


def table(doc: dict[str, Any], markdown: bool) -> str:
    rows = [r for r in (_row(doc, k) for k in ORDER) if r]
    if not rows:
        return ""
    cols = list(rows[0])
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
        return "\n".join(lines)
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(widths[c]) if i else c.ljust(widths[c]) for i, c in enumerate(cols))]
    for r in rows:
        lines.append(
            "  ".join(
                r[c].rjust(widths[c]) if i else r[c].ljust(widths[c]) for i, c in enumerate(cols)
            )
        )
    return "\n".join(lines)


def ratio_lines(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, value, target) for the size's ratios."""
    r = doc["ratios"]
    t = r.get("targets", {})

    def fmt(v: Any, unit: str = "x") -> str:
        return "n/a" if v is None else f"{v:.2f}{unit}"

    def mark(k: str) -> str:
        return {True: "met", False: "MISSED", None: "n/a"}[t.get(k)]

    return [
        ("throughput vs restic (restic s / vk-local s)", fmt(r.get("throughput_vs_restic")),
         f">= 1.0x: {mark('throughput_vs_restic')}"),
        ("throughput vs ssh+age", fmt(r.get("throughput_vs_age")),
         f">= 0.6x: {mark('throughput_vs_age')}"),
        ("S3 throughput vs restic / vs ssh+age",
         f"{fmt(r.get('s3_throughput_vs_restic'))} / {fmt(r.get('s3_throughput_vs_age'))}", ""),
        ("vk-nozstd throughput vs restic (prod without zstd)",
         fmt(r.get("nozstd_throughput_vs_restic")),
         f">= 1.0x: {mark('nozstd_throughput_vs_restic')}"),
        ("vk-nozstd throughput vs ssh+age", fmt(r.get("nozstd_throughput_vs_age")),
         f">= 0.6x: {mark('nozstd_throughput_vs_age')}"),
        ("peak RSS of vkbackup snapshot (local, S3, 2nd, no zstd)",
         fmt(r.get("rss_mib"), " MiB"), f"<= 150 MiB: {mark('rss_mib')}"),
        ("peak RSS of vkbackup restore (local, S3)", fmt(r.get("restore_rss_mib"), " MiB"), ""),
        ("bytes stored vs restic", fmt(r.get("stored_vs_restic")),
         f"<= 1.1x: {mark('stored_vs_restic')}"),
        ("bytes stored vs ssh+age", fmt(r.get("stored_vs_age")), ""),
        ("vk database source time vs pg_dump -Fc", fmt(r.get("db_seconds_vs_pg_dump")), ""),
        ("2nd snapshot: time vs 1st / bytes vs 1st", f"{fmt(r.get('second_time_vs_first'))}"
         f" / {fmt(r.get('second_bytes_vs_first'))}", ""),
        ("2nd snapshot vs restic's 2nd: time / bytes added",
         f"{fmt(r.get('second_time_vs_restic_second'))} / "
         f"{fmt(r.get('second_bytes_vs_restic_second'))}", ""),
        ("peak RSS of vkbackup snapshot to S3", fmt(r.get("s3_rss_mib"), " MiB"),
         f"<= 100 MiB: {mark('s3_rss_mib')}"),
        ("peak RSS of vkbackup restore from S3", fmt(r.get("restore_s3_rss_mib"), " MiB"),
         f"<= 100 MiB: {mark('restore_s3_rss_mib')}"),
        ("restore RTO vs raw transfer (wall vs raw)",
         f"{fmt(r.get('rto_vs_raw'))} ({fmt(r.get('restore_wall_vs_raw'))})",
         f"<= {r.get('rto_vs_raw_target', 5.0):.0f}x: {mark('rto_vs_raw')}"),
        ("restore RTO vs the same restore by hand (BREAK-GLASS.md)",
         fmt(r.get("rto_vs_break_glass")), f"<= 0.5x: {mark('rto_vs_break_glass')}"),
        ("restore critical path (the steps that set the RTO)",
         " -> ".join(r.get("restore_critical_path") or []) or "n/a", ""),
    ]  # fmt: skip


def downtime_lines(vk: dict[str, Any]) -> list[str]:
    """`downtime CONTAINER: S s (copy S s)` per container a vk-local run held still; the
    copy is the seconds of the volume source that held it, when recorded. A container
    held by two sources is named with each."""
    extra = vk["extra"]
    held: dict[str, dict[str, float]] = extra.get("downtime_containers") or {}
    copies = extra.get("sources") or {}
    count: dict[str, int] = {}
    for per in held.values():
        for container in per:
            count[container] = count.get(container, 0) + 1
    lines = []
    for source, per in held.items():
        copy = copies.get(source)
        for container, secs in per.items():
            name = container if count[container] == 1 else f"{container} ({source})"
            line = f"downtime {name}: {secs:.1f} s"
            if isinstance(copy, int | float):
                line += f" (copy {copy:.1f} s)"
            lines.append(line)
    return lines


def size_title(doc: dict[str, Any]) -> str:
    f = doc["facts"]
    s = f["stream_bytes"]
    return (
        f"{doc['label']}: lab scale {f['scale']}, database {mb(f['database_bytes']):.0f} MB + "
        f"attachments {mb(f['attachments_bytes']):.0f} MB = {mb(f['data_bytes']):.0f} MB; "
        f"source streams {mb(f['source_bytes']):.0f} MB (tar {mb(s['volumes']):.0f}, "
        f"docker save {mb(s['images']):.0f}, pg_dump -Z0 {mb(s['db']):.0f})"
    )


def print_size(doc: dict[str, Any]) -> None:
    print(f"\n== {size_title(doc)}")
    print(table(doc, markdown=False))
    for what, value, target in ratio_lines(doc):
        print(f"  {what:55} {value:>20}  {target}")
    vk = doc["runs"].get("vk-local")
    if vk:
        print(f"  vk-local per source (s, parallel): {vk['extra'].get('sources')}")
        print(f"  vk-local downtime (s): {vk['extra'].get('downtime')}")
        for line in downtime_lines(vk):
            print(f"  {line}")
    nz = doc["runs"].get("vk-nozstd")
    if nz:
        print(f"  vk-nozstd compressed on: {nz['extra'].get('compressed_on')}")
    rs = doc["runs"].get("vk-restore")
    if rs:
        print(f"  restore steps (s): {rs['extra'].get('steps')}")
    prof = doc.get("profile")
    if prof and "self_pct" in prof:
        print(f"  py-spy ({prof['samples']} samples, active threads) top self %:")
        for fn, pct in prof["self_pct"][:10]:
            print(f"    {pct:5.1f}%  {fn}")
    sys.stdout.flush()


def machine_facts() -> dict[str, Any]:
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str]) -> str:
        cp = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (cp.stdout + cp.stderr).strip().splitlines()[0] if cp.stdout + cp.stderr else "?"

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ssh": version(["ssh", "-V"]),
        "age": version(["age", "--version"]),
        "restic": version(["restic", "version"]),
        "commit": commit,
    }


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        MARK.format("start", doc["size_set"]),
        f"Generated by `{doc['command']}` on {doc['started']} (commit {m['commit']}; "
        f"{doc['seconds'] / 60:.0f} min).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}; load average before "
        f"{', '.join(f'{x:.2f}' for x in doc['load_before'])}, after "
        f"{', '.join(f'{x:.2f}' for x in doc['load_after'])}. Peers: {m['ssh']}; age "
        f"{m['age']}; {m['restic']}. Best of {doc['repeat']} run(s) each.",
        "",
    ]
    for size in doc["sizes"]:
        lines += [f"### {size_title(size)}", "", table(size, markdown=True), ""]
        lines += ["| ratio | value | target |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in ratio_lines(size)]
        vk = size["runs"].get("vk-local")
        if vk:
            secs = ", ".join(f"{k} {v:.1f}" for k, v in vk["extra"]["sources"].items())
            lines += ["", f"vk-local seconds per source (2 at a time): {secs}."]
            down = ", ".join(
                f"{k} {v:.1f}" for k, v in vk["extra"].get("downtime", {}).items() if v is not None
            )
            lines += ["", f"vk-local downtime of the held containers per volume (s): {down}."]
            each = downtime_lines(vk)
            if each:
                lines += ["", "vk-local downtime per held container:", ""]
                lines += [f"- {line}" for line in each]
        rs = size["runs"].get("vk-restore")
        if rs and rs["extra"].get("steps"):
            steps = ", ".join(f"{k} {v:.1f}" for k, v in rs["extra"]["steps"].items() if v >= 0.5)
            lines += ["", f"Restore steps >= 0.5 s: {steps}."]
        lines.append("")
    lines.append(
        "Columns: CPU s here = user+sys of the local process tree (vkbackup, or ssh + "
        "age/restic/cat); CPU s host = prod's (fresh's for restore rows) sshd, tar, gzip, "
        "docker and containers (cgroups); proxy = the lab's loopback docker-proxy in front "
        "of sshd; total = here + host + proxy (+ the S3 server for vk-s3 and vk-restore-s3); "
        "other = the rest of the machine's busy CPU during the run (idle lab services, other "
        "work). MB/s = source streams MB / wall. Stored MB for 2nd runs = bytes uploaded / "
        "added."
    )
    lines.append(MARK.format("end", doc["size_set"]))
    return "\n".join(lines)


def write_markdown(path: Path, block: str, size_set: str) -> None:
    """Replace this size set's block in *path* (or append it); the rest stays as written."""
    start, end = MARK.format("start", size_set), MARK.format("end", size_set)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="256M,1G", help="database + volumes sizes")
    parser.add_argument("--scales", default="", help="lab scale per size (default: from a fit)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (best kept)")
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of: restic (and restic-restore), age, pg_dump, s3, restore, nozstd",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy one more vk snapshot")
    parser.add_argument("--workdir", default=None, help="scratch space (default: a temp dir)")
    parser.add_argument("--markdown", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.25,
        help="start a run when the machine is "
        "less busy than this fraction of all cores (idle lab: ~0.06)",
    )
    parser.add_argument("--quiet-wait", type=float, default=180, help="max seconds to wait")
    parser.add_argument(
        "--vkbackup-src",
        default="",
        help="directory holding a modified copy of the vkbackup package, to measure a change "
        "without touching the work tree",
    )
    parser.add_argument(
        "--vk-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for vkbackup's runs (e.g. MALLOC_ARENA_MAX=2)",
    )
    parser.add_argument(
        "--render", default="", metavar="JSON", help="only rewrite the Markdown from a results file"
    )
    parser.add_argument("--keep-scale", action="store_true", help="leave prod at the last scale")
    parser.add_argument("--no-reseed", action="store_true", help="use prod as it is (one size)")
    args = parser.parse_args()

    if args.render:
        saved = json.loads(Path(args.render).read_text())
        if saved["command"].startswith("python "):
            saved["command"] = ".venv/bin/" + saved["command"]
        saved.setdefault("size_set", ",".join(s["label"] for s in saved["sizes"]))
        for size in saved["sizes"]:
            size["ratios"] = ratios(
                size["facts"], {k: Measure(**v) for k, v in size["runs"].items()}
            )
        if not args.markdown:  # --markdown '': the tables on stdout only
            for size in saved["sizes"]:
                print_size(size)
            return
        write_markdown(Path(args.markdown), markdown(saved), saved["size_set"])
        log(f"tables from {args.render} written to {args.markdown}")
        return
    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    if scales and len(scales) != len(labels):
        parser.error("--scales needs one scale per size")
    if not scales:
        scales = [scale_for(parse_size(s)) for s in labels]
    if not os.access(GNU_TIME, os.X_OK):
        parser.error(f"{GNU_TIME} is needed (apt-get install time)")
    for tool in ("ssh", "age", "restic", "docker"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH")

    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python benchmarks/run.py " + shlex.join(sys.argv[1:])
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": machine_facts(),
        "load_before": list(os.getloadavg()),
        "repeat": args.repeat,
        "size_set": ",".join(labels),
        "sizes": [],
    }
    t0 = time.monotonic()
    out_json = RESULTS / f"{stamp}.json"
    with contextlib.ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir) / f"vkbench-{stamp}"
            work.mkdir(parents=True)
            stack.callback(shutil.rmtree, work, True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vkbench-")))
        bench = Bench(args, work, stamp)
        bench.out_dir = RESULTS
        put_back(bench)
        try:
            for label, scale in zip(labels, scales, strict=True):
                doc["sizes"].append(bench.one_size(label, scale))
                doc["seconds"] = time.monotonic() - t0
                doc["load_after"] = list(os.getloadavg())
                out_json.write_text(json.dumps(doc, indent=1))
                if args.markdown:  # after every size: an interrupted run keeps what it had
                    write_markdown(Path(args.markdown), markdown(doc), doc["size_set"])
        finally:
            if not args.keep_scale:
                with contextlib.suppress(subprocess.CalledProcessError):
                    bench.lab_cmd("reset-prod", "--scale", "1")
            with contextlib.suppress(subprocess.CalledProcessError):
                bench.lab_cmd("reset-fresh")
    doc["seconds"] = time.monotonic() - t0
    doc["load_after"] = list(os.getloadavg())
    out_json.write_text(json.dumps(doc, indent=1))
    log(f"results: {out_json}")
    if args.markdown and doc["sizes"]:
        write_markdown(Path(args.markdown), markdown(doc), doc["size_set"])
        log(f"tables written to {args.markdown}")


if __name__ == "__main__":
    main()
