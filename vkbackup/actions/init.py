"""`vkbackup init HOST`: connect, discover what the host runs, write a commented config.

Discovery (over SSH, read-only):
    whether it is a Debian host under systemd (then a `host` source, which also
    takes Caddy's data dir /var/lib/caddy, rebuilds the server itself);
    compose projects (from container labels): working dir, compose files, the
    `.env` beside them; /etc/caddy/Caddyfile and Caddy's data (a volume mounted
    at /data in a caddy container, or /var/lib/caddy on the host); named
    volumes and which containers use them; PostgreSQL containers (by image or
    by POSTGRES_* environment keys: names only, never values) and their
    databases; locally built images (no registry digest) and pulled ones.

A host key is trusted on first use only after `ask` says so, and a changed
or revoked key is refused (HostKeyError), never replaced. A known host whose
server offers a key of a type known_hosts has none of for it (say it has the
host's ssh-rsa key and the server now shows ssh-ed25519) is no first contact:
`ask` gets the offer with the known keys (`HostKeyOffer.known`), to show them
beside the new one, and the CLI trusts it only on an explicit confirmation.
The server is asked first for a key of a type already known, so one that
still has it shows it, and nothing needs confirming. Storage and the identity path
are carried over from the current config (credentials never are), and the
generated text is parsed with the config loader before anyone sees it: init
never writes a config that `vkbackup config check` would reject.

Every name discovery finds (containers, volumes, images, databases, paths,
compose projects) was chosen by whoever controls the host, so it is data in
the generated TOML, never syntax: values go through `toml_str` (a TOML basic
string with every control character as a \\uXXXX escape, so a newline in a
name cannot end the string and start a new key such as
`retention.keep_last = 1` or a `webhook_url`), and comments through
`toml_comment` (one line, control characters shown as visible escapes), so a
name cannot end the comment either. Before that, each container, volume, image,
database and role name is checked against Docker's and PostgreSQL's own rules
(`vkbackup.names`): one that breaks them is skipped with a warning naming it,
never run through a command or written to the config.

With --pitr (a `PitrRequest`), init also checks point-in-time recovery on the
first PostgreSQL container that gets a source (one WAL stream per host): it
finds the container's network gateway, runs `vkbackup.pitr.setup.check_pitr`
through the same SSH connection (read-only), and reports what the server
lacks as the exact commands to run there (`PitrReport`, `format_pitr_report`),
never running them. The config gets ``pitr = true`` on that container's first
source and a [pitr] table naming the role, the slot and the password file.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vkbackup import facts
from vkbackup.config import Config, parse_config
from vkbackup.config.model import HostConfig, SigningConfig
from vkbackup.errors import ConfigError, HostKeyError, VkError
from vkbackup.logs import get_logger
from vkbackup.names import (
    check_container,
    check_database,
    check_image,
    check_role,
    check_volume,
    shown,
)
from vkbackup.pitr.setup import (
    DEFAULT_PORT,
    Change,
    Gateway,
    check_pitr,
    container_gateway,
    finish_command,
)
from vkbackup.sources.postgres import psql_argv
from vkbackup.textsafe import printable
from vkbackup.transport.base import Transport, pipeline_argv
from vkbackup.transport.ssh import (
    KnownKey,
    fetch_host_key,
    fingerprint,
    host_key_status,
    known_hosts_name,
    read_known_keys,
)

PG_IMAGE_HINTS = ("postgres", "pgvector", "postgis", "timescale")

log = get_logger("init")


@dataclass
class Database:
    container: str
    user: str
    databases: list[str]


@dataclass
class Discovery:
    facts: dict[str, Any]
    env_files: list[str] = field(default_factory=list)
    compose_files: list[str] = field(default_factory=list)
    caddyfile: str | None = None
    caddy_data_dir: str | None = None
    volumes: dict[str, list[str]] = field(default_factory=dict)  # volume -> containers using it
    images: dict[str, str] = field(default_factory=dict)  # container -> its image reference
    pg_data_volumes: set[str] = field(default_factory=set)
    databases: list[Database] = field(default_factory=list)
    local_images: list[str] = field(default_factory=list)
    registry_images: list[str] = field(default_factory=list)
    debian_systemd: bool = False  # dpkg and systemd: a `host` source can rebuild the server


@dataclass(frozen=True)
class PitrRequest:
    """`init --pitr`: the [pitr] role, slot and port to check and write, the
    replication password (read from, or just written to, *password_file*)."""

    role: str
    slot: str
    port: int
    password: str
    password_file: Path


@dataclass(frozen=True)
class PitrReport:
    """What `init --pitr` found for one PostgreSQL container: the network and
    gateway the stream's connections come from, and the changes the server
    needs (none: ready); or *error* (it could not be checked), or *skipped*
    (not set up, and why)."""

    container: str
    user: str
    gateway: Gateway | None = None
    changes: tuple[Change, ...] = ()
    error: str | None = None
    skipped: str | None = None

    @property
    def ready(self) -> bool:
        return self.error is None and self.skipped is None and not self.changes


@dataclass(frozen=True)
class Generated:
    """What `generate_config` returns: the config text, and with --pitr a
    report per PostgreSQL container."""

    text: str
    pitr: tuple[PitrReport, ...] = ()


@dataclass(frozen=True)
class HostKeyOffer:
    """A host key `vkbackup init` is about to trust: what the server offered, and
    the keys *known_hosts* already holds for the host under *name* (empty: a
    first contact; else the offer is a key of a new type for a known host)."""

    name: str
    key_type: str
    fingerprint: str
    known: tuple[KnownKey, ...]
    known_hosts: Path

    @property
    def first_contact(self) -> bool:
        return not self.known

    def describe(self) -> str:
        return f"{self.key_type} {self.fingerprint}"


def trust_host_key(
    address: str, port: int, known_hosts: Path, ask: Callable[[HostKeyOffer], bool]
) -> str:
    """Make sure *known_hosts* has the host's key. Return its fingerprint.

    A key known_hosts holds is trusted with no question; a changed or revoked
    one raises HostKeyError. Any other (a first contact, or a key of a new
    type for a known host) is added only if *ask*, given the offer, says so;
    else HostKeyError, and nothing is written."""
    name = known_hosts_name(address, port)
    known = read_known_keys(known_hosts, name)
    valid = tuple(k for k in known if not k.revoked)
    key = fetch_host_key(address, port, prefer=[k.type for k in valid])
    fp = fingerprint(key)
    status = host_key_status(known, key)
    if status == "known":
        return fp
    if status == "revoked":
        raise HostKeyError(f"{name}: the server offers {fp}, which {known_hosts} marks @revoked")
    if status == "changed":
        old = ", ".join(k.describe() for k in valid if k.type == key.get_name())
        raise HostKeyError(
            f"{name}: HOST KEY CHANGED: {known_hosts} has {old}, the server offers "
            f"{key.get_name()} {fp}; refusing",
            hint=f"if expected: ssh-keygen -R '{name}' -f {known_hosts}",
        )
    offer = HostKeyOffer(name, key.get_name(), fp, valid, known_hosts)
    if not ask(offer):
        raise HostKeyError(f"{name}: host key {fp} not trusted; nothing written")
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with open(known_hosts, "ab+") as f:
        f.seek(0, 2)
        if f.tell():
            f.seek(-1, 2)
            if f.read(1) != b"\n":  # never glue our line onto an unterminated last one
                f.write(b"\n")
        f.write(f"{name} {key.get_name()} {key.get_base64()}\n".encode())
    return fp


def _lines(t: Transport, script: str) -> list[str]:
    res = t.run(pipeline_argv(script), check=False)
    return [line for line in res.stdout.decode(errors="replace").splitlines() if line.strip()]


def _json_str(line: str) -> str:
    """A JSON string (as `to_json` prints it) decoded; anything else as it is."""
    try:
        value = json.loads(line)
    except ValueError:
        return line
    return value if isinstance(value, str) else line


def _named(check: Callable[..., str], name: object, where: str) -> bool:
    """Return True if *name* follows its rule (*check*, from vkbackup.names); else warn,
    naming it and *where* it was found, and return False: the caller skips it."""
    try:
        check(name if isinstance(name, str) else "", where)
    except ConfigError as e:
        log.warning("%s: skipped, not written to the config", e)
        return False
    return True


def discover(t: Transport) -> Discovery:
    """Inspect the host (read-only) and return what a config should back up. A
    discovered name that breaks Docker's or PostgreSQL's rules is skipped with a
    warning; a volume that a skipped container uses is skipped with it (it could
    not be stopped while copied)."""
    f = facts.gather(t)
    d = Discovery(facts=f)
    for proj in f["compose_projects"].values():
        wd = proj.get("working_dir")
        for cf in str(proj.get("config_files") or "").split(","):
            if cf and not cf.startswith("/") and wd:
                cf = f"{wd.rstrip('/')}/{cf}"  # compose v1 records them relative to wd
            if cf.startswith("/") and cf not in d.compose_files:
                d.compose_files.append(cf)
        if wd:
            env = _lines(
                t, f"[ -f {shlex.quote(wd + '/.env')} ] && echo {shlex.quote(wd)}/.env || true"
            )
            d.env_files += [e for e in env if e not in d.env_files]
    if _lines(t, "[ -f /etc/caddy/Caddyfile ] && echo yes || true"):
        d.caddyfile = "/etc/caddy/Caddyfile"
    if _lines(t, "[ -d /var/lib/caddy ] && echo yes || true"):
        d.caddy_data_dir = "/var/lib/caddy"
    d.debian_systemd = bool(
        _lines(
            t,
            "command -v dpkg-query >/dev/null && command -v systemctl >/dev/null "
            "&& echo yes || true",
        )
    )
    pg_containers: list[dict[str, Any]] = []
    unstoppable: set[str] = set()  # volumes a skipped container mounts
    for ignored in f["ignored_containers"]:  # facts left it out: a hostile name or label
        unstoppable |= set(ignored["volumes"])
    for c in f["containers"]:
        if not _named(check_container, c.get("name"), f"{t.name}: container"):
            unstoppable |= {str(m.get("name")) for m in c.get("mounts") or [] if m.get("name")}
            continue
        image = str(c.get("image") or "")
        d.images[c["name"]] = image
        env_keys = _lines(
            t,
            "docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "
            + shlex.quote(c["name"])
            + " | cut -d= -f1",
        )
        is_pg = any(h in image for h in PG_IMAGE_HINTS) or "PG_VERSION" in env_keys
        for m in c.get("mounts") or []:
            if m.get("type") == "volume" and m.get("name"):
                if not _named(check_volume, m["name"], f"{t.name}: volume"):
                    continue
                d.volumes.setdefault(m["name"], []).append(c["name"])
                if is_pg and str(m.get("destination", "")).startswith("/var/lib/postgresql"):
                    d.pg_data_volumes.add(m["name"])
        if is_pg and c.get("running"):
            pg_containers.append(c)
    for vol in sorted(unstoppable & set(d.volumes)):
        log.warning(
            "%s: volume %s: used by a container whose name was skipped: skipped too",
            t.name,
            shown(vol),
        )
        del d.volumes[vol]
        d.pg_data_volumes.discard(vol)
    for c in pg_containers:
        user_line = _lines(
            t,
            "docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "
            + shlex.quote(c["name"])
            + " | sed -n 's/^POSTGRES_USER=//p'",
        )
        user = user_line[0] if user_line else "postgres"
        where = f"{t.name}: container {c['name']}"
        if not _named(check_role, user, f"{where}: POSTGRES_USER"):
            continue
        # each name as a JSON string: one with a newline in it stays one line, and is refused
        sql = (
            "SELECT to_json(datname)::text FROM pg_database "
            "WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname"
        )
        out = _lines(t, shlex.join(psql_argv(c["name"], user, "postgres", sql)))
        dbs = [db for db in map(_json_str, out) if _named(check_database, db, f"{where}: database")]
        d.databases.append(Database(c["name"], user, dbs))
    used = sorted({str(c.get("image")) for c in f["containers"] if c.get("image")})
    for ref in used:
        if not _named(check_image, ref, f"{t.name}: image"):
            continue
        digests = _lines(
            t, f"docker image inspect -f '{{{{json .RepoDigests}}}}' {shlex.quote(ref)} || true"
        )
        try:
            has_digest = bool(json.loads(digests[0])) if digests else False
        except ValueError:
            has_digest = False
        (d.registry_images if has_digest else d.local_images).append(ref)
    return d


_TOML_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_str(s: str) -> str:
    """Given any text, return it as a TOML basic string that reads back as exactly
    that text. Quote and backslash are escaped; every control character (C0, DEL,
    C1) becomes \\uXXXX, so nothing in a name can end the string or the line. A
    lone surrogate (no Unicode scalar value, so TOML cannot hold it) becomes
    U+FFFD. json.dumps is not enough: it leaves DEL raw, which TOML refuses, and
    writes characters outside the BMP as surrogate pairs, which TOML refuses too."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\uFFFD")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(s: str) -> str:
    """A TOML key: bare when it may be, else quoted like a string."""
    return s if _TOML_BARE_KEY.fullmatch(s) else toml_str(s)


