"""Every shell text restore sends to a target host, and the parsing of what comes back.

Restore drives the target with small bash scripts over SSH (`Transport.run`),
never with a remote agent: a new server needs nothing but sshd and bash. The
scripts sit here, built by plain functions, so tests read them and feed them
hostile names: every value that comes from a manifest reaches bash through
`shlex.quote` or as a positional argument ("$1"), never spliced unquoted.

The resume state is a small JSON file on the target
(/var/lib/vkbackup/restore/<snapshot>.json), root-only, written atomically:
the new file replaces the old only when every byte arrived, so a connection
cut mid-write leaves the previous state, never half of one.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from vkbackup.transport.base import Transport, pipeline_argv

STATE_DIR = "/var/lib/vkbackup/restore"

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

# -- resume state ------------------------------------------------------------------


def state_path(snapshot_id: str) -> str:
    return f"{STATE_DIR}/{snapshot_id}.json"


def load_state(t: Transport, snapshot_id: str) -> dict[str, Any] | None:
    """Given a target, return this snapshot's restore state there: None if there is
    none; {} if a state file exists but cannot be read (a restore of this snapshot
    was under way)."""
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


# -- preflight ---------------------------------------------------------------------

LIST_CONTAINERS = ["bash", "-c", "docker ps -a --format '{{.Names}}' 2>/dev/null || true"]


def existing_paths_argv(paths: list[str]) -> list[str]:
    """argv printing each of *paths* that exists on the target, one a line."""
    return ["bash", "-c", 'for f in "$@"; do [ -e "$f" ] && echo "$f"; done; true', "x", *paths]


# -- compose -----------------------------------------------------------------------


def compose_flavor(t: Transport) -> list[str] | None:
    """The target's compose command: ["docker", "compose"] (v2), ["docker-compose"]
    (v1), or None when it has neither."""
    if t.run(["docker", "compose", "version"], check=False).status == 0:
        return ["docker", "compose"]
    if t.run(["bash", "-c", "command -v docker-compose"], check=False).status == 0:
        return ["docker-compose"]
    return None


def compose_files(working_dir: str, config_files: str | None) -> list[str]:
    """Absolute paths of a project's compose files from its labels: compose v2
    records absolute paths, v1 paths relative to the working dir."""
    wd = working_dir.rstrip("/")
    return [
        c if c.startswith("/") else f"{wd}/{c}" for c in str(config_files or "").split(",") if c
    ]


def missing_files_argv(paths: list[str]) -> list[str]:
    """argv printing each of *paths* that is not a regular file, one a line."""
    return ["bash", "-c", 'for f in "$@"; do [ -f "$f" ] || echo "$f"; done', "x", *paths]


def compose_up_argv(
    compose: list[str], working_dir: str, project: str, files: list[str], services: list[str]
) -> list[str]:
    """argv running `compose up -d --no-build SERVICES` in the project's directory."""
    fargs: list[str] = []
    for c in files:
        fargs += ["-f", c]
    up = [*compose, "-p", project, *fargs, "up", "-d", "--no-build", *services]
    return pipeline_argv(f"cd {shlex.quote(working_dir)} && {shlex.join(up)} 2>&1")


# -- health ------------------------------------------------------------------------


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


def http_status(line: str) -> int | None:
    """The status code of an HTTP status line, None if it is not one."""
    m = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", line)
    return int(m.group(1)) if m else None


# -- DNS ---------------------------------------------------------------------------

CADDYFILE_ARGV = ["bash", "-c", "cat /etc/caddy/Caddyfile 2>/dev/null || true"]


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
