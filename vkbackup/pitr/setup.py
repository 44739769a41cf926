"""What prod's PostgreSQL needs for the WAL stream, checked, and the exact change
printed when something is missing: `vkbackup init --pitr` runs the check, and
applies nothing itself.

The shape. The backup machine runs `pg_receivewal` against the database in a
container on the backed-up host, through an SSH direct-tcpip channel to the
container's address (`vkbackup.pitr.tunnel`), logging in as a replication role
(`[pitr] role`, default ``vkbackup_wal``) with a password that only the backup
machine keeps, in a 0600 file (`[pitr] password_file`, default
``pitr-password`` beside the config). Base backups run `pg_basebackup` through
`docker exec` over the local socket as the source's user, and the stream makes
its replication slot itself with SQL through `docker exec psql`: neither needs
anything here. So the server needs exactly:

* ``wal_level`` replica or logical (replica is the default since PostgreSQL
  10): with ``minimal`` there is no WAL to replay a point in time from, and no
  WAL sender may run. ``max_wal_senders`` above 0 (pg_receivewal is one WAL
  sender) and ``max_replication_slots`` with a free slot (the stream's slot
  keeps prod's WAL until it is stored). These three are read only at server
  start: the change is ``ALTER SYSTEM`` and a restart. A value set on the
  server's command line (a compose ``command: postgres -c ...``) outranks
  ALTER SYSTEM, so for those the change is said in words, not printed as a
  command that would do nothing. ``listen_addresses`` must not be loopback
  only (the official image listens on ``*``), and the server's port must be
  `[pitr] port`.
* the role, with REPLICATION and LOGIN, whose stored password is a
  SCRAM-SHA-256 verifier of the password in the password file. The printed
  ``CREATE ROLE`` / ``ALTER ROLE`` carries that *verifier*
  (`scram_sha256_verifier`), never the password: the command is shown on a
  terminal, may land in a shell history or the server's log, and the verifier
  lets nobody log in (PostgreSQL stores a verifier given to it as it is,
  whatever ``password_encryption`` says). Whether an existing SCRAM password
  is the file's is checked without reading it out: the query returns only
  the salt and iteration count (which the server sends to anyone who starts
  a SCRAM login) and a SHA-256 of the stored verifier, which is compared
  with the verifier of the file's password under that salt. Role changes take
  effect at once.
* a pg_hba.conf line ``host replication <role> <gateway>/32 scram-sha-256``.
  The channel's TCP connection comes from the host itself: the host's address
  on the container's Docker network, which is that network's gateway
  (``docker inspect``: ``.NetworkSettings.Networks.<net>.Gateway``; the first
  network by name, the one whose address the stream connects to). /32 and not
  0.0.0.0/0: only the host (our SSH channel) may log in for replication, never
  another container on the network nor the internet. One caveat, said here
  because the line cannot fix it: a port of the container published with
  Docker's userland proxy on (the default) reaches the server from that same
  gateway address, so for a published 5432 the role's password is what guards
  replication. A pg_hba.conf change needs a reload.

How pg_hba.conf is read (PostgreSQL's hba.c, the parts that matter here): the
rules are tried in file order and the FIRST one that matches the connection
decides, an authentication failure included (nothing falls through). The
stream's connection is TCP, not SSL and not GSSAPI-encrypted (libpq believes
it is on a Unix socket, `vkbackup.pitr.tunnel`): ``host``, ``hostnossl`` and
``hostnogssenc`` lines match it, ``hostssl``, ``hostgssenc`` and ``local`` do
not. Its database is the keyword ``replication``: ``all`` does NOT match a
physical replication connection. The user column matches with the role's name
or ``all`` (a ``+group`` or a PostgreSQL 16 ``/regex`` entry is taken as not
matching: resolving it is beyond a check). The address matches when it is
``all``, ``samenet`` (the gateway is on the container's network by
definition) or a network that holds the gateway; ``samehost`` (the gateway is
the host's address, not the container's) and host names do not. The deciding
line must allow a password login that the SCRAM verifier satisfies
(``scram-sha-256``, ``md5``, ``password``) or ``trust``; any other (``reject``,
``ident``, ``cert``, ...) blocks the stream, and our line must go BEFORE it,
which the printed command does. A line PostgreSQL cannot parse is reported:
a reload then keeps the old rules, and a restart fails.

Everything the host reports is data: the container, the source's user, the
role, the gateway, the network's name and pg_hba.conf's path are checked
(`vkbackup.names`, `ipaddress`, a plain absolute path) before any of them is
put in a printed command, and every command is built with `shlex`; SQL
identifiers are double-quoted and the verifier dollar-quoted, so the shell
word needs no escaped quotes.

Passwords are generated as URL-safe base64 (`secrets.token_urlsafe`), plain
ASCII: PostgreSQL and libpq apply SASLprep to a SCRAM password, which leaves
ASCII as it is, so the verifier computed here (without SASLprep) is the one
the server would compute. A non-ASCII password is refused by
`scram_sha256_verifier` rather than given a verifier that might not match.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vkbackup.errors import ConfigError, TransportError
from vkbackup.names import check_container, check_role, shown
from vkbackup.textsafe import printable
from vkbackup.transport.base import Transport

DEFAULT_ROLE = "vkbackup_wal"
DEFAULT_SLOT = "vkbackup"
DEFAULT_PORT = 5432
#: PostgreSQL's default scram_iterations, and its salt length (SCRAM_DEFAULT_SALT_LEN)
SCRAM_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16
#: the most PBKDF2 iterations taken from a host's stored verifier (a hostile one
#: could ask for billions: the comparison then simply fails)
_MAX_ITERATIONS = 10_000_000
#: what the settings below are set to when they stop the stream (PostgreSQL's defaults)
DEFAULT_WAL_SENDERS = 10
DEFAULT_REPLICATION_SLOTS = 10

#: role names PostgreSQL reserves or that are keywords in pg_hba.conf's user column
_RESERVED_ROLES = frozenset({"all", "public", "none", "current_user", "session_user"})
#: a path on the host that may appear in a printed command as it is
_PLAIN_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]*", re.ASCII)
#: a pg_hba.conf line built here, safe inside double quotes in sh
_HBA_LINE_RE = re.compile(r"[A-Za-z0-9_.:/ -]+", re.ASCII)
_SLOT_RE = re.compile(r"[a-z0-9_]{1,63}", re.ASCII)
_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)  # encode(..., 'hex') is lowercase

Then = Literal["none", "reload", "restart"]

# -- SCRAM ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_sha256_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """Given a password (ASCII: see the module docstring), return the SCRAM-SHA-256
    verifier PostgreSQL stores for it (pg_authid.rolpassword):
    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, base64 each,
    per RFC 5802 / RFC 7677: SaltedPassword = PBKDF2-HMAC-SHA-256(password,
    salt, iterations); ClientKey = HMAC(SaltedPassword, "Client Key");
    StoredKey = SHA-256(ClientKey); ServerKey = HMAC(SaltedPassword, "Server
    Key"). *salt*: 16 random bytes when None. Raise ValueError for an empty or
    non-ASCII password, an empty salt or fewer than one iteration."""
    if not password:
        raise ValueError("an empty password: PostgreSQL refuses it")
    if not password.isascii():
        raise ValueError(
            "a non-ASCII password: PostgreSQL would SASLprep it, which is not done here"
        )
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if salt is None:
        salt = secrets.token_bytes(SCRAM_SALT_BYTES)
    if not salt:
        raise ValueError("an empty salt")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _scram_params(params: str) -> tuple[int, bytes] | None:
    """``<iterations>:<base64 salt>`` (as the check reports it) as numbers and
    bytes, or None when it is not that (or asks for too many iterations)."""
    count, sep, salt = params.partition(":")
    if not sep or not count.isascii() or not count.isdigit():
        return None
    n = int(count)
    if not 1 <= n <= _MAX_ITERATIONS:
        return None
    try:
        raw = base64.b64decode(salt, validate=True)
    except ValueError:
        return None
    return (n, raw) if raw else None


# -- the password file -------------------------------------------------------------


def generate_password() -> str:
    """A new replication password: 32 random bytes as URL-safe base64 (43
    ASCII characters, so SASLprep leaves it alone)."""
    return secrets.token_urlsafe(32)


def write_password_file(path: Path, password: str) -> None:
    """Create *path* holding *password* and a newline, mode 0600 from its
    creation (O_EXCL: an existing file, or a symlink, is never overwritten).
    Raise ConfigError naming the path when it exists, its directory does not,
    or the write fails (a half-written file is removed)."""
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: directory {path.parent} does not exist; password not written")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; a password file is never overwritten") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the password file: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did
        data = (password + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise ConfigError(f"{path}: cannot write the password file: {e.strerror}") from None
    os.close(fd)


def read_password_file(path: Path) -> str:
    """Return the password in *path*, without one trailing newline. Raise
    ConfigError naming the path when it is missing, not a regular file,
    readable or writable by group or others (with the chmod that fixes it),
    not UTF-8, or empty."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such password file",
            hint="`vkbackup init HOST --pitr` creates one (mode 0600)",
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot open the password file: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: the password file is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{path}: the password file is mode {stat.S_IMODE(st.st_mode):04o}: group or "
                "others may read or change it; refusing to use it",
                hint=f"chmod 600 {shlex.quote(str(path))}",
            )
        chunks: list[bytes] = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 65536:
                raise ConfigError(f"{path}: the password file is over 64 KiB: not a password")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the password file: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the password file is not UTF-8 text") from None
    password = text.removesuffix("\n")
    if not password:
        raise ConfigError(f"{path}: the password file is empty")
    return password


