"""`vkbackup restore SNAPSHOT --to HOST`: rebuild a host's stack from a snapshot.

    storage get -> verify size+sha256 -> age decrypt -> SSH exec on target -> source restore

Interface:
    build_plan(storage, ref, identities, playbook, host=None) -> (Manifest, Plan)
    run_restore(plan, manifest, target, *, storage, connect, identities, force=False,
                confirm=None, progress=None) -> RestoreReport
        Runs the plan's steps in order on *target*; a run of consecutive image
        and volume steps (data only, independent) runs 2 at a time, each on
        its own SSH connection (`data_step_groups`). Each resumable step is
        recorded on the target when done and verified
        (/var/lib/vkbackup/restore/<snapshot>.json), so a re-run after a
        failure or Ctrl-C continues where it stopped, and a re-run after
        success changes nothing. Preflight refuses a target that already runs
        the snapshot's containers, has data in its volumes or has its files,
        unless *force* (or the target holds this snapshot's resume state).
        Every object is checked against the manifest (size, sha256) and
        authenticated by age before its last byte reaches the target; a step
        that fails stops the restore before any service starts on bad data.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from vkbackup import catalog, restore_streams
from vkbackup.actions.common import iso, utcnow
from vkbackup.config.model import HostConfig
from vkbackup.crypto import DecryptingReader, Identity
from vkbackup.errors import IntegrityError, RestoreError, VkError
from vkbackup.logs import get_logger
from vkbackup.manifest import Manifest, ObjectRecord, open_private
from vkbackup.playbook import Playbook
from vkbackup.progress import CountingReader, Progress
from vkbackup.restore_plan import Plan, Step, derive_plan
from vkbackup.sources import docker_image, docker_volume, files, postgres
from vkbackup.storage.base import Storage
from vkbackup.streams import VerifyingReader, iter_chunks
from vkbackup.targuard import GuardState
from vkbackup.transport.base import Transport, pipeline_argv

log = get_logger("restore")
STATE_DIR = "/var/lib/vkbackup/restore"
Connect = Callable[[HostConfig], Transport]


@dataclass
class StepResult:
    id: str
    kind: str
    title: str
    status: str  # done | already-done | failed | skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class RestoreReport:
    snapshot: str
    host: str
    target: str
    playbook: str
    started: str
    finished: str = ""
    status: str = "running"  # ok | failed
    rto_seconds: float = 0.0
    snapshot_age_seconds: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    exception: VkError | None = None  # the failure, for the CLI to map to an exit code

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "host": self.host,
            "target": self.target,
            "playbook": self.playbook,
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "rto_seconds": round(self.rto_seconds, 2),
            "snapshot_age_seconds": round(self.snapshot_age_seconds, 1),
            "steps": [s.__dict__ for s in self.steps],
            "verified": self.verified,
            "dns": self.dns,
            "warnings": self.warnings,
            "error": self.error,
        }


def build_plan(
    storage: Storage,
    ref: str,
    identities: Sequence[Identity],
    playbook: Playbook,
    host: str | None = None,
) -> tuple[Manifest, Plan]:
    manifest = catalog.resolve(storage, ref, host)
    private = open_private(manifest, identities)
    return manifest, derive_plan(manifest, private, playbook)


def open_object(storage: Storage, obj: ObjectRecord, identities: Sequence[Identity]) -> Any:
    """A Readable of the object's plaintext, verified against the manifest before EOF."""
    raw = storage.open(obj.key)
    return DecryptingReader(
        VerifyingReader(raw, obj.size, obj.sha256, obj.key), identities, name=obj.key
    )


def read_object(storage: Storage, obj: ObjectRecord, identities: Sequence[Identity]) -> bytes:
    if obj.size > 64 * 1024 * 1024:
        raise IntegrityError(f"{obj.key}: too large to hold in memory ({obj.size} bytes)")
    return b"".join(iter_chunks(open_object(storage, obj, identities)))


