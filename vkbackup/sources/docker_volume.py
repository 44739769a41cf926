"""`docker-volume` source: a named volume's tree as a GNU tar stream, consistent.

The containers that use the volume (or the configured `stop` list) are
stopped for the duration of the tar and ALWAYS started again:
- on success and on error, by the script's EXIT trap;
- on Ctrl-C, SIGTERM or a lost SSH connection (the pipe breaks, the script
  dies), by the same trap;
- if the script itself is killed outright (SIGKILL), by a guard process it
  started first with `setsid`, which waits for the script's PID to vanish
  and then starts the containers.
Only containers that were running are stopped, and only those are started.
The downtime is printed on stderr as `VKBACKUP-DOWNTIME-MS <milliseconds>` and recorded.

The tar is made on the host from the volume's mountpoint with GNU tar
(`--numeric-owner -S -p`, so owners, modes, sparse files, hard links,
symlinks and odd names survive), then compressed on the host.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from vkbackup.config.model import SourceConfig
from vkbackup.errors import SnapshotError
from vkbackup.sources.base import SUFFIX, PlanContext, SourcePlan, StreamPlan, compress_stage
from vkbackup.transport.base import Transport, pipeline_argv

DOWNTIME_RE = re.compile(r"^VKBACKUP-DOWNTIME-MS (\d+)$", re.M)
TAR_CREATE = ["tar", "-cf", "-", "--numeric-owner", "-S", "-p", "."]


def stop_start_script(containers: list[str], body: str) -> str:
    """Wrap *body* so that *containers* (those running) are stopped around it and
    always started again (trap + setsid guard; see the module docstring)."""
    names = " ".join(shlex.quote(c) for c in containers)
    return f"""
running=()
for c in {names}; do
  if [ "$(docker inspect -f '{{{{.State.Running}}}}' "$c" 2>/dev/null || true)" = true ]; then
    running+=("$c")
  fi
done
t0=$(date +%s%N)
restart() {{
  rc=$?
  if [ ${{#running[@]}} -gt 0 ]; then
    docker start "${{running[@]}}" >/dev/null || rc=1
    echo "VKBACKUP-DOWNTIME-MS $(( ($(date +%s%N) - t0) / 1000000 ))" >&2
  fi
  exit $rc
}}
if [ ${{#running[@]}} -gt 0 ]; then
  setsid bash -c 'p=$1; shift; while kill -0 "$p" 2>/dev/null; do sleep 1; done; \
docker start "$@" >/dev/null 2>&1' vkbackup-guard $$ "${{running[@]}}" \
    </dev/null >/dev/null 2>&1 &
  trap restart EXIT
  trap 'exit 130' INT TERM HUP PIPE
  docker stop -t 60 "${{running[@]}}" >/dev/null
fi
{body}
"""


def volume_tar_script(volume: str, stop: list[str], compressor: str) -> str:
    q = shlex.quote
    body = (
        f"mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {q(volume)})\n"
        f'cd "$mp"\n' + shlex.join(TAR_CREATE) + compress_stage(compressor)
    )
    return stop_start_script(stop, body)


def parse_downtime(stderr: str) -> float | None:
    found = DOWNTIME_RE.findall(stderr)
    return int(found[-1]) / 1000.0 if found else None


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
        labels = t.run(
            ["docker", "volume", "inspect", "-f", "{{json .Labels}}", self.volume], check=False
        ).stdout.decode()
        stream = StreamPlan(
            name="volume.tar" + SUFFIX[ctx.compressor],
            role="tar",
            argv=pipeline_argv(volume_tar_script(self.volume, stop, ctx.compressor)),
            compression=ctx.compressor,
            size_hint=size,
        )
        meta: dict[str, Any] = {
            "volume": self.volume,
            "used_by": users,
            "stopped": stop,
            "size": size,
            "labels": labels.strip(),
        }
        return SourcePlan(streams=[stream], meta=meta)

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        plan.meta["downtime_seconds"] = parse_downtime(stderr_tail)


def labels_args(labels_json: str) -> list[str]:
    """`--label k=v` arguments from the recorded `{{json .Labels}}` text."""
    import json

    try:
        labels = json.loads(labels_json or "null") or {}
    except ValueError:
        return []
    out: list[str] = []
    for k, v in sorted(labels.items()):
        out += ["--label", f"{k}={v}"]
    return out


def restore_script(volume: str, labels_json: str, compression: str) -> str:
    """Bash that (re)creates the volume, empties it, and extracts the tar on stdin into it.

    The volume's content becomes exactly the archive's (deletions included).
    GNU tar refuses absolute names and '..' members; the archive never
    writes outside the volume's mountpoint.
    """
    from vkbackup.sources.base import DECOMPRESSORS

    q = shlex.quote
    dec = DECOMPRESSORS[compression]
    head = (shlex.join(dec) + " | ") if dec else ""
    create = shlex.join(["docker", "volume", "create", *labels_args(labels_json), volume])
    return f"""
docker volume inspect {q(volume)} >/dev/null 2>&1 || {create} >/dev/null
mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {q(volume)})
[ -n "$mp" ] && [ "$mp" != / ] || {{ echo "bad mountpoint for volume {volume}" >&2; exit 1; }}
find "$mp" -mindepth 1 -delete
{head}tar -C "$mp" -xpf - --numeric-owner --same-owner
"""


def volume_state_script(volume: str) -> str:
    """Bash printing 'absent', 'empty' or 'data' for the volume on a host."""
    q = shlex.quote
    return f"""
if ! docker volume inspect {q(volume)} >/dev/null 2>&1; then echo absent; exit 0; fi
mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {q(volume)})
if [ -z "$(ls -A "$mp" 2>/dev/null)" ]; then echo empty; else echo data; fi
"""