# -- names ---------------------------------------------------------------------------


def check_replication_role(role: str, where: str) -> str:
    """Given the replication role's name, return it; raise ConfigError (naming
    *where*) unless `vkbackup.names.check_role` takes it and it is neither
    reserved by PostgreSQL (``pg_*``, ``public``, ...) nor a pg_hba.conf keyword
    (``all``)."""
    check_role(role, where)
    if role.lower() in _RESERVED_ROLES or role.lower().startswith("pg_"):
        raise ConfigError(
            f"{where}: role {shown(role)} is reserved by PostgreSQL or is a pg_hba.conf keyword"
        )
    return role


def _plain_path(path: str, what: str) -> str:
    if not _PLAIN_PATH_RE.fullmatch(path) or ".." in path.split("/"):
        raise TransportError(
            f"{what}: {shown(path)}: not a plain absolute path ('/' and letters, digits, "
            "'_', '.', '-'); vkbackup will not print it in a command: make the change by hand"
        )
    return path


def _ident(name: str) -> str:
    """An SQL identifier, always double-quoted (exact case, never a keyword)."""
    return '"' + name.replace('"', '""') + '"'


def _dollar(text: str) -> str:
    """An SQL string constant, dollar-quoted: no single quote for the shell to escape."""
    if "$v$" in text:
        raise ValueError(f"cannot dollar-quote {text!r}")
    return f"$v${text}$v$"