def _files_argv(members: list[str], compression: str) -> list[str]:
    return pipeline_argv(files.restore_script(compression, members))


def _volume_argv(volume: str, labels: str, wipe: bool, compression: str) -> list[str]:
    return pipeline_argv(docker_volume.restore_script(volume, labels, compression, wipe))


def state_path(snapshot_id: str) -> str:
    return f"{STATE_DIR}/{snapshot_id}.json"


def load_state(t: Transport, snapshot_id: str) -> dict[str, Any] | None:
    """This snapshot's restore state on the target: None if there is none; {} if a state
    file exists but cannot be read (a restore of this snapshot was under way)."""
    p = shlex.quote(state_path(snapshot_id))
    res = t.run(["bash", "-c", f"[ -e {p} ] || exit 3; cat {p}"], check=False)
    if res.status == 3:
        return None
    try:
        doc = json.loads(res.stdout)
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}


def save_state(t: Transport, snapshot_id: str, state: dict[str, Any]) -> None:
    """Write the state atomically: the file is replaced only if every byte arrived
    (a connection cut mid-write gives `cat` an early EOF, not an error)."""
    body = json.dumps(state, indent=1).encode()
    p = shlex.quote(state_path(snapshot_id))
    script = (
        f"umask 077; mkdir -p {STATE_DIR} && head -c {len(body)} > {p}.tmp && "
        f'[ "$(stat -c %s {p}.tmp)" = {len(body)} ] && mv {p}.tmp {p}'
    )
    t.run(pipeline_argv(script), input=body)


def compose_flavor(t: Transport) -> list[str] | None:
    if t.run(["docker", "compose", "version"], check=False).status == 0:
        return ["docker", "compose"]
    if t.run(["bash", "-c", "command -v docker-compose"], check=False).status == 0:
        return ["docker-compose"]
    return None


ENSURE_DOCKER = r"""
if ! docker info >/dev/null 2>&1; then
  if ! command -v docker >/dev/null 2>&1; then
    command -v apt-get >/dev/null || {
      echo "no docker and no apt-get: install Docker Engine" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >&2
  fi
  (systemctl start docker 2>/dev/null || (nohup dockerd >/var/log/dockerd.log 2>&1 &)) || true
  for i in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "Docker Engine did not start" >&2; exit 1; }
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  command -v apt-get >/dev/null || {
    echo "no docker compose: install the compose plugin" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >&2
fi
docker version --format '{{.Server.Version}}'
"""

HTTP_CHECK = r"""
url=$1; rest=${url#http://}; hostport=${rest%%/*}; path=/${rest#*/}
[ "$rest" = "$hostport" ] && path=/
h=${hostport%%:*}; p=${hostport##*:}; [ "$p" = "$hostport" ] && p=80
exec 3<>/dev/tcp/$h/$p || exit 7
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$h" >&3
IFS= read -r -t 10 line <&3 || exit 8
echo "$line"
"""


HEALTH_POLL_SECONDS = 0.5


def health_probe_argv(containers: list[str], urls: list[str]) -> list[str]:
    """One command for one health round on the target (one SSH round trip): the
    containers' state lines, then '== URL' and the status line of each HTTP check."""
    lines = []
    if containers:
        fmt = (
            "{{.Name}} {{.State.Running}} "
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        )
        lines.append(
            f"docker inspect -f {shlex.quote(fmt)} "
            + " ".join(shlex.quote(c) for c in containers)
            + " 2>/dev/null"
        )
    for u in urls:
        lines.append(f"echo {shlex.quote('== ' + u)}")
        lines.append(f"timeout 12 bash -c {shlex.quote(HTTP_CHECK)} x {shlex.quote(u)}")
    lines.append("true")
    return ["bash", "-c", "\n".join(lines)]


