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
# other packages may be installing beside this step: wait for apt's locks
apt() { DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
  apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! docker info >/dev/null 2>&1; then
  if ! command -v docker >/dev/null 2>&1; then
    command -v apt-get >/dev/null || {
      echo "no docker and no apt-get: install Docker Engine" >&2; exit 1; }
    apt update -qq
    apt install -y -qq docker.io docker-compose >&2
  fi
  (systemctl start docker 2>/dev/null || (nohup dockerd >/var/log/dockerd.log 2>&1 &)) || true
  for i in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "Docker Engine did not start" >&2; exit 1; }
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  command -v apt-get >/dev/null || {
    echo "no docker compose: install the compose plugin" >&2; exit 1; }
  apt update -qq
  apt install -y -qq docker-compose >&2
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

# https: curl with the name resolved to this host and the certificate verified
# (against $2 when given); prints a status line like HTTP_CHECK's, or curl's error.
HTTPS_CHECK = r"""
url=$1; ca=$2; rest=${url#https://}; hostport=${rest%%/*}
h=${hostport%%:*}; p=${hostport##*:}; [ "$p" = "$hostport" ] && p=443
command -v curl >/dev/null || { echo "no curl on the target"; exit 0; }
args=(-sS -o /dev/null -w '%{http_code}' --max-time 10 --resolve "$h:$p:127.0.0.1")
[ -n "$ca" ] && args+=(--cacert "$ca")
if code=$(curl "${args[@]}" "$url" 2>&1); then echo "HTTP/1.1 $code"
else echo "$code" | head -n 1; fi
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


COMPOSE_VERSIONS = (
    "docker compose version --short 2>/dev/null | sed 's/^/plugin /'; "
    "docker-compose version --short 2>/dev/null | sed 's/^/standalone /'; true"
)


def parse_compose_versions(text: str) -> dict[str, str]:
    """Given COMPOSE_VERSIONS' output, return flavour ("v2", "v1") -> the command
    that runs it ("docker compose" or "docker-compose"); the plugin first."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        kind, _, version = line.strip().partition(" ")
        version = version.strip().lstrip("v")
        if not version[:1].isdigit():
            continue
        flavour = "v1" if version.startswith("1.") else "v2"
        command = "docker compose" if kind == "plugin" else "docker-compose"
        found.setdefault(flavour, command)
    return found


def compose_flavor(t: Transport, prefer: str | None = None) -> list[str] | None:
    """The target's compose command for the flavour *prefer* ("v2" or "v1", what prod
    ran) when it has it, else the one it has (v2 first); None when it has none."""
    found = parse_compose_versions(t.run(["bash", "-c", COMPOSE_VERSIONS]).stdout.decode())
    command = found.get(prefer or "v2") or found.get("v2") or found.get("v1")
    return command.split(" ") if command else None


def compose_name_clashes(flavour: str, names: list[tuple[str, str, str]]) -> list[str]:
    """Given the target's compose flavour and (name, project, service) of every compose
    container of the snapshot, return the names the target's compose would give
    differently (a name in the other flavour's pattern: v2 joins with '-', v1 with
    '_'). A name set by container_name is the same under both."""
    sep, other = ("-", "_") if flavour == "v2" else ("_", "-")
    out = []
    for name, project, service in names:
        mine = re.fullmatch(re.escape(f"{project}{sep}{service}{sep}") + r"\d+", name)
        theirs = re.fullmatch(re.escape(f"{project}{other}{service}{other}") + r"\d+", name)
        if theirs and not mine:
            index = name.rsplit(other, 1)[1]
            out.append(f"{name} (would be {project}{sep}{service}{sep}{index})")
    return out


def service_container_argv(project: str, service: str, stopped: bool = False) -> list[str]:
    """argv printing the names of the running containers of one compose service
    (*stopped*: of all its containers)."""
    return [
        "docker", "ps", *(["-a"] if stopped else []),
        "--filter", f"label=com.docker.compose.project={project}",
        "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}",
    ]  # fmt: skip


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
    compose: list[str],
    working_dir: str,
    project: str,
    files: list[str],
    services: list[str],
    no_deps: bool = False,
) -> list[str]:
    """argv running `compose up -d --no-build SERVICES` in the project's directory;
    with *no_deps*, not the services they depend on (`--no-deps`)."""
    fargs: list[str] = []
    for c in files:
        fargs += ["-f", c]
    deps = ["--no-deps"] if no_deps else []
    up = [*compose, "-p", project, *fargs, "up", "-d", "--no-build", *deps, *services]
    return pipeline_argv(f"cd {shlex.quote(working_dir)} && {shlex.join(up)} 2>&1")


# -- health ------------------------------------------------------------------------


PROBE_FORMAT = (
    "{{.Name}} {{.State.Running}} "
    "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
    '{{with index .Config.Labels "com.docker.compose.project"}}{{.}}{{else}}-{{end}} '
    '{{with index .Config.Labels "com.docker.compose.service"}}{{.}}{{else}}-{{end}}'
)


def health_probe_argv(
    containers: list[str], urls: list[str], cas: dict[str, str] | None = None
) -> list[str]:
    """One command for one health round on the target (one SSH round trip): a state
    line of every container (name, running, health, compose project and service),
    then '== URL' and the status line of each HTTP check."""
    lines = []
    if containers:
        lines.append(
            f'ids=$(docker ps -aq 2>/dev/null); [ -z "$ids" ] || '
            f"docker inspect -f {shlex.quote(PROBE_FORMAT)} $ids 2>/dev/null"
        )
    for u in urls:
        lines.append(f"echo {shlex.quote('== ' + u)}")
        if u.startswith("https://"):
            ca = shlex.quote((cas or {}).get(u, ""))
            lines.append(f"timeout 12 bash -c {shlex.quote(HTTPS_CHECK)} x {shlex.quote(u)} {ca}")
        else:
            lines.append(f"timeout 12 bash -c {shlex.quote(HTTP_CHECK)} x {shlex.quote(u)}")
    lines.append("true")
    return ["bash", "-c", "\n".join(lines)]


def parse_health_probe(text: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Given health_probe_argv's output, return container -> (running, health) and
    URL -> the HTTP status line it answered ('' when none). A compose container is
    also listed under "PROJECT/SERVICE", with the state of its least healthy replica."""
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
            if len(parts) in (3, 5):
                seen[parts[0].lstrip("/")] = (parts[1], parts[2])
            if len(parts) == 5 and parts[3] != "-" and parts[4] != "-":
                key = f"{parts[3]}/{parts[4]}"
                # a service is as healthy as its least healthy replica
                if key not in seen or parts[1] != "true" or parts[2] not in ("healthy", "none"):
                    seen[key] = (parts[1], parts[2])
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