# -- the check -------------------------------------------------------------------------

#: One query, fed to `psql -f -` with the psql variables ``role`` and ``slot``
#: (psql quotes ``:'role'`` as a literal itself). One line of JSON out. Needs a
#: superuser (pg_authid, pg_hba_file_rules, pg_stat_file) and PostgreSQL 11+
#: (sha256()). pg_hba_file_rules shows the file as it is now (not as loaded),
#: in file order; hba_reload_pending says whether the server has read it since.
CHECK_SQL = """\
SELECT jsonb_build_object(
  'version', current_setting('server_version_num')::int,
  'settings', (SELECT jsonb_object_agg(name, jsonb_build_object('value', setting,
                                                                'source', source))
               FROM pg_settings
               WHERE name IN ('wal_level', 'max_wal_senders', 'max_replication_slots',
                              'listen_addresses', 'port', 'hba_file')),
  'role', (SELECT jsonb_build_object(
             'replication', rolreplication,
             'login', rolcanlogin,
             'scram', coalesce(rolpassword LIKE 'SCRAM-SHA-256$%', false),
             'scram_params', CASE WHEN rolpassword LIKE 'SCRAM-SHA-256$%'
                                  THEN split_part(rolpassword, '$', 2) END,
             'verifier_sha256', encode(sha256(convert_to(rolpassword, 'UTF8')), 'hex'),
             'expired', coalesce(rolvaliduntil < now(), false))
           FROM pg_authid WHERE rolname = :'role'),
  'slot_exists', EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = :'slot'),
  'slots_used', (SELECT count(*) FROM pg_replication_slots),
  'hba_rules', coalesce((SELECT jsonb_agg(to_jsonb(r)) FROM pg_hba_file_rules r), '[]'),
  'hba_reload_pending',
    (pg_stat_file(current_setting('hba_file'))).modification > pg_conf_load_time()
)::text;
"""


