"""Host facts recorded at snapshot time, for restore planning.

One script run on the host collects them: os_release, docker_version, compose
("v2 x.y" / "v1 x.y" / None), the tools on the host (zstd, gzip, tar), volume
names, containers (name, image, image_id, labels, running, health, restart
policy, mounts, networks, published ports, whether it has a healthcheck:
never the environment, which holds secrets) and the compose projects those
containers belong to. Parsing is pure.

The host is not trusted with names. Docker checks a container's name, but a
label is free text: a compromised host can label a container with a compose
project named `x$(cmd)`. Restore refuses a manifest holding such a name
(`vkbackup.restore.records`), so recording it would make every later restore
of the host fail. A container whose name, image, or compose project or service
label breaks the rules (`vkbackup.names`) is therefore left out of the facts
here, and `gather` warns, naming the host and the container.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vkbackup import names
from vkbackup.errors import IntegrityError
from vkbackup.logs import get_logger
from vkbackup.transport.base import Transport, pipeline_argv

log = get_logger("facts")

FACTS_SCRIPT = r"""
echo "== os"; cat /etc/os-release 2>/dev/null || true
echo "== docker"; docker version --format '{{.Server.Version}}' 2>/dev/null || true
echo "== compose"
if docker compose version --short >/dev/null 2>&1; then echo "v2 $(docker compose version --short)";
elif command -v docker-compose >/dev/null 2>&1; then echo "v1 $(docker-compose version --short)"; fi
echo "== tools"; for x in zstd gzip tar; do command -v $x >/dev/null 2>&1 && echo $x; done
echo "== volumes"; docker volume ls -q 2>/dev/null || true
echo "== containers"; ids=$(docker ps -aq 2>/dev/null || true)
if [ -n "$ids" ]; then docker inspect $ids; else echo "[]"; fi
"""


def sanitize_container(doc: dict[str, Any]) -> dict[str, Any]:
    """Given `docker inspect` output for one container, keep what restore needs, no secrets."""
    cfg = doc.get("Config") or {}
    host = doc.get("HostConfig") or {}
    state = doc.get("State") or {}
    nets = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    return {
        "name": str(doc.get("Name", "")).lstrip("/"),
        "image": cfg.get("Image"),
        "image_id": doc.get("Image"),
        "labels": cfg.get("Labels") or {},
        "running": bool(state.get("Running")),
        "health": (state.get("Health") or {}).get("Status"),
        "restart": (host.get("RestartPolicy") or {}).get("Name"),
        "mounts": [
            {
                "type": m.get("Type"),
                "name": m.get("Name"),
                "source": m.get("Source"),
                "destination": m.get("Destination"),
                "rw": m.get("RW"),
            }
            for m in doc.get("Mounts") or []
        ],
        "networks": sorted(nets),
        "ports": sorted((host.get("PortBindings") or {}).keys()),
        "has_healthcheck": bool(cfg.get("Healthcheck")),
    }


def inadmissible(c: dict[str, Any]) -> str | None:
    """Given a sanitized container, return why it cannot be recorded (a name that
    breaks Docker's or compose's rules), or None."""
    labels = c.get("labels") or {}
    checks: list[tuple[Callable[..., str], object, str]] = [
        (names.check_container, c.get("name"), "container"),
        (names.check_image, c.get("image"), "container image"),
        (names.check_project, labels.get("com.docker.compose.project"), "compose project label"),
        (names.check_service, labels.get("com.docker.compose.service"), "compose service label"),
    ]
    for check, value, what in checks:
        if not value and what != "container":
            continue  # no image or label recorded: nothing to check
        try:
            check(value if isinstance(value, str) else repr(value), what, IntegrityError)
        except IntegrityError as e:
            return str(e)
    return None


def compose_projects(containers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Given sanitized containers, group them by compose project: return
    project -> working dir, config files and services (service -> container name)."""
    out: dict[str, dict[str, Any]] = {}
    for c in containers:
        labels = c.get("labels") or {}
        proj = labels.get("com.docker.compose.project")
        if not proj:
            continue
        p = out.setdefault(
            proj,
            {
                "working_dir": labels.get("com.docker.compose.project.working_dir"),
                "config_files": labels.get("com.docker.compose.project.config_files"),
                "services": {},
            },
        )
        svc = labels.get("com.docker.compose.service", c["name"])
        p["services"][svc] = c["name"]
    return out


def parse_facts(text: str) -> dict[str, Any]:
    """Given the facts script's output, return the facts (see the module docstring)."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("== "):
            current = line[3:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    os_release: dict[str, str] = {}
    for line in sections.get("os", []):
        k, _, v = line.partition("=")
        if k:
            os_release[k] = v.strip('"')
    try:
        raw = json.loads("\n".join(sections.get("containers", [])) or "[]")
    except json.JSONDecodeError:
        raw = []
    containers: list[dict[str, Any]] = []
    ignored: list[dict[str, Any]] = []  # {"why": ..., "volumes": the named volumes it mounts}
    for c in (sanitize_container(c) for c in raw if isinstance(c, dict)):
        why = inadmissible(c)
        if why is None:
            containers.append(c)
        else:
            vols = sorted({str(m["name"]) for m in c["mounts"] if m.get("name")})
            ignored.append({"why": why, "volumes": vols})
    compose = (sections.get("compose") or [""])[0].strip() or None
    return {
        "os_release": os_release,
        "docker_version": (sections.get("docker") or [""])[0].strip() or None,
        "compose": compose,
        "tools": [t for t in sections.get("tools", []) if t],
        "volumes": [v for v in sections.get("volumes", []) if v],
        "containers": containers,
        "compose_projects": compose_projects(containers),
        "ignored_containers": ignored,
    }


def gather(t: Transport) -> dict[str, Any]:
    """Run the facts script on the host and return the parsed facts. Raise
    RemoteCommandError if the script fails."""
    res = t.run(pipeline_argv(FACTS_SCRIPT))
    facts = parse_facts(res.stdout.decode("utf-8", errors="replace"))
    for ignored in facts["ignored_containers"]:
        log.warning("%s: %s: left out of the host facts", t.name, ignored["why"])
    return facts
