"""Restore playbooks: a declarative TOML file that REFINES the restore plan
vkbackup derives from a snapshot (order, health checks, DNS); it never has to
list what the snapshot already says.

    [playbook]
    name = "VisualKit"
    health_timeout = 180            # seconds the one health step may take (default 120)

    [[start]]                       # start groups, started in order (`compose up -d`)
    project = "chatwoot"            # compose project (com.docker.compose.project)
    services = ["postgres", "redis"]  # optional: default every service of the project

    [[health]]                      # HTTP checks, run ON the target host
    name = "platform-api"
    url = "http://127.0.0.1:3001/health"
    expect_status = 200

    [[health]]                      # HTTPS through the host's Caddy, as users get in:
    name = "api"                    # the name resolves to the target itself, and the
    url = "https://api.visualkit.live/health"   # certificate must verify against *ca*,
    ca = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"  # never -k

    [dns]
    zone = "visualkit.live"
    records = ["api", "agent", "janus", "cdn", "support"]

No start group waits for anything: the groups only set the order (a
database's own service starts earlier, with its database step). Compose
projects the playbook does not name start after its groups. Health is one
step, after every group has started: it polls until each compose container
that ran at snapshot time runs again (and is healthy, if it has a
healthcheck) and every HTTP check answers its expected status, for at most
health_timeout seconds.

An https:// check is made with curl on the target, with the URL's host name
resolved to the target itself (`--resolve NAME:443:127.0.0.1`) and the
certificate verified against *ca* (a path on the target; default: the
system's CAs). So a pass means the restored proxy answers that name with a
certificate a client trusts: with a public CA after DNS moves, or with the
restored local CA in a drill. Plain http:// checks need no curl.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vkbackup.config.load import _Table
from vkbackup.errors import ConfigError


@dataclass(frozen=True)
class StartGroup:
    project: str
    services: tuple[str, ...] = ()  # () = all services of the project


@dataclass(frozen=True)
class HttpCheck:
    name: str
    url: str
    expect_status: int = 200
    ca: str | None = None  # https: verify against this CA file on the target


@dataclass(frozen=True)
class Playbook:
    name: str = "derived"
    source: str = ""
    health_timeout: float = 120.0
    start: tuple[StartGroup, ...] = ()
    health: tuple[HttpCheck, ...] = ()
    dns_zone: str | None = None
    dns_records: tuple[str, ...] = ()


def parse_playbook(doc: dict[str, Any], source: str) -> Playbook:
    """Given a parsed TOML document, return the Playbook. Raise ConfigError naming
    *source* and the key path if it is invalid (unknown keys included)."""
    top = _Table(doc, "", source)
    meta = top.table("playbook")
    name = "playbook"
    timeout = 120.0
    if meta is not None:
        name = meta.get_str("name", "playbook") or "playbook"
        timeout = meta.get_float("health_timeout", 120.0, lo=1.0, hi=3600.0)
        meta.get_str("description")
        meta.finish()
    starts: list[StartGroup] = []
    top.used.add("start")
    raw_start = doc.get("start", [])
    if not isinstance(raw_start, list):
        raise top.error("must be an array of tables ([[start]])", "start")
    for i, s in enumerate(raw_start):
        t = _Table(s, f"start[{i}]", source)
        starts.append(
            StartGroup(project=t.req_str("project"), services=t.str_list("services") or ())
        )
        t.finish()
    checks: list[HttpCheck] = []
    top.used.add("health")
    raw_health = doc.get("health", [])
    if not isinstance(raw_health, list):
        raise top.error("must be an array of tables ([[health]])", "health")
    for i, h in enumerate(raw_health):
        t = _Table(h, f"health[{i}]", source)
        url = t.req_str("url")
        if not url.startswith(("http://", "https://")):
            raise t.error("must be an http:// or https:// URL, checked on the target", "url")
        ca = t.get_str("ca")
        if ca is not None and not (url.startswith("https://") and ca.startswith("/")):
            raise t.error("is for https:// checks: an absolute path on the target", "ca")
        checks.append(
            HttpCheck(
                name=t.get_str("name", url) or url,
                url=url,
                expect_status=t.get_int("expect_status", 200, lo=100, hi=599),
                ca=ca,
            )
        )
        t.finish()
    zone: str | None = None
    records: tuple[str, ...] = ()
    dns = top.table("dns")
    if dns is not None:
        zone = dns.get_str("zone")
        records = dns.str_list("records") or ()
        dns.finish()
    top.finish()
    return Playbook(
        name=name,
        source=source,
        health_timeout=timeout,
        start=tuple(starts),
        health=tuple(checks),
        dns_zone=zone,
        dns_records=records,
    )


def load_playbook(path: Path) -> Playbook:
    """Read and validate the playbook at *path*. Raise ConfigError naming the file
    (and the key path) if it is missing, unreadable, not TOML or invalid."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: playbook not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read playbook: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_playbook(doc, str(path))
