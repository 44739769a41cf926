"""`docker-volume` source: a named volume's tree as a GNU tar stream, consistent.

The containers that use the volume (or the configured `stop` list) are held
still for the duration of the tar, as `quiesce` says:
- "pause" (the default): `docker pause` (the cgroup freezer: no signal, no
  restart), then `docker unpause`. Only containers running and not paused are
  paused; one somebody else paused is already still, and stays paused.
- "stop": `docker stop`, then `docker start`. Only containers running and not
  paused are stopped. With `stop_timeout` set, `docker stop -t <stop_timeout>`;
  unset, no `-t`: each container's own stop timeout (its `--stop-timeout` or
  compose `stop_grace_period`, else Docker's default 10 s).
- "none": nothing is held still: for volumes whose writers are known to be
  quiet at that hour. A file that changes while tar reads it makes GNU tar
  exit 1 ("file changed as we read it"), and the source fails.
Containers are held one at a time, in order (with "stop", each waits its own
timeout: the first is down while the next stop), and each is recorded as ours
only once its own hold succeeded, in a state file in a private directory
(`mktemp -d`, mode 0700) that the guard below reads too. A hold that fails
because somebody else paused or stopped the container between our inspect and
our hold leaves it to them (it is still, the copy goes on); any other failed
hold ends the script (exit 1) and undoes what it holds. Whatever we paused or
stopped is ALWAYS unpaused or started again, and only that:
- on success and on error, by the script's EXIT trap;
- on Ctrl-C, SIGTERM or a lost SSH connection (the pipe breaks, the script
  dies), by the same trap; a signal arriving during a hold waits until that
  hold is recorded;
- if the script itself is killed outright (SIGKILL), by a guard process it
  started first with `setsid`, which waits for the script's PID to vanish
  and then unpauses or starts exactly the containers the state file still
  lists (and the one whose hold command was cut short, if Docker says it is
  held: the one case where a pause somebody else made in that same instant
  would be undone).
The trap undoes each container it holds and removes it from the file once that
succeeded, or once Docker (`docker inspect`) says it is no longer paused or
stopped (somebody released it, or it was recreated). When nothing is left it
ends the guard, so the guard never touches a container after a clean end
(another run may have paused it meanwhile); if an undo really failed, the
script exits 1 and the guard retries exactly the names left, once, after the
script has ended.
Each container's downtime (from its pause or stop command to its own unpause
or start) is printed on stderr as `VKBACKUP-DOWNTIME-CONTAINER-MS <ms> <name>`,
and the whole span as `VKBACKUP-DOWNTIME-MS <ms>`; both are recorded.

Why "pause" is the default. tar reads the tree through the kernel's page
cache, so a copy of a frozen tree holds every write() the processes made
before the freeze, fsynced or not; only what a process still keeps in its own
memory is missing. That is the state after `kill -9`, better than after a
power cut, and every program that survives `kill -9` (PostgreSQL, SQLite,
Redis's RDB and AOF files, anything that writes a temporary file and renames
it) starts from that copy as from a crash. That holds for ONE volume, with
EVERY writer of it held, and no further:
- files that must agree across volumes (PostgreSQL's data and a separate WAL
  or tablespace volume, a database and its uploads volume) are not copied at
  one instant: each docker-volume source holds its containers and copies its
  volume on its own, so the volumes are from different moments. For a
  database use a `postgres` source (pg_dump from one snapshot), or keep all
  it needs on one volume, copied by one source with quiesce = "stop" (a
  clean shutdown);
- a `stop` list narrower than the volume's writers (a sidecar, a second app
  mounting it), or a process on the host writing into the mountpoint, keeps
  writing during the copy: the copy is as torn as with "none";
- a frozen process answers nothing: a lease, lock or heartbeat it holds with
  peers that are not paused (a cluster member, a lock in another database, a
  queue's visibility timeout) may expire meanwhile, and it finds that out when
  it is thawed.
"stop" gives a cleaner copy only for a program that finishes its work on
SIGTERM: Redis writes a fresh dump on shutdown (paused, the copy holds its
last background save), some apps flush buffers. A program that ignores
SIGTERM (PID 1 without a handler) gets SIGKILL after its stop timeout: the
same state as a pause, that many seconds later. And pause costs milliseconds
where stop costs up to the stop timeout plus a restart: no start-up that
rewrites the volume (which made the next night's copy a new one), no restart
that may fail, open connections kept. So: "pause", and "stop" where the state
you want is written on shutdown (Redis without a `SAVE` hook, apps that flush
on SIGTERM). A paused container answers nothing while it is frozen: its
clients wait (or time out) instead of being refused.

Upgrading: before "quiesce" existed every volume's containers were stopped
(`docker stop -t 60`); the default is now "pause". A volume that relies on
what its program writes at shutdown (Redis's dump on stop) needs
quiesce = "stop" in its source.

The tar is made on the host from the volume's mountpoint with GNU tar
(`--numeric-owner -S -p`, so owners, modes, sparse files, hard links,
symlinks and odd names survive), then compressed on the host (or, on a host
without zstd, on the backup machine: `vkbackup.zstd_compress`).

Incremental chains (GNU tar's `--listed-incremental` format, so a break-glass
restore is "the full, then each incremental, with stock tar"):
- a volume whose tree is unchanged (same fingerprint: every entry's type, mode,
  owner, size, mtime, ctime, inode, link count and link target) references the
  previous chain as it is: the fingerprint is taken in `plan`, before anything
  is held still, so nothing is paused or stopped, nothing is uploaded (with
  "stop", an app that writes on start changes the tree by its restart, so the
  next night copies it again; "pause" restarts nothing);
- else a level-N incremental (`volume-N.tar.gz`) on top of the previous chain,
  while the chain has at most `snapshot.max_chain` incrementals, its full is
  younger than `snapshot.full_every_days`, and the host still has the tar
  snapshot file of the chain's last link;
- else a new full (`volume-0.tar.gz`).
The tar snapshot files (.snar) stay on the host, in
/var/lib/vkbackup/snar/<volume>/<snapshot-id>.snar (they describe the host's own
tree, nothing secret); a new one is written under a temporary name and renamed
only after tar succeeded, so a failed run never breaks a chain.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from vkbackup.config.model import SourceConfig
from vkbackup.errors import IntegrityError, SnapshotError
from vkbackup.layout import snapshot_time
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.objects import TarCheck
from vkbackup.restore.steps import Step, StepContext, VolumeParams
from vkbackup.restore.targuard import GuardState
from vkbackup.sources.base import (
    DECOMPRESSORS,
    SUFFIX,
    PlanContext,
    SourcePlan,
    StreamPlan,
    compress_stage,
    fingerprint_tag,
)
from vkbackup.transport.base import Transport, pipeline_argv

DOWNTIME_RE = re.compile(r"^VKBACKUP-DOWNTIME-MS (\d+)$", re.M)
# a container name as Docker allows it (the line comes from the host: data, not text)
CONTAINER_DOWNTIME_RE = re.compile(
    r"^VKBACKUP-DOWNTIME-CONTAINER-MS (\d+) ([A-Za-z0-9][A-Za-z0-9_.-]*)$", re.M
)
TAR_CREATE = ["tar", "-cf", "-", "--numeric-owner", "-S", "-p", "--no-check-device"]
SNAR_DIR = "/var/lib/vkbackup/snar"
CHAIN_ROLES = ("tar", "tar-incremental")

# Prints the tree fingerprint of a volume: sha256 over every entry's metadata.
TREE_FP = (
    'cd "$(docker volume inspect -f \'{{.Mountpoint}}\' "$1")" && '
    "find . -printf '%y %m %U %G %s %T@ %C@ %i %n %l %p\\0' | sort -z | sha256sum | cut -c1-64"
)


# quiesce mode -> (the docker command holding a container still, the one undoing it,
# the `docker inspect` template and the answer that selects a container to hold, the
# template and the answer that say a container is (still) held)
QUIESCE: dict[str, tuple[str, str, str, str, str, str]] = {
    "pause": ("pause", "unpause", "{{.State.Status}}", "running", "{{.State.Status}}", "paused"),
    "stop": (
        "stop", "start", "{{.State.Running}} {{.State.Paused}}", "true false",
        "{{.State.Running}}", "false",
    ),
}  # fmt: skip

# The guard: `setsid bash -c GUARD vkbackup-guard PID DIR UNDO TEMPLATE HELD`. Once PID
# is gone it undoes what DIR/held still lists, and DIR/pending if that one is still held
# (the script died inside its hold command), then removes DIR.
GUARD = r"""p=$1 q=$2 undo=$3 tmpl=$4 held=$5
while kill -0 "$p" 2>/dev/null; do sleep 1; done
while IFS= read -r -d "" c; do docker "$undo" "$c"; done <"$q/held"
if IFS= read -r -d "" c <"$q/pending" && [ "$(docker inspect -f "$tmpl" "$c")" = "$held" ]
then docker "$undo" "$c"; fi
rm -rf "$q"
"""

QUIESCE_SCRIPT = r"""
sel=()
for c in @NAMES@; do
  state=$(docker inspect -f @SELECT_T@ "$c" 2>/dev/null || true)
  if [ "$state" = @SELECTED@ ]; then sel+=("$c"); fi