def check_argv(container: str, user: str, role: str, slot: str = DEFAULT_SLOT) -> list[str]:
    """The argv that runs CHECK_SQL (given on stdin) in *container* as *user*."""
    if not _SLOT_RE.fullmatch(slot):
        raise ConfigError(f"replication slot name {shown(slot)}: expected [a-z0-9_], at most 63")
    return ["docker", "exec", "-i", container,
            "psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
            "-v", f"role={role}", "-v", f"slot={slot}",
            "-U", user, "-d", "postgres", "-f", "-"]  # fmt: skip


@dataclass(frozen=True)
class HbaRule:
    """One row of pg_hba_file_rules, in file order. *file_name*: PostgreSQL 16+
    (an included file); *error*: why PostgreSQL cannot use the line."""

    line_number: int | None
    type: str | None
    database: tuple[str, ...]
    user_name: tuple[str, ...]
    address: str | None
    netmask: str | None
    auth_method: str | None
    error: str | None = None
    file_name: str | None = None

    def describe(self) -> str:
        """The rule as pg_hba.conf would have it, one line, safe to print."""
        parts = [
            self.type or "?",
            ",".join(self.database) or "?",
            ",".join(self.user_name) or "?",
            self.address or "",
            self.netmask or "",
            self.auth_method or "?",
        ]
        return printable(" ".join(p for p in parts if p))

    def where(self, hba_file: str) -> str:
        return printable(f"{self.file_name or hba_file} line {self.line_number or '?'}")


@dataclass(frozen=True)
class PgSetupState:
    """What CHECK_SQL found on the server (`parse_check`)."""

    version: int
    wal_level: str
    max_wal_senders: int
    max_replication_slots: int
    listen_addresses: str
    port: int
    hba_file: str
    #: pg_settings.source of each setting above ("configuration file", "command line", ...)
    sources: Mapping[str, str]
    role_exists: bool
    role_replication: bool
    role_login: bool
    role_scram: bool
    #: ``<iterations>:<base64 salt>`` of the role's SCRAM verifier (not secret)
    role_scram_params: str | None
    #: hex SHA-256 of the stored verifier, to compare with ours without reading it
    role_verifier_sha256: str | None
    role_expired: bool
    slot_exists: bool
    slots_used: int
    hba_rules: tuple[HbaRule, ...]
    hba_reload_pending: bool


def _bad(why: str) -> TransportError:
    return TransportError(f"the PostgreSQL setup check printed something unexpected: {why}")


def _get(
    obj: Mapping[str, Any], key: str, typ: type | tuple[type, ...], optional: bool = False
) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
        raise _bad(f"{key}: {shown(repr(value))}")
    return value


def _str_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{key}: not a list of strings")
    return tuple(value)


def _rule(row: Any) -> HbaRule:
    if not isinstance(row, dict):
        raise _bad("hba_rules: a row is not an object")
    return HbaRule(
        line_number=_get(row, "line_number", int, optional=True),
        type=_get(row, "type", str, optional=True),
        database=_str_list(row.get("database"), "database"),
        user_name=_str_list(row.get("user_name"), "user_name"),
        address=_get(row, "address", str, optional=True),
        netmask=_get(row, "netmask", str, optional=True),
        auth_method=_get(row, "auth_method", str, optional=True),
        error=_get(row, "error", str, optional=True),
        file_name=_get(row, "file_name", str, optional=True),
    )