def toml_comment(text: str) -> str:
    """A one-line TOML comment holding *text*: a newline or any other control
    character in it is shown as a visible escape, so the comment cannot end early
    and what follows it cannot become a key."""
    return "# " + printable(text)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(toml_str(i) for i in items) + "]"


def _image_name(ref: str) -> str:
    """An image reference without its tag and digest (`docker.io/bitnami/redis:7`:
    `docker.io/bitnami/redis`), so a tag such as `app:redis-fix` names no Redis."""
    ref = ref.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    return (head + "/" if head else "") + last.split(":", 1)[0]


def _safe_name(s: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-._") or "x"
    return out[:63]


def pitr_container(d: Discovery) -> Database | None:
    """The PostgreSQL container `init --pitr` sets up: the first one with a
    database to back up (so a source to put ``pitr = true`` on), or None."""
    return next((db for db in d.databases if db.databases), None)


def render_config(
    host_name: str,
    host: HostConfig,
    d: Discovery,
    storage_toml: str,
    encryption_toml: str,
    *,
    pitr: str | None = None,
) -> str:
    """Return a commented vkbackup config backing up everything discovered
    (pure). *pitr*: the container whose first postgres source gets ``pitr =
    true``."""
    out: list[str] = [
        toml_comment(
            f"vkbackup config for {host.user}@{host.address}:{host.port} (`vkbackup init`)."
        ),
        "# Review it, then: vkbackup config check && vkbackup snapshot --dry-run",
        "",
        storage_toml.strip(),
        "",
        encryption_toml.strip(),
        "",
        f"[hosts.{toml_key(host_name)}]",
        f"address = {toml_str(host.address)}",
        f"port = {host.port}",
        f"user = {toml_str(host.user)}",
    ]
    if host.key_file:
        out.append(f"key_file = {toml_str(str(host.key_file))}")
    out.append(f"known_hosts = {toml_str(str(host.known_hosts))}")
    names: set[str] = set()

    def source(lines: list[str], *comments: str) -> None:
        out.extend(["", *(toml_comment(c) for c in comments)])
        out.extend([f"[[hosts.{toml_key(host_name)}.sources]]", *lines])

    def uniq(base: str) -> str:
        n, i = _safe_name(base), 2
        while n in names:
            n, i = f"{_safe_name(base)}-{i}", i + 1
        names.add(n)
        return n

    for db in d.databases:
        for i, name in enumerate(db.databases):
            streamed = pitr is not None and db.container == pitr and i == 0
            source(
                [
                    'type = "postgres"',
                    f"name = {toml_str(uniq(f'{db.container}-{name}'))}",
                    f"container = {toml_str(db.container)}",
                    f"database = {toml_str(name)}",
                    f"user = {toml_str(db.user)}",
                    *(["pitr = true"] if streamed else []),
                ],
                f"PostgreSQL in {db.container}: pg_dump -Fc + roles + row counts",
                *(
                    [
                        "pitr: `vkbackup wal-stream` streams the WAL of the whole cluster "
                        "(point-in-time recovery; see [pitr])"
                    ]
                    if streamed
                    else []
                ),
            )
    if d.env_files:
        source(
            [
                'type = "files"',
                f"name = {toml_str(uniq('secrets'))}",
                f"paths = {_toml_list(d.env_files)}",
                "secret = true",
            ],
            ".env files beside the compose files (encrypted here; paths kept private)",
        )
    cfg_files = ([d.caddyfile] if d.caddyfile else []) + d.compose_files
    if cfg_files:
        source(
            [
                'type = "files"',
                f"name = {toml_str(uniq('config'))}",
                f"paths = {_toml_list(cfg_files)}",
            ],
            "Caddyfile and compose files",
        )
    if d.debian_systemd:
        source(
            ['type = "host"', f"name = {toml_str(uniq('host'))}"],
            "the server itself: packages installed by hand, enabled units, /etc files "
            "changed or added,",
            "firewall, accounts, crontabs and Caddy's data dir "
            "(certificates): secret, like the .env files",
        )
    if d.caddy_data_dir and not (d.debian_systemd and d.caddy_data_dir == "/var/lib/caddy"):
        source(
            [
                'type = "files"',
                f"name = {toml_str(uniq('caddy-data'))}",
                f"paths = {_toml_list([d.caddy_data_dir])}",
                "secret = true",
            ],
            "Caddy's data directory (certificates and their private keys)",
        )
    for vol in sorted(d.volumes):
        users = sorted(set(d.volumes[vol]))
        if vol in d.pg_data_volumes:
            out.extend(
                [
                    "",
                    toml_comment(
                        f"volume {vol}: PostgreSQL data of {', '.join(users)}: "
                        "dumped above, not copied raw"
                    ),
                ]
            )
            continue
        redis = [u for u in users if "redis" in _image_name(d.images.get(u, "")).lower()]
        if redis:
            quiesce = 'quiesce = "stop"'
            why = (
                f"stopped while it is copied: {', '.join(redis)} runs Redis, which writes "
                "a fresh dump on shutdown (paused, the copy holds its last background save)"
            )
        else:
            quiesce = 'quiesce = "pause"'
            why = (
                'paused while it is copied (frozen, not restarted); use quiesce = "stop" '
                "if a program in it writes its state only on shutdown"
            )
        source(
            [
                'type = "docker-volume"',
                f"name = {toml_str(uniq(vol))}",
                f"volume = {toml_str(vol)}",
                f"stop = {_toml_list(users)}",
                quiesce,
            ],
            f"volume {vol}, used by {', '.join(users) or 'no container'}:",
            why,
        )
    images = d.local_images + d.registry_images
    if images:
        source(
            [
                'type = "docker-image"',
                f"name = {toml_str(uniq('images'))}",
                f"images = {_toml_list(images)}",
            ],
            "images the containers run: "
            + (f"built here: {', '.join(d.local_images)}" if d.local_images else "")
            + (
                "; pulled (saved too, so a restore needs no registry): "
                + ", ".join(d.registry_images)
                if d.registry_images
                else ""
            ),
        )
    return "\n".join(out) + "\n"


def storage_toml(s: Any) -> str:
    """The [storage] table for a StorageConfig (credentials are never copied)."""
    lines = ["[storage]", f"type = {toml_str(s.type)}"]
    if s.type == "local":
        lines.append(f"path = {toml_str(str(s.path))}")
    else:
        for key in ("bucket", "prefix", "endpoint_url", "region", "profile"):
            v = getattr(s, key)
            if v:
                lines.append(f"{key} = {toml_str(v)}")
        if s.addressing_style != "auto":
            lines.append(f"addressing_style = {toml_str(s.addressing_style)}")
        if s.object_lock:
            lines.append(
                f"object_lock = {{ mode = {toml_str(s.object_lock.mode)}, "
                f"days = {int(s.object_lock.days)} }}"
            )
        if s.secret_access_key:
            lines.append("# credentials: use an AWS profile or the environment, not this file")
    return "\n".join(lines)


def encryption_toml(recipients: list[str], identity: str | None) -> str:
    lines = ["[encryption]", f"recipients = {_toml_list(recipients)}"]
    if identity:
        lines.append(f"identity = {toml_str(identity)}   # only restore/verify/drill need it")
    return "\n".join(lines)


def signing_toml(signing: SigningConfig, public_line: str | None = None) -> str:
    """The [signing] table: the key this machine signs with (and, as a comment,
    its public line for the machines that restore), and the keys it trusts."""
    lines = ["[signing]"]
    if signing.key is not None:
        lines.append(f"key = {toml_str(str(signing.key))}   # signs every snapshot: keep it here")
    if public_line:
        lines.append(toml_comment("its public line, for [signing] trusted where you restore:"))
        lines.append(toml_comment(public_line))
    if signing.trusted:
        lines.append(f"trusted = {_toml_list(list(signing.trusted))}")
    return "\n".join(lines)


def pitr_toml(req: PitrRequest) -> str:
    """The [pitr] table `init --pitr` writes: the role, the slot, the password
    file (absolute), and the port when it is not PostgreSQL's default."""
    lines = [
        "[pitr]",
        toml_comment(
            "point-in-time recovery: `vkbackup wal-stream` streams the WAL of the postgres "
            "source with pitr = true"
        ),
        f"role = {toml_str(req.role)}",
        f"slot = {toml_str(req.slot)}",
        f"password_file = {toml_str(str(req.password_file))}   # the role's password, mode 0600",
    ]
    if req.port != DEFAULT_PORT:
        lines.append(f"port = {int(req.port)}")
    return "\n".join(lines)


def check_pitr_setup(t: Transport, d: Discovery, req: PitrRequest) -> tuple[PitrReport, ...]:
    """Check each PostgreSQL container *d* found for PITR (read-only): the one
    `pitr_container` picks is checked (`vkbackup.pitr.setup.check_pitr`, after
    finding its gateway), the others are reported skipped (one WAL stream per
    host). A check that fails is reported with its error, not raised."""
    chosen = pitr_container(d)
    reports: list[PitrReport] = []
    for db in d.databases:
        if chosen is None or db.container != chosen.container:
            why = (
                f"one WAL stream per host: pitr = true is on {chosen.container}'s source"
                if chosen is not None
                else "no database to back up besides postgres, so no source for pitr = true"
            )
            reports.append(PitrReport(db.container, db.user, skipped=why))
            continue
        gateway: Gateway | None = None
        try:
            gateway = container_gateway(t, db.container)
            _, changes = check_pitr(
                t,
                db.container,
                db.user,
                req.role,
                req.password,
                slot=req.slot,
                port=req.port,
                gateway=gateway,
            )
        except VkError as e:
            reports.append(PitrReport(db.container, db.user, gateway, error=str(e)))
            continue
        reports.append(PitrReport(db.container, db.user, gateway, tuple(changes)))
    return tuple(reports)


_THEN = {
    "none": "nothing (a role change applies at once)",
    "reload": "reload",
    "restart": "restart (the restart stops the database for a few seconds)",
}


def format_pitr_report(r: PitrReport, role: str) -> list[str]:
    """The lines `init --pitr` prints for *r*: "ready", or each change with its
    commands and what it needs then, and the one reload or restart after them
    all. Host-given text is shown through `printable`."""
    head = f"PITR: {printable(r.container)}"
    if r.skipped is not None:
        return [f"{head}: not set up: {printable(r.skipped)}"]
    out: list[str] = []
    if r.gateway is not None:
        g = r.gateway
        out.append(
            f"{head}: the WAL stream connects to {g.address} on network {printable(g.network)}; "
            f"its connections come from the network's gateway {g.gateway} (the host)"
        )
    if r.error is not None:
        out.append(f"{head}: cannot check: {printable(r.error)}")
        return out
    if not r.changes:
        out.append(
            f"{head}: ready (wal_level, WAL senders, a free slot, role {role} with "
            "REPLICATION and the password file's password, a pg_hba.conf line for the gateway)"
        )
        return out
    n = len(r.changes)
    out.append(
        f"{head}: {n} change{'s' if n > 1 else ''} needed; init applied none: run "
        "these on the host, then `vkbackup init ... --pitr` again to check"
    )
    for i, c in enumerate(r.changes, 1):
        out.append(f"  {i}. {printable(c.what)}")
        out.extend(f"       {printable(cmd)}" for cmd in c.commands)
        if not c.commands:
            out.append("       (no command: make this change by hand)")
        out.append(f"     then: {_THEN[c.then]}")
    last = finish_command(list(r.changes), r.container, r.user)
    if last is not None:
        out.append("  after all of them, once:")
        out.append(f"       {printable(last)}")
    return out


def generate_config(
    cfg: Config,
    host: HostConfig,
    recipients: list[str],
    *,
    connect: Callable[[HostConfig], Transport],
    ask: Callable[[HostKeyOffer], bool],
    origin: str = "<generated>",
    signing: str = "",
    pitr: PitrRequest | None = None,
) -> Generated:
    """Given the current config, the host to discover and the age recipients,
    trust the host's key (see `trust_host_key`), discover what the host
    runs and return the text of a config that backs it all up, with the
    [signing] table *signing* (`signing_toml`). With *pitr*, also check the
    PostgreSQL containers for PITR (`check_pitr_setup`, read-only), turn
    ``pitr = true`` on for the one picked and add [pitr] (`pitr_toml`). Raise
    ConfigError (naming *origin*) rather than return a config that does not
    load."""
    trust_host_key(host.address, host.port, host.known_hosts, ask)
    t = connect(host)
    reports: tuple[PitrReport, ...] = ()
    try:
        found = discover(t)
        if pitr is not None:
            reports = check_pitr_setup(t, found, pitr)
    finally:
        t.close()
    identity = str(cfg.encryption.identity) if cfg.encryption.identity else None
    chosen = pitr_container(found) if pitr is not None else None
    tables = encryption_toml(recipients, identity) + ("\n\n" + signing if signing else "")
    if pitr is not None:
        tables += "\n\n" + pitr_toml(pitr)
    text = render_config(
        host.name,
        host,
        found,
        storage_toml(cfg.storage),
        tables,
        pitr=chosen.container if chosen is not None else None,
    )
    parse_config(tomllib.loads(text), origin)  # never hand out a config we reject
    return Generated(text, reports)