done
# released C: Docker answers that C is not (or no longer) held: nothing left to undo
released() {
  local s
  s=$(docker inspect -f @HELD_T@ "$1" 2>/dev/null) && [ "$s" != @HELD@ ]
}
undo() {
  rc=$?
  trap '' INT TERM HUP PIPE
  set +e
  local i c left=()
  for i in "${!held[@]}"; do
    c=${held[$i]}
    if docker @UNDO@ "$c" >/dev/null; then
      printf 'VKBACKUP-DOWNTIME-CONTAINER-MS %s %q\n' \
        "$(( ($(date +%s%N) - ${since[$i]}) / 1000000 ))" "$c" >&2
    elif ! released "$c"; then
      left+=("$c") rc=1
    fi
    # the file lists what is still ours to undo: the guard reads it if we die now
    for c in "${left[@]}" "${held[@]:i+1}"; do printf '%s\0' "$c"; done >"$qdir/held.new"
    mv -f "$qdir/held.new" "$qdir/held"
  done
  if IFS= read -r -d '' c <"$qdir/pending"; then  # we died inside its hold command
    c_pending=$c
    if released "$c"; then
      : >"$qdir/pending"
    elif docker @UNDO@ "$c" >/dev/null; then
      : >"$qdir/pending"
      printf 'VKBACKUP-DOWNTIME-CONTAINER-MS %s %q\n' \
        "$(( ($(date +%s%N) - t_hold) / 1000000 ))" "$c" >&2
    else
      left+=("$c") rc=1
    fi
  fi
  if [ ${#held[@]} -gt 0 ] || [ -n "${c_pending:-}" ]; then  # we held something
    echo "VKBACKUP-DOWNTIME-MS $(( ($(date +%s%N) - t0) / 1000000 ))" >&2
  fi
  if [ ${#left[@]} = 0 ]; then
    kill "$guard" 2>/dev/null
    rm -rf "$qdir"
  else
    printf 'vkbackup: could not @UNDO@ %s; retried once this script has ended\n' \
      "$(printf '%q ' "${left[@]}")" >&2
  fi
  exit $rc
}
if [ ${#sel[@]} -gt 0 ]; then
  qdir=$(mktemp -d -t vkbackup-quiesce.XXXXXXXX)
  chmod 700 "$qdir"
  : >"$qdir/held"
  : >"$qdir/pending"
  setsid bash -c @GUARD@ vkbackup-guard $$ "$qdir" @UNDO@ @HELD_T@ @HELD@ \
    </dev/null >/dev/null 2>&1 &
  guard=$!
  held=() since=() sig=
  t0=$(date +%s%N)
  trap undo EXIT
  for c in "${sel[@]}"; do
    # a signal waits until C is held and recorded, or known not to be ours
    trap 'sig=1' INT TERM HUP PIPE
    printf '%s\0' "$c" >"$qdir/pending"
    t_hold=$(date +%s%N)
    if @HOLD@ "$c" >/dev/null; then
      held+=("$c") since+=("$t_hold")
      printf '%s\0' "$c" >>"$qdir/held"
      : >"$qdir/pending"
    else
      r=$?
      if [ $r -gt 128 ]; then exit 1; fi  # the command was killed: undone if it held C
      : >"$qdir/pending"
      # not ours: somebody else held it between our inspect and our hold; it stays so
      if released "$c"; then
        printf 'vkbackup: could not @HOLD_WORD@ %q\n' "$c" >&2
        exit 1
      fi
    fi
    trap 'exit 130' INT TERM HUP PIPE
    if [ -n "$sig" ]; then exit 130; fi
  done
fi
@BODY@
"""


def quiesce_script(
    containers: list[str], body: str, quiesce: str = "pause", stop_timeout: int | None = None
) -> str:
    """Wrap *body* so that *containers* (those running, not paused) are paused or
    stopped around it, one at a time, as *quiesce* says, and always unpaused or
    started again, exactly those we held (trap + setsid guard reading a private
    state file; see the module docstring). *stop_timeout* None: each container's
    own stop timeout. "none": *body* alone."""
    if quiesce == "none":
        return body
    if quiesce not in QUIESCE:
        raise ValueError(f"unknown quiesce mode {quiesce!r}")
    hold, undo, select_t, selected, held_t, held = QUIESCE[quiesce]
    timeout = ["-t", str(int(stop_timeout))] if hold == "stop" and stop_timeout is not None else []
    q = shlex.quote
    subst = {
        "@NAMES@": " ".join(q(c) for c in containers),
        "@SELECT_T@": q(select_t),
        "@SELECTED@": q(selected),
        "@HELD_T@": q(held_t),
        "@HELD@": q(held),
        "@UNDO@": undo,
        "@HOLD_WORD@": hold,
        "@HOLD@": shlex.join(["docker", hold, *timeout]),
        "@GUARD@": q(GUARD),
    }
    script = QUIESCE_SCRIPT
    for key, value in subst.items():
        script = script.replace(key, value)
    return script.replace("@BODY@", body)


def snar_path(volume: str, snapshot_id: str) -> str:
    return f"{SNAR_DIR}/{volume}/{snapshot_id}.snar"


def volume_tar_script(
    volume: str,
    stop: list[str],
    compressor: str,
    snapshot_id: str,
    base_snapshot: str | None = None,
    quiesce: str = "pause",
    stop_timeout: int | None = None,
) -> str:
    """Bash streaming the volume as a GNU incremental tar: level 0 when *base_snapshot*
    is None, else on top of that snapshot's .snar, with the containers *stop* held
    still as *quiesce* says (see the module docstring)."""
    q = shlex.quote
    new = snar_path(volume, snapshot_id)
    start = (
        f"cp {q(snar_path(volume, base_snapshot))} {q(new + '.tmp')}"
        if base_snapshot
        else f"rm -f {q(new + '.tmp')}"
    )
    keep = f"! -name {q(snapshot_id + '.snar')}"
    if base_snapshot:
        keep += f" ! -name {q(base_snapshot + '.snar')}"
    body = (
        f"mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {q(volume)})\n"
        f"mkdir -p {q(SNAR_DIR + '/' + volume)}\n{start}\n"
        'cd "$mp"\n'
        + shlex.join([*TAR_CREATE, f"--listed-incremental={new}.tmp", "."])
        + compress_stage(compressor)
        + f"\nmv {q(new + '.tmp')} {q(new)}\n"
        f"find {q(SNAR_DIR + '/' + volume)} -name '*.snar' {keep} -delete\n"
    )
    return quiesce_script(stop, body, quiesce, stop_timeout)


def chain_of(previous: tuple[Any, ...]) -> list[Any]:
    """The previous snapshot's chain for this source, in order, or [] if not contiguous."""
    chain = sorted((o for o in previous if o.role in CHAIN_ROLES), key=lambda o: o.chain)
    if not chain or [o.chain for o in chain] != list(range(len(chain))):
        return []
    return chain


def choose_level(ctx: PlanContext, chain: list[Any], snar_on_host: bool) -> int:
    """0 for a new full, else the level of the next incremental (pure)."""
    if not chain or not snar_on_host or ctx.max_chain <= 0:
        return 0
    if len(chain) > ctx.max_chain:
        return 0
    now = ctx.now or snapshot_time(ctx.snapshot_id)
    age_days = (now - snapshot_time(chain[0].uploaded_in)).total_seconds() / 86400
    if age_days >= ctx.full_every_days:
        return 0
    return len(chain)


def parse_downtime(stderr: str) -> float | None:
    """The whole span the containers were held still (seconds), None if none was."""
    found = DOWNTIME_RE.findall(stderr)
    return int(found[-1]) / 1000.0 if found else None


def parse_container_downtime(stderr: str) -> dict[str, float]:
    """Each held container's downtime (seconds): from the pause or stop to its own
    unpause or start."""
    return {name: int(ms) / 1000.0 for ms, name in CONTAINER_DOWNTIME_RE.findall(stderr)}


class DockerVolumeSource:
    type = "docker-volume"

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        assert cfg.volume
        self.volume: str = cfg.volume

    def users(self, t: Transport) -> list[str]:
        """Names of the containers (running or not) that mount the volume."""
        res = t.run(
            ["docker", "ps", "-a", "--filter", f"volume={self.volume}", "--format", "{{.Names}}"]
        )
        return sorted(n for n in res.stdout.decode().split() if n)

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        res = t.run(
            [
                "bash", "-c",
                'mp=$(docker volume inspect -f "{{.Mountpoint}}" "$1") && du -sb "$mp" | cut -f1',
                "x", self.volume,
            ],
            check=False,
        )  # fmt: skip
        if res.status != 0:
            raise SnapshotError(
                f"{t.name}: docker-volume source {self.cfg.name!r} ({self.cfg.where}.volume): "
                f"volume {self.volume!r} not found: {res.stderr.strip()[-300:]}"
            )
        size = int(res.stdout.decode().strip() or 0)
        users = self.users(t)
        stop = list(self.cfg.stop) if self.cfg.stop is not None else users
        if self.cfg.quiesce == "none":
            stop = []
        labels = t.run(
            ["docker", "volume", "inspect", "-f", "{{json .Labels}}", self.volume], check=False
        ).stdout.decode()
        meta: dict[str, Any] = {
            "volume": self.volume,
            "used_by": users,
            "stopped": stop,  # the containers held still (paused or stopped), as before
            "quiesce": self.cfg.quiesce,
            "size": size,
            "labels": labels.strip(),
        }
        tree = t.run([*pipeline_argv(TREE_FP + "\n"), "x", self.volume]).stdout.decode().strip()
        tree_fp = f"volume-tree:{self.volume}:{tree}"
        chain = chain_of(ctx.previous)
        if chain and chain[-1].fingerprint == fingerprint_tag(tree_fp):
            meta["chain"] = {"unchanged": True, "levels": len(chain)}
            return SourcePlan(streams=[], meta=meta, reuse=chain)
        base = chain[-1].uploaded_in if chain else None
        snar_ok = bool(base) and (
            t.run(["test", "-f", snar_path(self.volume, str(base))], check=False).status == 0
        )
        level = choose_level(ctx, chain, snar_ok)
        stream = StreamPlan(
            name=f"volume-{level}.tar" + SUFFIX[ctx.compressor],
            role="tar" if level == 0 else "tar-incremental",
            argv=pipeline_argv(
                volume_tar_script(
                    self.volume,
                    stop,
                    ctx.compressor,
                    ctx.snapshot_id,
                    base if level else None,
                    self.cfg.quiesce,
                    self.cfg.stop_timeout,
                )
            ),
            compression=ctx.compressor,
            size_hint=size,
            chain=level,
            fingerprint=tree_fp,
        )
        meta["chain"] = {"level": level, "base": base if level else None}
        return SourcePlan(streams=[stream], meta=meta, reuse=chain[:level], holds=tuple(stop))

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        plan.meta["downtime_seconds"] = parse_downtime(stderr_tail)
        plan.meta["downtime"] = parse_container_downtime(stderr_tail)


# -- restore --------------------------------------------------------------------
#
# A volume comes back as its chain: the full, then each incremental in order,
# extracted the way GNU tar extracts incremental archives (deletions applied).
# A missing level is refused before anything is written. One tar guard state
# spans the chain, so a symlink left by one level is never written through by
# a later one.


@dataclass(frozen=True)
class Meta:
    """What a snapshot recorded of a docker-volume source (private part)."""

    volume: str
    labels: str  # `docker volume inspect -f '{{json .Labels}}'` text

    @classmethod
    def decode(cls, doc: dict[str, Any], where: str) -> Meta:
        volume = doc.get("volume")
        if not isinstance(volume, str) or not volume:
            raise IntegrityError(f"{where}.volume: expected a volume name")
        return cls(volume=volume, labels=str(doc.get("labels") or ""))


def restore_steps(name: str, meta: Meta, objects: list[ObjectRecord]) -> list[Step]:
    """The restore steps of a docker-volume source: one step creating and filling it."""
    params = VolumeParams(volume=meta.volume, labels=meta.labels)
    title = f"create and fill volume {meta.volume}"
    return [Step(f"volume:{name}", title, params, name, list(objects))]


def labels_args(labels_json: str) -> list[str]:
    """`--label k=v` arguments from the recorded `{{json .Labels}}` text."""
    try:
        labels = json.loads(labels_json or "null") or {}
    except ValueError:
        return []
    out: list[str] = []
    for k, v in sorted(labels.items()):
        out += ["--label", f"{k}={v}"]
    return out


def restore_script(volume: str, labels_json: str, compression: str, wipe: bool = True) -> str:
    """Bash that (re)creates the volume, empties it (*wipe*: for the chain's full), and
    extracts the tar on stdin into it as GNU incremental archives are extracted.

    After the full and every incremental of a chain, the volume's content is
    exactly the last snapshot's (deletions included).
    GNU tar refuses absolute names and '..' members; the archive never
    writes outside the volume's mountpoint.
    """
    q = shlex.quote
    dec = DECOMPRESSORS[compression]
    head = (shlex.join(dec) + " | ") if dec else ""
    create = shlex.join(["docker", "volume", "create", *labels_args(labels_json), volume])
    return f"""
V={q(volume)}
docker volume inspect "$V" >/dev/null 2>&1 || {create} >/dev/null
mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' "$V")
[ -n "$mp" ] && [ "$mp" != / ] || {{ printf 'bad mountpoint for volume %s\\n' "$V" >&2; exit 1; }}
{'find "$mp" -mindepth 1 -delete' if wipe else ""}
{head}tar -C "$mp" -xpf - --numeric-owner --same-owner --listed-incremental=/dev/null
"""


def volume_state_script(volume: str) -> str:
    """Bash printing 'absent', 'empty' or 'data' for the volume on a host."""
    q = shlex.quote
    return f"""
if ! docker volume inspect {q(volume)} >/dev/null 2>&1; then echo absent; exit 0; fi
mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {q(volume)})
if [ -z "$(ls -A "$mp" 2>/dev/null)" ]; then echo empty; else echo data; fi
"""


def stop_users_argv(volume: str) -> list[str]:
    """argv stopping the containers on the target that use *volume* (none after a
    clean start; a resumed or forced restore must not write under a running app)."""
    script = (
        'ids=$(docker ps -q --filter volume="$1"); [ -z "$ids" ] || docker stop $ids >/dev/null'
    )
    return [*pipeline_argv(script), "x", volume]


def restore_volume(ctx: StepContext, step: Step) -> str:
    """The volume step: refuse a broken chain, then extract each level in order."""
    p = step.params
    assert isinstance(p, VolumeParams)
    ctx.t.run(stop_users_argv(p.volume))
    chain = sorted(step.objects, key=lambda o: o.chain)
    if [o.chain for o in chain] != list(range(len(chain))):
        have = ", ".join(f"{o.chain}: {o.key}" for o in chain)
        raise IntegrityError(
            f"volume {p.volume}: broken incremental chain in snapshot {ctx.snapshot_id} "
            f"(levels present: {have}); a level is missing"
        )
    state = GuardState()
    for obj in chain:
        wipe = obj.chain == 0
        ctx.feed(
            obj,
            lambda compression, wipe=wipe: pipeline_argv(  # type: ignore[misc]
                restore_script(p.volume, p.labels, compression, wipe)
            ),
            tar=TarCheck.volume(state),
        )
    return f"volume {p.volume}" + (
        f" (full + {len(chain) - 1} incrementals)" if len(chain) > 1 else ""
    )