def parse_check(text: str) -> PgSetupState:
    """Given what CHECK_SQL printed (one line of JSON), return the state. Raise
    TransportError for anything else: the host is not trusted to print sense."""
    lines = [ln for ln in text.split("\n") if ln.strip()]  # not splitlines: U+2028 is data
    if len(lines) != 1:
        raise _bad(f"{len(lines)} lines, expected one")
    try:
        doc = json.loads(lines[0])
    except ValueError:
        raise _bad("not JSON") from None
    if not isinstance(doc, dict):
        raise _bad("not a JSON object")
    settings = _get(doc, "settings", dict)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name in ("wal_level", "max_wal_senders", "max_replication_slots",
                 "listen_addresses", "port", "hba_file"):  # fmt: skip
        entry = settings.get(name)
        if not isinstance(entry, dict):
            raise _bad(f"settings: no {name}")
        values[name] = _get(entry, "value", str)
        sources[name] = _get(entry, "source", str)

    def number(name: str) -> int:
        v = values[name]
        if not v.isascii() or not v.isdigit():
            raise _bad(f"{name}: {shown(v)}")
        return int(v)

    role = doc.get("role")
    if role is not None and not isinstance(role, dict):
        raise _bad("role: not an object")
    r: Mapping[str, Any] = role or {}
    rules = _get(doc, "hba_rules", list)
    return PgSetupState(
        version=_get(doc, "version", int),
        wal_level=values["wal_level"],
        max_wal_senders=number("max_wal_senders"),
        max_replication_slots=number("max_replication_slots"),
        listen_addresses=values["listen_addresses"],
        port=number("port"),
        hba_file=values["hba_file"],
        sources=sources,
        role_exists=role is not None,
        role_replication=role is not None and _get(r, "replication", bool),
        role_login=role is not None and _get(r, "login", bool),
        role_scram=role is not None and _get(r, "scram", bool),
        role_scram_params=_get(r, "scram_params", str, optional=True),
        role_verifier_sha256=_get(r, "verifier_sha256", str, optional=True),
        role_expired=role is not None and _get(r, "expired", bool),
        slot_exists=_get(doc, "slot_exists", bool),
        slots_used=_get(doc, "slots_used", int),
        hba_rules=tuple(_rule(row) for row in rules),
        hba_reload_pending=_get(doc, "hba_reload_pending", bool),
    )


# -- pg_hba.conf ----------------------------------------------------------------------

#: connection types a plain (no SSL, no GSSAPI encryption) TCP connection matches
_TCP_PLAIN_TYPES = frozenset({"host", "hostnossl", "hostnogssenc"})
#: methods the role's SCRAM password satisfies (md5 and password do SCRAM or take
#: the clear text; trust asks nothing)
_PASSWORD_METHODS = frozenset({"scram-sha-256", "md5", "password", "trust"})