def parse_health_probe(text: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Given health_probe_argv's output, return container -> (running, health) and
    URL -> the HTTP status line it answered ('' when none)."""
    seen: dict[str, tuple[str, str]] = {}
    answers: dict[str, str] = {}
    url: str | None = None
    for line in text.splitlines():
        if line.startswith("== "):
            url = line[3:]
            answers[url] = ""
        elif url is not None:
            if not answers[url]:
                answers[url] = line.strip()
        else:
            parts = line.split()
            if len(parts) == 3:
                seen[parts[0].lstrip("/")] = (parts[1], parts[2])
    return seen, answers


def health_problems(
    containers: list[str],
    checked: list[str],
    http: list[dict[str, Any]],
    seen: dict[str, tuple[str, str]],
    answers: dict[str, str],
) -> list[str]:
    """What is not healthy yet, one phrase each (empty: all healthy)."""
    bad: list[str] = []
    for c in containers:
        running, hstatus = seen.get(c, ("missing", "none"))
        if running != "true":
            bad.append(f"{c} not running")
        elif c in checked and hstatus != "healthy":
            bad.append(f"{c} {hstatus}")
    for h in http:
        line = answers.get(h["url"], "")
        m = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", line)
        if not m or int(m.group(1)) != int(h["expect_status"]):
            bad.append(f"{h['name']} ({h['url']}): {line or 'no answer'}")
    return bad


class _Runner:
    def __init__(
        self,
        plan: Plan,
        manifest: Manifest,
        target: HostConfig,
        t: Transport,
        storage: Storage,
        identities: Sequence[Identity],
        report: RestoreReport,
        progress: Progress,
    ) -> None:
        self.plan = plan
        self.manifest = manifest
        self.target = target
        self.t = t
        self.storage = storage
        self.identities = identities
        self.report = report
        self.progress = progress
        self.compose: list[str] | None = None
        self._has_zstd: bool | None = None

    def sibling(self, t: Transport) -> _Runner:
        """A runner for the same restore on another connection (concurrent steps)."""
        other = _Runner(
            self.plan, self.manifest, self.target, t, self.storage, self.identities,
            self.report, self.progress,
        )  # fmt: skip
        other.compose = self.compose
        other._has_zstd = self._has_zstd
        return other

    def sendable(self, compression: str) -> str:
        """The compression an object can cross to the target in: as stored when the
        target has the decompressor, else "none" (decompressed here, which costs
        bandwidth, not trust: the guard checks the same tar either way)."""
        if compression != "zstd":
            return compression
        if self._has_zstd is None:
            res = self.t.run(["bash", "-c", "command -v zstd"], check=False)
            self._has_zstd = res.status == 0
            if not self._has_zstd:
                log.info("%s has no zstd: zstd objects are decompressed here", self.t.name)
        return "zstd" if self._has_zstd else "none"

    def feed_object(
        self,
        obj: ObjectRecord,
        make_argv: Callable[[str], list[str]],
        guard: dict[str, Any] | None = None,
    ) -> None:
        """Stream one object to the target command make_argv(compression) builds for
        the compression it is sent in (see `sendable`). With *guard* (tar objects),
        every tar header is checked as it passes (vkbackup.targuard): a hostile archive
        (absolute or '..' names, links out of the root, devices) stops the stream
        before the member reaches the target."""
        counter = self.progress.counter(obj.name)
        send = self.sendable(obj.compression)
        closers: list[Any] = []
        if guard is None:
            src: Any = open_object(self.storage, obj, self.identities)
            closers.append(src)
            dec = restore_streams.decoder(obj.compression, obj.key)
            if send != obj.compression and dec is not None:
                src = restore_streams.DecodingReader(src, dec)
        elif send != obj.compression:
            src = restore_streams.open_plain_tar(self.storage, obj, self.identities, **guard)
            closers.append(src)
        else:
            src = restore_streams.open_checked_object(self.storage, obj, self.identities, **guard)
            closers.append(src)
        try:
            self.t.feed(make_argv(send), CountingReader(src, counter))
        finally:
            counter.done = True
            for c in closers:
                close = getattr(c, "close", None)
                if close is not None:
                    close()
        what = "size and sha256 match, age authenticated"
        if guard is not None:
            what += ", tar headers checked"
        if send != obj.compression:
            what += f", {obj.compression} decompressed here"
        self.report.verified.append(f"{obj.key}: {what}")

    # -- steps -------------------------------------------------------------
    def preflight(self, step: Step, resuming: bool, force: bool) -> str:
        names = set(
            self.t.run(["bash", "-c", "docker ps -a --format '{{.Names}}' 2>/dev/null || true"])
            .stdout.decode()
            .split()
        )
        problems: list[str] = []
        expected: set[str] = set()
        for s in self.plan.steps:
            if s.kind == "health":
                expected.update(s.params.get("containers", []))
        clash = sorted(names & expected)
        if clash:
            problems.append(f"containers already exist: {', '.join(clash[:8])}")
        for s in self.plan.steps:
            if s.kind == "volume":
                state = (
                    self.t.run(
                        pipeline_argv(docker_volume.volume_state_script(s.params["volume"])),
                        check=False,
                    )
                    .stdout.decode()
                    .strip()
                )
                if state == "data":
                    problems.append(f"volume {s.params['volume']} exists and holds data")
            if s.kind == "files":
                members = s.params.get("members", [])
                if members:
                    script = (
                        "for f in "
                        + " ".join(shlex.quote(m) for m in members)
                        + '; do [ -e "$f" ] && echo "$f"; done; true'
                    )
                    found = self.t.run(["bash", "-c", script]).stdout.decode().split("\n")
                    found = [f for f in found if f]
                    if found:
                        problems.append(f"files exist: {', '.join(found[:5])}")
        if problems and not (force or resuming):
            raise RestoreError(
                f"{self.t.name}: refusing to restore over a target that is not empty: "
                + "; ".join(problems),
                hint="is this the right host? To overwrite it on purpose, add --force",
            )
        if problems:
            return ("resuming; " if resuming else "--force: ") + "; ".join(problems)
        return "target is empty"

    def ensure_docker(self, step: Step) -> str:
        res = self.t.run(pipeline_argv(ENSURE_DOCKER))
        self.compose = compose_flavor(self.t)
        if self.compose is None:
            raise RestoreError(f"{self.t.name}: docker compose is not available")
        return f"Docker {res.stdout.decode().strip()}, compose: {' '.join(self.compose)}"

    def files(self, step: Step) -> str:
        guard = restore_streams.guard_options("files", step.params["members"])
        for obj in step.objects:
            self.feed_object(obj, partial(_files_argv, step.params["members"]), guard)
        return f"{len(step.params['members'])} paths"

    def image(self, step: Step) -> str:
        for obj in step.objects:
            self.feed_object(obj, docker_image.restore_argv)
        return "loaded"

    def volume(self, step: Step) -> str:
        vol = step.params["volume"]
        self.t.run(
            pipeline_argv(
                f"ids=$(docker ps -q --filter volume={shlex.quote(vol)}); "
                '[ -z "$ids" ] || docker stop $ids >/dev/null'
            )
        )
        chain = sorted(step.objects, key=lambda o: o.chain)
        if [o.chain for o in chain] != list(range(len(chain))):
            have = ", ".join(f"{o.chain}: {o.key}" for o in chain)
            raise IntegrityError(
                f"volume {vol}: broken incremental chain in snapshot {self.manifest.id} "
                f"(levels present: {have}); a level is missing"
            )
        # one guard state across the chain: a symlink left by one level must not be
        # written through by a later one
        state = GuardState()
        for obj in chain:
            guard = {**restore_streams.guard_options("volume"), "state": state}
            argv = partial(_volume_argv, vol, step.params["labels"], obj.chain == 0)
            self.feed_object(obj, argv, guard)
        return f"volume {vol}" + (
            f" (full + {len(chain) - 1} incrementals)" if len(chain) > 1 else ""
        )

    def start(self, step: Step) -> str:
        if self.compose is None:
            self.compose = compose_flavor(self.t)
        if self.compose is None:
            raise RestoreError(f"{self.t.name}: docker compose is not available")
        wd = step.params.get("working_dir")
        if not wd:
            raise RestoreError(f"compose project {step.params['project']}: no working directory")
        # compose v2 records absolute paths, v1 paths relative to the working dir
        cfgs = [
            c if c.startswith("/") else f"{wd.rstrip('/')}/{c}"
            for c in str(step.params.get("config_files") or "").split(",")
            if c
        ]
        fargs: list[str] = []
        for c in cfgs:
            fargs += ["-f", c]
        argv = [
            *self.compose, "-p", step.params["project"], *fargs, "up", "-d", "--no-build",
            *step.params["services"],
        ]  # fmt: skip
        wanted = cfgs or [f"{wd}/docker-compose.yml"]
        check = self.t.run(
            ["bash", "-c", 'for f in "$@"; do [ -f "$f" ] || echo "$f"; done', "x", *wanted]
        ).stdout.decode()
        if check.strip():
            raise RestoreError(
                f"{self.t.name}: compose file missing for project {step.params['project']}: "
                f"{check.strip()}",
                hint="add the compose files to a `files` source so the snapshot carries them",
            )
        self.t.run(pipeline_argv(f"cd {shlex.quote(wd)} && {shlex.join(argv)} 2>&1"))
        return f"{' '.join(self.compose)} up -d {' '.join(step.params['services'])}"

    def database(self, step: Step) -> str:
        p = step.params
        container, user, db = p["container"], p["user"], p["database"]
        self.t.run(pipeline_argv(postgres.wait_ready_script(container, user, 120)))
        num = int(self.t.run(postgres.server_major_argv(container, user)).stdout.decode().strip())
        major = num // 10000 if num >= 100000 else num // 100
        if p.get("major") and int(p["major"]) != major:
            raise RestoreError(
                f"{self.t.name}: container {container} runs PostgreSQL {major}, the dump is "
                f"from PostgreSQL {p['major']}",
                hint="restore into the same major version: use the image recorded in the snapshot",
            )
        objs = {o.role: o for o in step.objects}
        if "pg-globals" in objs:
            sql = postgres.prepare_globals(
                read_object(self.storage, objs["pg-globals"], self.identities), user
            )
            self.t.run(postgres.restore_globals_argv(container, user), input=sql)
            self.report.verified.append(f"{objs['pg-globals'].key}: roles restored")
        dump = objs.get("pg-dump")
        if dump is None:
            raise RestoreError(f"database {db}: the snapshot has no dump object")
        argv = pipeline_argv(postgres.restore_dump_script(container, user, db, major))
        self.feed_object(dump, lambda _compression: argv)  # pg_dump -Fc: stored as is
        res = self.t.run(postgres.psql_argv(container, user, db, postgres.COUNTS_SQL))
        got = postgres.parse_counts(res.stdout.decode())
        want = {k: int(v) for k, v in (p.get("row_counts") or {}).items()}
        diff = sorted(
            f"{k}: expected {want.get(k)}, found {got.get(k)}"
            for k in set(want) | set(got)
            if want.get(k) != got.get(k)
        )
        if diff:
            raise RestoreError(
                f"database {db} restored but row counts differ from the snapshot: "
                + "; ".join(diff[:10])
            )
        self.report.verified.append(
            f"database {db}: row counts of {len(want)} tables equal the snapshot's"
        )
        return f"{len(want)} tables, {sum(want.values())} rows verified"

    def health(self, step: Step) -> str:
        containers: list[str] = step.params["containers"]
        checked: list[str] = step.params["healthchecked"]
        http: list[dict[str, Any]] = step.params["http"]
        deadline = time.monotonic() + float(step.params["timeout"])
        argv = health_probe_argv(containers, [h["url"] for h in http])
        while True:
            res = self.t.run(argv, check=False)
            seen, answers = parse_health_probe(res.stdout.decode(errors="replace"))
            bad = health_problems(containers, checked, http, seen, answers)
            if not bad:
                for c in containers:
                    self.report.verified.append(f"container {c} running")
                for h in http:
                    self.report.verified.append(f"{h['name']}: {h['url']} answered")
                return f"{len(containers)} containers running, {len(http)} HTTP checks passed"
            if time.monotonic() > deadline:
                raise RestoreError(
                    f"{self.t.name}: not healthy after {step.params['timeout']:.0f}s: "
                    + "; ".join(bad),
                    hint="docker logs <container> on the target shows why",
                )
            time.sleep(HEALTH_POLL_SECONDS)

    def dns(self, step: Step) -> str:
        records: list[str] = []
        zone = step.params.get("zone")
        for r in step.params.get("records") or []:
            records.append(f"{r}.{zone}" if zone and not r.endswith(zone) else r)
        if not records:
            text = self.t.run(
                ["bash", "-c", "cat /etc/caddy/Caddyfile 2>/dev/null || true"]
            ).stdout.decode(errors="replace")
            records = caddy_sites(text)
        addr = self.target.address
        self.report.dns = [f"A  {r}  ->  {addr}" for r in records]
        return f"{len(records)} records to point at {addr}"


def caddy_sites(text: str) -> list[str]:
    """Site addresses (host names) of a Caddyfile's top-level blocks."""
    out: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{") and not line.startswith("("):
            for addr in line[:-1].replace(",", " ").split():
                host = re.sub(r"^https?://", "", addr).split(":")[0].split("/")[0]
                if host and "." in host and not host.startswith("*"):
                    out.append(host)
        depth += line.count("{") - line.count("}")
    return out


# Steps that only put data on the target and depend on nothing but Docker: a run of
# them (images, volumes) is restored DATA_STEP_PARALLEL at a time, each on its own
# SSH connection. Everything else runs alone, in plan order.
CONCURRENT_KINDS = frozenset({"image", "volume"})
DATA_STEP_PARALLEL = 2


def data_step_groups(steps: Sequence[Step]) -> list[list[Step]]:
    """Split the plan into groups run one after the other: each maximal run of
    consecutive image/volume steps is one group, every other step its own."""
    groups: list[list[Step]] = []
    for step in steps:
        if groups and step.kind in CONCURRENT_KINDS and groups[-1][-1].kind in CONCURRENT_KINDS:
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _run_concurrently(
    steps: list[Step],
    runner: _Runner,
    connect: Connect,
    run_one: Callable[[_Runner, Step], StepResult],
    record: Callable[[Step, StepResult], None],
    errors: dict[str, VkError],
) -> list[tuple[Step, StepResult]]:
    """Run independent data steps DATA_STEP_PARALLEL at a time, each worker on its
    own connection to the target. Each result is recorded (resume state) as soon as
    its step ends; results come back in plan order. After a failure the steps not
    yet started are skipped (those running finish: their data is sound), and the
    restore stops after the group. Ctrl-C closes every connection, which ends the
    remote commands, and no step starts after it."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    transports: list[Transport] = []
    lock = threading.Lock()
    stop = threading.Event()

    def skipped(step: Step, why: str) -> StepResult:
        return StepResult(step.id, step.kind, step.title, "skipped", 0.0, why)

    def work(step: Step) -> StepResult:
        if stop.is_set():
            return skipped(step, "not started: another step of its group failed")
        try:
            t = connect(runner.target)
        except VkError as e:
            errors[step.id] = e
            stop.set()
            return StepResult(step.id, step.kind, step.title, "failed", 0.0, str(e))
        with lock:
            if stop.is_set():
                t.close()
                return skipped(step, "not started: another step of its group failed")
            transports.append(t)
        try:
            res = run_one(runner.sibling(t), step)
        finally:
            with lock:
                transports.remove(t)
            t.close()
        if res.status == "failed":
            stop.set()
        return res

    pool = ThreadPoolExecutor(max_workers=DATA_STEP_PARALLEL)
    results: dict[str, StepResult] = {}
    try:
        pending: set[Future[StepResult]] = set()
        owner: dict[Future[StepResult], Step] = {}
        for step in steps:
            f = pool.submit(work, step)
            owner[f] = step
            pending.add(f)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                step = owner[f]
                results[step.id] = f.result()
                record(step, results[step.id])
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for t in transports:
                t.close()
        raise
    pool.shutdown(wait=True)
    return [(step, results[step.id]) for step in steps]


def run_restore(
    plan: Plan,
    manifest: Manifest,
    target: HostConfig,
    *,
    storage: Storage,
    connect: Connect,
    identities: Sequence[Identity],
    force: bool = False,
    progress: Progress | None = None,
) -> RestoreReport:
    started = utcnow()
    report = RestoreReport(
        snapshot=manifest.id,
        host=manifest.host,
        target=f"{target.user}@{target.address}:{target.port}",
        playbook=plan.playbook,
        started=iso(started),
        warnings=list(plan.warnings),
    )
    from vkbackup.layout import snapshot_time

    report.snapshot_age_seconds = (started - snapshot_time(manifest.id)).total_seconds()
    t0 = time.monotonic()
    progress = progress or Progress(enabled=False)
    t = connect(target)
    try:
        state = load_state(t, manifest.id)
        done: dict[str, Any] = dict((state or {}).get("done") or {})
        resuming = state is not None  # our own restore of this snapshot was under way
        runner = _Runner(plan, manifest, target, t, storage, identities, report, progress)
        errors: dict[str, VkError] = {}  # step id -> why it failed

        def run_one(r: _Runner, step: Step) -> StepResult:
            s0 = time.monotonic()
            log.info("step %s: %s", step.id, step.title)
            try:
                if step.kind == "preflight":
                    detail = r.preflight(step, resuming, force)
                else:
                    detail = getattr(r, step.kind.replace("-", "_"))(step)
            except VkError as e:
                errors[step.id] = e
                return StepResult(
                    step.id, step.kind, step.title, "failed", time.monotonic() - s0, str(e)
                )
            return StepResult(step.id, step.kind, step.title, "done", time.monotonic() - s0, detail)

        def record(step: Step, res: StepResult) -> None:
            nonlocal state
            report.steps.append(res)
            if res.status != "done":
                return
            if step.resumable:
                done[step.id] = {"at": iso(utcnow()), "seconds": round(res.seconds, 2)}
            if step.resumable or (step.kind == "preflight" and state is None):
                # written right after preflight too: from then on, the target's
                # contents are this restore's own, and a re-run may resume over them
                save_state(t, manifest.id, {"snapshot": manifest.id, "done": done})
                state = {"done": done}

        progress.start()
        try:
            for group in data_step_groups(plan.steps):
                todo = []
                for step in group:
                    if step.resumable and step.id in done:
                        report.steps.append(
                            StepResult(step.id, step.kind, step.title, "already-done", 0.0)
                        )
                    else:
                        todo.append(step)
                if len(todo) > 1:
                    results = _run_concurrently(todo, runner, connect, run_one, record, errors)
                else:
                    results = []
                    for step in todo:
                        res = run_one(runner, step)
                        record(step, res)
                        results.append((step, res))
                failed = [(st, res) for st, res in results if res.status == "failed"]
                if failed:
                    step, res = failed[0]
                    report.status = "failed"
                    report.error = f"step {step.id} failed: {res.detail}"
                    report.exception = errors[step.id]
                    return report
        finally:
            progress.stop()
        report.status = "ok"
        report.rto_seconds = time.monotonic() - t0
        return report
    finally:
        report.finished = iso(utcnow())
        if report.status != "ok":
            report.rto_seconds = time.monotonic() - t0
        t.close()