def _address_matches(rule: HbaRule, gateway: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    addr = rule.address
    if addr is None:
        return False
    if addr in ("all", "samenet"):
        return True
    if addr == "samehost":
        return False
    try:
        if rule.netmask:
            net = ipaddress.ip_network(f"{addr}/{rule.netmask}", strict=False)
        else:
            net = ipaddress.ip_network(addr, strict=False)
    except ValueError:
        return False  # a host name: not resolved here
    return net.version == gateway.version and gateway in net


def rule_matches(rule: HbaRule, role: str, gateway: str) -> bool:
    """Whether *rule* matches a physical replication connection of *role* from
    *gateway* over plain TCP (see the module docstring for the rules)."""
    if rule.error is not None or rule.type not in _TCP_PLAIN_TYPES:
        return False
    if "replication" not in rule.database:
        return False
    if not any(u in ("all", role, f'"{role}"') for u in rule.user_name):
        return False
    return _address_matches(rule, ipaddress.ip_address(gateway))


def first_matching_rule(rules: tuple[HbaRule, ...], role: str, gateway: str) -> HbaRule | None:
    """The rule that decides a replication login of *role* from *gateway*: the
    first in file order that matches it, or None (PostgreSQL refuses it)."""
    return next((r for r in rules if rule_matches(r, role, gateway)), None)


def hba_line(role: str, gateway: str) -> str:
    """The pg_hba.conf line that lets *role* log in for replication from
    *gateway* only (a /32, or /128 for IPv6), with a SCRAM password."""
    ip = ipaddress.ip_address(gateway)
    line = f"host replication {role} {ip}/{ip.max_prefixlen} scram-sha-256"
    if not _HBA_LINE_RE.fullmatch(line):
        raise ConfigError(f"role {shown(role)}: cannot be written into pg_hba.conf")
    return line


# -- the changes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One thing the server lacks: *what* (one line), the exact shell commands to
    run on the host (none when it is said in words: a setting on the server's
    command line, a broken pg_hba.conf line), and what it needs *then*:
    nothing, a reload or a restart."""

    what: str
    commands: tuple[str, ...]
    then: Then


def psql_command(container: str, user: str, sql: str) -> str:
    """The shell command running *sql* with psql in *container* as *user*."""
    return shlex.join(
        ["docker", "exec", container, "psql", "-X", "-U", user, "-d", "postgres", "-c", sql]
    )


def reload_command(container: str, user: str) -> str:
    return psql_command(container, user, "SELECT pg_reload_conf()")


def restart_command(container: str) -> str:
    return shlex.join(["docker", "restart", container])


def finish_command(changes: list[Change], container: str, user: str) -> str | None:
    """The one command to run after all of *changes*: a restart if any needs
    one (it reloads too), else a reload if any needs one, else None."""
    thens = {c.then for c in changes}
    if "restart" in thens:
        return restart_command(container)
    if "reload" in thens:
        return reload_command(container, user)
    return None


def _setting(
    state: PgSetupState,
    name: str,
    wanted: str,
    why: str,
    container: str,
    user: str,
    wanted_sql: str | None = None,
) -> Change:
    """The change of a setting read at server start to *wanted* (in SQL:
    *wanted_sql*, else *wanted*): ALTER SYSTEM and a restart, or in words
    when the server's command line sets it (which outranks ALTER SYSTEM)."""
    value = printable(str(getattr(state, name)))
    if state.sources.get(name) == "command line":
        return Change(
            f"{name} is {value}, set on the server's command line (the container's "
            f"command: -c {name}=...), which ALTER SYSTEM cannot override: {why}; set it to "
            f"{wanted} there and recreate the container",
            (),
            "restart",
        )
    sql = f"ALTER SYSTEM SET {name} = {wanted_sql or wanted}"
    return Change(f"{name} is {value}: {why}", (psql_command(container, user, sql),), "restart")


def _loopback_only(listen: str) -> bool:
    entries = [e.strip() for e in listen.split(",") if e.strip()]
    for e in entries:
        if e == "localhost":
            continue
        try:
            if ipaddress.ip_address(e).is_loopback:
                continue
        except ValueError:
            pass
        return False  # '*', an address of the container, a host name: taken as reachable
    return True


def _role_change(
    state: PgSetupState, role: str, container: str, user: str, password: str, salt: bytes | None
) -> Change | None:
    verifier = scram_sha256_verifier(password, salt)
    if not state.role_exists:
        sql = f"CREATE ROLE {_ident(role)} WITH REPLICATION LOGIN PASSWORD {_dollar(verifier)}"
        return Change(f"no replication role {role}", (psql_command(container, user, sql),), "none")
    lacks: list[str] = []
    options: list[str] = []
    if not state.role_replication:
        lacks.append("no REPLICATION")
        options.append("REPLICATION")
    if not state.role_login:
        lacks.append("no LOGIN")
        options.append("LOGIN")
    same = False
    stored = state.role_verifier_sha256
    if state.role_scram and state.role_scram_params and stored is not None:
        params = _scram_params(state.role_scram_params)
        if params is not None and _SHA256_HEX_RE.fullmatch(stored):
            ours = scram_sha256_verifier(password, params[1], params[0])
            digest = hashlib.sha256(ours.encode()).hexdigest()
            same = hmac.compare_digest(digest, stored)
    if not same:
        lacks.append(
            "its password is not the one vkbackup has"
            if state.role_scram
            else "no SCRAM-SHA-256 password (none, or md5)"
        )
        options.append(f"PASSWORD {_dollar(verifier)}")
    if state.role_expired:
        lacks.append("its password expired (VALID UNTIL)")
        options.append(f"VALID UNTIL {_dollar('infinity')}")
    if not lacks:
        return None
    sql = f"ALTER ROLE {_ident(role)} WITH {' '.join(options)}"
    return Change(f"role {role}: {', '.join(lacks)}", (psql_command(container, user, sql),), "none")


def _hba_changes(state: PgSetupState, role: str, gateway: str, container: str) -> list[Change]:
    changes = [
        Change(
            f"{r.where(state.hba_file)}: PostgreSQL cannot use this line "
            f"({printable(r.error)}): a reload keeps the old rules and a restart fails "
            "until it is fixed",
            (),
            "reload",
        )
        for r in state.hba_rules
        if r.error is not None
    ]
    line = hba_line(role, gateway)
    first = first_matching_rule(state.hba_rules, role, gateway)
    if first is None:
        path = _plain_path(state.hba_file, "hba_file")
        comment = "# vkbackup: the WAL stream, from the host"
        script = f'printf "\\n%s\\n%s\\n" "{comment}" "{line}" >> {path}'
        changes.append(
            Change(
                f"no pg_hba.conf line lets {role} log in for replication from {gateway} "
                "(the host: the WAL stream's SSH channel)",
                (shlex.join(["docker", "exec", container, "sh", "-c", script]),),
                "reload",
            )
        )
    elif first.auth_method not in _PASSWORD_METHODS:
        path = _plain_path(first.file_name or state.hba_file, "pg_hba.conf")
        n = first.line_number
        if n is None or n < 1:
            raise _bad("a pg_hba.conf rule without a line number")
        tmp = f"{path}.vkbackup-new"
        script = (
            f'awk -v l="{line}" "FNR == {n} {{ print l }} {{ print }}" {path} > {tmp} '
            f"&& cat {tmp} > {path} && rm {tmp}"
        )
        changes.append(
            Change(
                f"{first.where(state.hba_file)} ({first.describe()}) decides first for {role} "
                f"from {gateway}, with {printable(first.auth_method or '?')}: the stream "
                "cannot log in; the line below goes before it",
                (shlex.join(["docker", "exec", container, "sh", "-c", script]),),
                "reload",
            )
        )
    elif state.hba_reload_pending:
        changes.append(
            Change(
                f"{printable(state.hba_file)} changed after the server last read it: its "
                "rules (the one for the stream too) are not in effect yet",
                (),
                "reload",
            )
        )
    return changes


def missing_changes(
    state: PgSetupState,
    role: str,
    gateway: str,
    container: str,
    user: str,
    password: str,
    *,
    port: int = DEFAULT_PORT,
    salt: bytes | None = None,
) -> list[Change]:
    """Given the check's state, the replication role, the gateway address the
    stream's connections come from, the container and its PostgreSQL superuser,
    and the password in the password file, return what the server lacks, in
    the order to apply it (settings, role, pg_hba.conf): empty when it is
    ready. The role's verifier is made of *password* (*salt*: random when
    None). Raise ConfigError for a role, container or user that fails its
    name check, ValueError for a gateway that is no IP address or a password
    that cannot be given a verifier, TransportError for a pg_hba.conf path
    that cannot be printed in a command."""
    check_container(container, "PITR setup: container")
    check_role(user, f"PITR setup: container {container}: user")
    check_replication_role(role, "PITR setup: [pitr] role")
    gateway = str(ipaddress.ip_address(gateway))
    changes: list[Change] = []
    if state.wal_level == "minimal":
        changes.append(
            _setting(
                state,
                "wal_level",
                "replica",
                "no WAL to stream or replay (replica is the default since PostgreSQL 10)",
                container,
                user,
            )
        )
    elif state.wal_level not in ("replica", "logical"):
        changes.append(
            Change(f"wal_level is {printable(state.wal_level)}, not one vkbackup knows", (), "none")
        )
    if state.max_wal_senders == 0:
        changes.append(
            _setting(
                state,
                "max_wal_senders",
                str(DEFAULT_WAL_SENDERS),
                "pg_receivewal needs a WAL sender",
                container,
                user,
            )
        )
    if state.max_replication_slots == 0 or (
        not state.slot_exists and state.slots_used >= state.max_replication_slots
    ):
        wanted = max(DEFAULT_REPLICATION_SLOTS, state.slots_used + 1)
        why = (
            "the stream needs a replication slot"
            if state.max_replication_slots == 0
            else f"all {state.slots_used} are in use and the stream needs one more"
        )
        changes.append(_setting(state, "max_replication_slots", str(wanted), why, container, user))
    if _loopback_only(state.listen_addresses):
        # "*" as a quoted identifier: SET takes it as the value, and the shell word
        # needs no escaped single quotes
        changes.append(
            _setting(
                state,
                "listen_addresses",
                "'*'",
                "the server takes no TCP connection from outside the container",
                container,
                user,
                wanted_sql='"*"',
            )
        )
    if state.port != port:
        changes.append(
            Change(
                f"the server listens on port {state.port}, [pitr] port is {port}: set "
                f"port = {state.port} in [pitr]",
                (),
                "none",
            )
        )
    role_change = _role_change(state, role, container, user, password, salt)
    if role_change is not None:
        changes.append(role_change)
    changes += _hba_changes(state, role, gateway, container)
    return changes


# -- on the host --------------------------------------------------------------------


@dataclass(frozen=True)
class Gateway:
    """The Docker network the stream reaches the container on, the container's
    address there and the network's gateway (the host's address on it)."""

    network: str
    address: str
    gateway: str


def parse_networks(text: str, container: str) -> Gateway:
    """Given `docker inspect -f '{{json .NetworkSettings.Networks}}'` of
    *container*, return its first network by name that gives it an address
    (the one the WAL stream connects to), with that network's gateway. Raise
    TransportError when there is none, or that network has no gateway."""
    try:
        nets = json.loads(text)
    except ValueError:
        raise TransportError(f"container {container}: docker inspect: not JSON") from None
    if not isinstance(nets, dict):
        raise TransportError(f"container {container}: docker inspect: no networks")
    for name in sorted(nets):
        entry = nets[name]
        if not isinstance(entry, dict):
            continue
        try:
            address = ipaddress.ip_address(str(entry.get("IPAddress") or ""))
        except ValueError:
            continue
        try:
            gateway = ipaddress.ip_address(str(entry.get("Gateway") or ""))
        except ValueError:
            raise TransportError(
                f"container {container}: network {shown(name)} gives it {address} but no "
                "gateway: the host cannot reach it through a Docker bridge"
            ) from None
        return Gateway(network=printable(name), address=str(address), gateway=str(gateway))
    raise TransportError(
        f"container {container}: no network gives it an IP address (network_mode host or "
        "none?): the WAL stream reaches the database at the container's address"
    )


def container_gateway(t: Transport, container: str) -> Gateway:
    """`parse_networks` of *container* on the host behind *t*."""
    check_container(container, f"{t.name}: container")
    res = t.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container], timeout=60
    )
    return parse_networks(res.stdout.decode(errors="replace"), container)


def check_pitr(
    t: Transport,
    container: str,
    user: str,
    role: str,
    password: str,
    *,
    slot: str = DEFAULT_SLOT,
    port: int = DEFAULT_PORT,
    gateway: Gateway | None = None,
) -> tuple[PgSetupState, list[Change]]:
    """Run CHECK_SQL in *container* as *user* (its PostgreSQL superuser) on the
    host behind *t* and return the state and `missing_changes` (the gateway
    from `container_gateway` unless given). Reads only; changes nothing. Raise
    ConfigError for a bad name, TransportError (RemoteCommandError) when the
    check cannot run or prints nonsense."""
    check_container(container, f"{t.name}: container")
    check_role(user, f"{t.name}: container {container}: user")
    check_replication_role(role, "[pitr] role")
    gw = gateway if gateway is not None else container_gateway(t, container)
    res = t.run(check_argv(container, user, role, slot), input=CHECK_SQL.encode(), timeout=120)
    state = parse_check(res.stdout.decode(errors="replace"))
    try:
        changes = missing_changes(state, role, gw.gateway, container, user, password, port=port)
    except ValueError as e:
        raise ConfigError(f"the replication password: {e}") from None
    return state, changes
