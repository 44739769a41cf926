"""Turn a TOML file into a validated `Config`. Pure except for reading the file.

Every error is a ConfigError naming the file, the key path
(``hosts.prod.sources[2].container``) and what is wrong. Unknown keys are
errors, with the closest known key suggested.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from vkbackup.config.model import (
    QUIESCE_MODES,
    SOURCE_TYPES,
    CheckConfig,
    Config,
    CopyConfig,
    DrillConfig,
    EncryptionConfig,
    HooksConfig,
    HostConfig,
    MonitoringConfig,
    ObjectLock,
    PitrConfig,
    RetentionConfig,
    SigningConfig,
    SnapshotConfig,
    SourceConfig,
    StorageConfig,
    TransferConfig,
)
from vkbackup.durations import format_duration, parse_duration
from vkbackup.errors import ConfigError
from vkbackup.names import (
    check_container,
    check_database,
    check_image,
    check_role,
    check_volume,
)

T = TypeVar("T")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")  # \Z: no trailing newline
# a systemd unit: "caddy" or "caddy.service", "getty@tty1.service"
UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,199}\Z")
DEFAULT_LOCAL_PATH = Path("/var/backups/vkbackup")


SYSTEM_CONFIG = Path("/etc/vkbackup/vkbackup.toml")
#: Test-only seam: a path that stands in for SYSTEM_CONFIG, so a test of "no config
#: file found" can run on a machine that has /etc/vkbackup/vkbackup.toml. Not for
#: operators (they name a config with --config or $VKBACKUP_CONFIG).
SYSTEM_CONFIG_TEST_ENV = "VKBACKUP_TEST_SYSTEM_CONFIG"


@dataclass(frozen=True)
class ConfigLookup:
    """Where the config lookup looked, in order, and what it chose.

    *steps* holds (place, path or None, outcome) for each place tried, up to the
    chosen one: place is "--config", "$VKBACKUP_CONFIG", "./vkbackup.toml",
    "~/.config/vkbackup/config.toml" or "/etc/vkbackup/vkbackup.toml"; outcome
    "not given", "not set", "no such file" or "used". *path* is the file to
    load (None: none found), *found_by* the place that named it."""

    path: Path | None
    found_by: str | None
    steps: tuple[tuple[str, Path | None, str], ...]

    def lines(self) -> list[str]:
        """One line per place tried: "--config: not given", "./vkbackup.toml:
        /srv/vkbackup.toml: no such file", ..."""
        out = []
        for place, path, outcome in self.steps:
            shown = f"{path}: " if path is not None and str(path) != place else ""
            out.append(f"{place}: {shown}{outcome}")
        return out

    def describe(self) -> str:
        """The lines on one line, separated by "; "."""
        return "; ".join(self.lines())


def lookup_config_file(
    explicit: str | None,
    env: Mapping[str, str],
    cwd: Path,
    home: Path,
    system: Path | None = None,
) -> ConfigLookup:
    """Follow the lookup order and return where it looked and what it chose:
    *explicit* (--config PATH), else $VKBACKUP_CONFIG in *env*, else
    ./vkbackup.toml in *cwd*, else ~/.config/vkbackup/config.toml under *home*,
    else *system* (default /etc/vkbackup/vkbackup.toml, or the path in
    $VKBACKUP_TEST_SYSTEM_CONFIG: a test-only seam). The first two are chosen
    whether or not they exist (loading then says the file is missing); the
    others only if they are files."""
    steps: list[tuple[str, Path | None, str]] = []
    if explicit:
        path = Path(explicit).expanduser()
        return ConfigLookup(path, "--config", (("--config", path, "used"),))
    steps.append(("--config", None, "not given"))
    if env.get("VKBACKUP_CONFIG"):
        path = Path(env["VKBACKUP_CONFIG"]).expanduser()
        steps.append(("$VKBACKUP_CONFIG", path, "used"))
        return ConfigLookup(path, "$VKBACKUP_CONFIG", tuple(steps))
    steps.append(("$VKBACKUP_CONFIG", None, "not set"))
    if system is None:
        seam = env.get(SYSTEM_CONFIG_TEST_ENV)
        system = Path(seam) if seam else SYSTEM_CONFIG
    for place, candidate in (
        ("./vkbackup.toml", cwd / "vkbackup.toml"),
        ("~/.config/vkbackup/config.toml", home / ".config" / "vkbackup" / "config.toml"),
        (str(SYSTEM_CONFIG), system),
    ):
        if candidate.is_file():
            steps.append((place, candidate, "used"))
            return ConfigLookup(candidate, place, tuple(steps))
        steps.append((place, candidate, "no such file"))
    return ConfigLookup(None, None, tuple(steps))


def find_config_file(
    explicit: str | None,
    env: Mapping[str, str],
    cwd: Path,
    home: Path,
    system: Path | None = None,
) -> Path | None:
    """Return the config file to use (see lookup_config_file), or None when none
    is found."""
    return lookup_config_file(explicit, env, cwd, home, system).path


class _Table:
    """A TOML table being validated: tracks its key path and which keys were used."""

    def __init__(self, data: object, where: str, source: str) -> None:
        self.where = where
        self.source = source
        if not isinstance(data, dict):
            raise self.error(f"must be a table, got {_kind(data)}")
        self.data: dict[str, object] = data
        self.used: set[str] = set()

    def error(self, message: str, key: str | None = None) -> ConfigError:
        path = self.where if key is None else (f"{self.where}.{key}" if self.where else key)
        return ConfigError(f"{self.source}: {path or '(top level)'}: {message}")

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, typ: type[T] | tuple[type, ...], kind: str) -> T | None:
        self.used.add(key)
        if key not in self.data:
            return None
        value = self.data[key]
        # bool is a subclass of int: never accept it for an int key
        if isinstance(value, bool) and typ is int:
            raise self.error(f"must be {kind}, got {_kind(value)}", key)
        if not isinstance(value, typ):
            raise self.error(f"must be {kind}, got {_kind(value)}", key)
        return value  # type: ignore[return-value]

    def get_str(
        self, key: str, default: str | None = None, *, required: bool = False
    ) -> str | None:
        v = self._get(key, str, "a string")
        if v is None:
            if required:
                raise self.error("is required", key)
            return default
        if not v.strip():
            raise self.error("must not be empty", key)
        return v

    def req_str(self, key: str) -> str:
        v = self.get_str(key, required=True)
        assert v is not None
        return v

    def get_int(self, key: str, default: int, *, lo: int = 0, hi: int = 2**31) -> int:
        v = self._get(key, int, "an integer")
        if v is None:
            return default
        if not lo <= v <= hi:
            raise self.error(f"must be between {lo} and {hi}, got {v}", key)
        return v

    def get_float(self, key: str, default: float, *, lo: float = 0.0, hi: float = 1e9) -> float:
        v = self._get(key, (int, float), "a number")
        if v is None:
            return default
        if isinstance(v, bool):
            raise self.error("must be a number, got a boolean", key)
        f = float(v)
        if not lo <= f <= hi:
            raise self.error(f"must be between {lo} and {hi}, got {f}", key)
        return f

    def get_bool(self, key: str, default: bool) -> bool:
        v = self._get(key, bool, "true or false")
        return default if v is None else v

    def str_list(self, key: str, *, required: bool = False) -> tuple[str, ...] | None:
        v = self._get(key, list, "a list of strings")
        if v is None:
            if required:
                raise self.error("is required", key)
            return None
        out: list[str] = []
        for i, item in enumerate(v):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"[{i}] must be a non-empty string, got {_kind(item)}", key)
            out.append(item)
        return tuple(out)

    def table(self, key: str) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            return None
        return _Table(self.data[key], self.path(key), self.source)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        v = self.get_str(key, default)
        assert v is not None
        if v not in choices:
            raise self.error(f"must be one of {', '.join(map(repr, choices))}, got {v!r}", key)
        return v

    def finish(self, allowed_hint: Callable[[], list[str]] | None = None) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = sorted(self.used)
            key = unknown[0]
            suggestion = _closest(key, known)
            extra = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise self.error(
                f"unknown key{extra}; known keys here: {', '.join(known)}",
                key,
            )


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _closest(word: str, candidates: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def _path(value: str) -> Path:
    return Path(value).expanduser()


def _storage(t: _Table | None) -> StorageConfig:
    if t is None:
        return StorageConfig()
    typ = t.choice("type", ("local", "s3"), "local")
    path = t.get_str("path")
    bucket = t.get_str("bucket")
    prefix = t.get_str("prefix", "") or ""
    if prefix.startswith("/") or ".." in prefix.split("/"):
        raise t.error("must be a relative key prefix without '..'", "prefix")
    endpoint_url = t.get_str("endpoint_url")
    if endpoint_url and not re.match(r"^https?://", endpoint_url):
        raise t.error(f"must start with http:// or https://, got {endpoint_url!r}", "endpoint_url")
    region = t.get_str("region")
    profile = t.get_str("profile")
    style = t.choice("addressing_style", ("auto", "path", "virtual"), "auto")
    akid = t.get_str("access_key_id")
    secret = t.get_str("secret_access_key")
    if (akid is None) != (secret is None):
        raise t.error("access_key_id and secret_access_key go together", "access_key_id")
    lock: ObjectLock | None = None
    lt = t.table("object_lock")
    if lt is not None:
        mode = lt.choice("mode", ("governance", "compliance"), "governance")
        days = lt.get_int("days", 0, lo=1, hi=36500)
        if days == 0:
            raise lt.error("is required", "days")
        lt.finish()
        lock = ObjectLock(mode=mode, days=days)
    part = t.get_int("part_size_mib", 0, lo=0, hi=5120)
    if part and part < 5:
        raise t.error("must be at least 5 (S3's minimum part size)", "part_size_mib")
    attempts = t.get_int("max_attempts", 6, lo=1, hi=50)
    t.finish()
    if typ == "s3":
        if not bucket:
            raise t.error("is required when type = 's3'", "bucket")
        if path is not None:
            raise t.error("is only for type = 'local'", "path")
    else:
        if bucket is not None:
            raise t.error("is only for type = 's3' (did you forget type = 's3'?)", "bucket")
        for k, v in (("endpoint_url", endpoint_url), ("object_lock", lock)):
            if v is not None:
                raise t.error("is only for type = 's3'", k)
    return StorageConfig(
        type=typ,
        path=_path(path) if path else DEFAULT_LOCAL_PATH,
        bucket=bucket,
        prefix=prefix.strip("/"),
        endpoint_url=endpoint_url,
        region=region,
        profile=profile,
        addressing_style=style,
        access_key_id=akid,
        secret_access_key=secret,
        object_lock=lock,
        part_size_mib=part or None,
        max_attempts=attempts,
    )


def _encryption(t: _Table | None) -> EncryptionConfig:
    if t is None:
        return EncryptionConfig()
    recips = t.str_list("recipients") or ()
    for i, r in enumerate(recips):
        if not (r.startswith("age1") and len(r) > 10):
            raise t.error(
                f"[{i}] must be an age public key (age1...), got {r[:12]!r}...", "recipients"
            )
    identity = t.get_str("identity")
    if "AGE-SECRET-KEY" in (identity or "").upper():
        raise t.error("must be a path to an identity file, not the key itself", "identity")
    t.finish()
    return EncryptionConfig(recipients=recips, identity=_path(identity) if identity else None)


def _signing(t: _Table | None) -> SigningConfig:
    if t is None:
        return SigningConfig()
    from vkbackup.signing import parse_public_line

    trusted = t.str_list("trusted") or ()
    for i, line in enumerate(trusted):
        try:
            parse_public_line(line, t.path(f"trusted[{i}]"))
        except ConfigError as e:
            raise ConfigError(f"{t.source}: {e}") from None
    key = t.get_str("key")
    if key and "PRIVATE KEY" in key:
        raise t.error("must be a path to the private key file, not the key itself", "key")
    t.finish()
    return SigningConfig(key=_path(key) if key else None, trusted=trusted)


def _source(t: _Table) -> SourceConfig:
    typ = t.choice("type", SOURCE_TYPES, "")
    name = t.req_str("name")
    if not NAME_RE.match(name):
        raise t.error(
            f"must be letters, digits, '.', '_' or '-' (at most 63), got {name!r}", "name"
        )
    kw: dict[str, object] = {}

    def at(key: str) -> str:  # where a name came from, for the check_* of vkbackup.names
        return f"{t.source}: {t.path(key)}"

    if typ == "postgres":
        kw["container"] = check_container(t.req_str("container"), at("container"))
        kw["database"] = check_database(t.req_str("database"), at("database"))
        kw["user"] = check_role(t.get_str("user", "postgres") or "postgres", at("user"))
        kw["compress_level"] = t.get_int("compress_level", 1, lo=0, hi=9)
        kw["globals"] = t.get_bool("globals", True)
        kw["pitr"] = t.get_bool("pitr", False)
    elif typ == "files":
        paths = t.str_list("paths", required=True) or ()
        if not paths:
            raise t.error("must list at least one path", "paths")
        for i, p in enumerate(paths):
            if not p.startswith("/"):
                raise t.error(f"[{i}] must be an absolute path, got {p!r}", "paths")
        kw["paths"] = paths
        kw["secret"] = t.get_bool("secret", False)
    elif typ == "docker-volume":
        kw["volume"] = check_volume(t.req_str("volume"), at("volume"))
        stop = t.str_list("stop")
        for i, c in enumerate(stop or ()):
            check_container(c, f"{at('stop')}[{i}]")
        kw["stop"] = stop
        kw["quiesce"] = t.choice("quiesce", QUIESCE_MODES, "pause")
        if "stop_timeout" in t.data:  # else None: each container's own stop timeout
            kw["stop_timeout"] = t.get_int("stop_timeout", 0, lo=0, hi=3600)
        if "stop_timeout" in t.data and kw["quiesce"] != "stop":
            raise t.error(
                f'only applies with quiesce = "stop" (here {kw["quiesce"]!r})', "stop_timeout"
            )
        if stop and kw["quiesce"] == "none":
            raise t.error('lists containers to hold still, but quiesce = "none" holds none', "stop")
    elif typ == "docker-image":
        images = t.str_list("images", required=True) or ()
        if not images:
            raise t.error("must list at least one image", "images")
        for i, ref in enumerate(images):
            check_image(ref, f"{at('images')}[{i}]")
        kw["images"] = images
    elif typ == "host":
        for key in ("paths", "data_dirs"):
            values = t.str_list(key)
            if values is None:
                continue
            for i, p in enumerate(values):
                if not p.startswith("/") or ".." in p.split("/"):
                    raise t.error(f"[{i}] must be an absolute path without '..', got {p!r}", key)
            kw[key] = values
        restart = t.str_list("restart")
        if restart is not None:
            for i, u in enumerate(restart):
                if not UNIT_RE.match(u):
                    raise t.error(f"[{i}] must be a systemd unit name, got {u!r}", "restart")
            kw["restart"] = restart
    for key in ("quiesce", "stop_timeout"):
        if typ != "docker-volume" and key in t.data:
            raise t.error(f"only applies to docker-volume sources (this one is {typ!r})", key)
    if typ != "postgres" and "pitr" in t.data:
        raise t.error(f"only applies to postgres sources (this one is {typ!r})", "pitr")
    t.finish()
    return SourceConfig(type=typ, name=name, where=t.where, **kw)  # type: ignore[arg-type]


HOOK_LISTS = ("before_snapshot", "after_snapshot", "before_restore", "after_restore", "on_failure")
_HOOK_TIMEOUT_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")


def _hooks(t: _Table | None) -> HooksConfig:
    """[hosts.NAME.hooks]: lists of shell commands, and `timeout` (seconds, or a
    string such as "90s", "10m", "1h30m") for each command."""
    if t is None:
        return HooksConfig()
    lists: dict[str, tuple[str, ...]] = {}
    for key in HOOK_LISTS:
        commands = t.str_list(key) or ()
        for i, cmd in enumerate(commands):
            if "\x00" in cmd:
                raise t.error(f"[{i}] must not contain a NUL character", key)
        lists[key] = commands
    t.used.add("timeout")
    raw = t.data.get("timeout", 600)
    if isinstance(raw, str):
        m = _HOOK_TIMEOUT_RE.match(raw.strip())
        if not raw.strip() or m is None:
            raise t.error(
                f'must be seconds or a duration like "90s", "10m", "1h", got {raw!r}', "timeout"
            )
        h, mi, sec = (int(g or 0) for g in m.groups())
        seconds = float(h * 3600 + mi * 60 + sec)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    else:
        raise t.error(f"must be seconds or a duration string, got {_kind(raw)}", "timeout")
    if not 1 <= seconds <= 86400:
        raise t.error(f"must be between 1 second and 24 hours, got {seconds:g}s", "timeout")
    t.finish()
    return HooksConfig(timeout=seconds, **lists)


def _host(name: str, t: _Table) -> HostConfig:
    if not NAME_RE.match(name):
        raise t.error(f"host name must be letters, digits, '.', '_' or '-', got {name!r}")
    address = t.req_str("address")
    port = t.get_int("port", 22, lo=1, hi=65535)
    user = t.get_str("user", "root") or "root"
    key_file = t.get_str("key_file")
    known_hosts = t.get_str("known_hosts", "~/.ssh/known_hosts") or "~/.ssh/known_hosts"
    pass_env = t.get_str("key_passphrase_env")
    timeout = t.get_float("connect_timeout", 15.0, lo=1.0, hi=600.0)
    t.used.add("sources")
    raw_sources = t.data.get("sources", [])
    if not isinstance(raw_sources, list):
        raise t.error(f"must be an array of tables ([[{t.where}.sources]])", "sources")
    sources = tuple(
        _source(_Table(s, f"{t.where}.sources[{i}]", t.source)) for i, s in enumerate(raw_sources)
    )
    seen: set[str] = set()
    for s in sources:
        if s.name in seen:
            raise ConfigError(f"{t.source}: {s.where}.name: duplicate source name {s.name!r}")
        seen.add(s.name)
    hosts = [s for s in sources if s.type == "host"]
    if len(hosts) > 1:
        raise ConfigError(
            f"{t.source}: {hosts[1].where}.type: only one source of type 'host' per host "
            f"(the first is {hosts[0].where})"
        )
    streamed = [s for s in sources if s.pitr]
    if len(streamed) > 1:
        raise ConfigError(
            f"{t.source}: {streamed[1].where}.pitr: only one postgres source per host may "
            f"have pitr = true (the first is {streamed[0].where}): a host's WAL is stored "
            "under wal/<host>/, one cluster's"
        )
    hooks = _hooks(t.table("hooks"))
    t.finish()
    return HostConfig(
        name=name,
        address=address,
        port=port,
        user=user,
        key_file=_path(key_file) if key_file else None,
        known_hosts=_path(known_hosts),
        key_passphrase_env=pass_env,
        connect_timeout=timeout,
        sources=sources,
        hooks=hooks,
    )


def _retention(t: _Table | None) -> RetentionConfig:
    if t is None:
        return RetentionConfig()
    r = RetentionConfig(
        keep_last=t.get_int("keep_last", 0, hi=100000),
        keep_hourly=t.get_int("keep_hourly", 0, hi=100000),
        keep_daily=t.get_int("keep_daily", 0, hi=100000),
        keep_weekly=t.get_int("keep_weekly", 0, hi=100000),
        keep_monthly=t.get_int("keep_monthly", 0, hi=100000),
        keep_yearly=t.get_int("keep_yearly", 0, hi=100000),
    )
    t.finish()
    return r


def _snapshot(t: _Table | None) -> SnapshotConfig:
    if t is None:
        return SnapshotConfig()
    s = SnapshotConfig(
        parallel=t.get_int("parallel", 2, lo=1, hi=32),
        full_every_days=t.get_int("full_every_days", 7, lo=0, hi=3650),
        max_chain=t.get_int("max_chain", 6, lo=0, hi=1000),
        compression=t.choice("compression", ("auto", "zstd", "gzip", "none"), "auto"),
        copy_after=t.get_bool("copy_after", False),
    )
    t.finish()
    return s


#: the largest limit [transfer] takes, in KiB/s (100 GiB/s)
MAX_LIMIT_KIB = 100 * 1024 * 1024


def _transfer(t: _Table | None) -> TransferConfig:
    if t is None:
        return TransferConfig()
    c = TransferConfig(
        limit_upload_kib=t.get_int("limit_upload_kib", 0, lo=0, hi=MAX_LIMIT_KIB),
        limit_download_kib=t.get_int("limit_download_kib", 0, lo=0, hi=MAX_LIMIT_KIB),
    )
    t.finish()
    return c


def _monitoring(t: _Table | None) -> MonitoringConfig:
    if t is None:
        return MonitoringConfig()
    hc = t.get_str("healthchecks_url")
    wh = t.get_str("webhook_url")
    for key, url in (("healthchecks_url", hc), ("webhook_url", wh)):
        if url and not re.match(r"^https?://", url):
            raise t.error(f"must start with http:// or https://, got {url!r}", key)
    tf = t.get_str("textfile")
    t.finish()
    return MonitoringConfig(healthchecks_url=hc, webhook_url=wh, textfile=_path(tf) if tf else None)


def _drill(t: _Table | None) -> DrillConfig:
    if t is None:
        return DrillConfig()
    d = DrillConfig(
        max_age_days=t.get_int("max_age_days", 100, lo=1, hi=3650),
        health_timeout=t.get_float("health_timeout", 120.0, lo=1.0, hi=3600.0),
    )
    t.finish()
    return d


def _check(t: _Table | None) -> CheckConfig:
    if t is None:
        return CheckConfig()

    def duration(key: str) -> timedelta | None:
        t.used.add(key)
        if key not in t.data:
            return None
        return parse_duration(t.data[key], f"{t.source}: {t.path(key)}", ConfigError)

    d = CheckConfig()
    c = CheckConfig(
        max_age=duration("max_age") or d.max_age,
        max_verify_age=duration("max_verify_age") or d.max_verify_age,
        max_drill_age=duration("max_drill_age"),
    )
    t.finish()
    return c


#: a replication slot name, as PostgreSQL requires it: lowercase letters, digits, '_'
PITR_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}\Z")
#: the replication role: vkbackup's narrower rule, a letter or '_' first
PITR_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
#: a duration of zero, which parse_duration refuses but [pitr] skew allows
_ZERO_DURATION_RE = re.compile(r"(?:0{1,9}[smhdw])+")


def _pitr(t: _Table | None) -> PitrConfig:
    """[pitr]: see PitrConfig. Durations are strings as in [check] ("60s",
    "2m"); skew may also be zero ("0s"). password_file is kept as written (~
    expanded): PitrConfig.password_path resolves it against the config file's
    directory, which parse_config does not know."""
    if t is None:
        return PitrConfig()
    d = PitrConfig()

    def duration(key: str, default: timedelta, lo: timedelta, hi: timedelta) -> timedelta:
        t.used.add(key)
        if key not in t.data:
            return default
        raw = t.data[key]
        if (
            lo == timedelta(0)
            and isinstance(raw, str)
            and _ZERO_DURATION_RE.fullmatch(re.sub(r"\s+", "", raw).lower())
        ):
            return timedelta(0)
        value = parse_duration(raw, f"{t.source}: {t.path(key)}", ConfigError)
        if not lo <= value <= hi:
            raise t.error(
                f"must be between {format_duration(lo)} and {format_duration(hi)}, got {raw!r}",
                key,
            )
        return value

    max_lag = duration("max_lag", d.max_lag, timedelta(seconds=1), timedelta(hours=1))
    slot_lag = t.get_int("max_slot_lag_mib", d.max_slot_lag_mib, lo=16, hi=1024 * 1024)
    base_days = t.get_int("base_every_days", d.base_every_days, lo=0, hi=3650)
    slot = t.get_str("slot", d.slot) or d.slot
    if not PITR_SLOT_RE.match(slot):
        raise t.error(
            "must be a replication slot name: lowercase letters, digits and '_', at most 63, "
            f"got {slot!r}",
            "slot",
        )
    role = t.get_str("role", d.role) or d.role
    if not PITR_ROLE_RE.match(role):
        raise t.error(
            "must be lowercase letters, digits and '_', not starting with a digit, at most 63, "
            f"got {role!r}",
            "role",
        )
    if role.startswith("pg_"):
        raise t.error(f"must not start with 'pg_' (PostgreSQL reserves it), got {role!r}", "role")
    password = t.get_str("password_file")
    spool_raw = t.get_str("spool_dir")
    spool = _path(spool_raw) if spool_raw is not None else d.spool_dir
    if not spool.is_absolute():
        raise t.error(f"must be an absolute path, got {spool_raw!r}", "spool_dir")
    if spool == Path("/") or ".." in spool.parts:
        raise t.error(
            f"must be a directory of its own without '..', got {spool_raw!r}", "spool_dir"
        )
    port = t.get_int("port", d.port, lo=1, hi=65535)
    skew = duration("skew", d.skew, timedelta(0), timedelta(hours=1))
    t.finish()
    return PitrConfig(
        max_lag=max_lag,
        max_slot_lag_mib=slot_lag,
        base_every_days=base_days,
        slot=slot,
        role=role,
        password_file=_path(password) if password is not None else None,
        spool_dir=spool,
        port=port,
        skew=skew,
    )


def _location(s: StorageConfig) -> tuple[object, ...]:
    """What says where a storage is: two configs with the same one are one storage."""
    if s.type == "local":
        return ("local", s.path.joinpath(*s.prefix.split("/")) if s.prefix else s.path)
    return ("s3", s.endpoint_url, s.bucket, s.prefix)


def _copies(
    top: _Table, storage: StorageConfig, retention: RetentionConfig
) -> tuple[CopyConfig, ...]:
    """[[copies]]: each a `name`, an optional [copies.retention] (else the main
    [retention]) and the keys of [storage], parsed by _storage itself, so errors
    name "copies[1].bucket". Names are unique; no copy may be the main storage
    or another copy."""
    top.used.add("copies")
    raw = top.data.get("copies", [])
    if not isinstance(raw, list):
        raise top.error("must be an array of tables ([[copies]])", "copies")
    out: list[CopyConfig] = []
    where: dict[tuple[object, ...], str] = {_location(storage): "[storage]"}
    for i, item in enumerate(raw):
        t = _Table(item, f"copies[{i}]", top.source)
        name = t.req_str("name")
        if not NAME_RE.match(name):
            raise t.error(
                f"must be letters, digits, '.', '_' or '-' (at most 63), got {name!r}", "name"
            )
        if any(c.name == name for c in out):
            raise t.error(f"duplicate copy name {name!r}", "name")
        rt = t.table("retention")
        own = _retention(rt) if rt is not None else retention
        sc = _storage(t)  # marks the rest used, and finishes t: unknown keys are errors
        loc = _location(sc)
        if loc in where:
            raise t.error(f"is the same storage as {where[loc]}: a copy must be elsewhere")
        where[loc] = f"copies[{i}]"
        out.append(CopyConfig(name=name, storage=sc, retention=own))
    return tuple(out)


def parse_config(data: Mapping[str, object], source: str) -> Config:
    """Given an already-parsed TOML document, return the validated Config (the
    pure part of load_config). Raise ConfigError naming *source* and the key
    path."""
    top = _Table(dict(data), "", source)
    storage = _storage(top.table("storage"))
    encryption = _encryption(top.table("encryption"))
    signing = _signing(top.table("signing"))
    hosts: dict[str, HostConfig] = {}
    ht = top.table("hosts")
    if ht is not None:
        for name in ht.data:
            hosts[name] = _host(name, _Table(ht.data[name], f"hosts.{name}", source))
            ht.used.add(name)
    retention = _retention(top.table("retention"))
    snapshot = _snapshot(top.table("snapshot"))
    transfer = _transfer(top.table("transfer"))
    monitoring = _monitoring(top.table("monitoring"))
    drill = _drill(top.table("drill"))
    check = _check(top.table("check"))
    copies = _copies(top, storage, retention)
    pitr = _pitr(top.table("pitr"))
    top.finish()
    return Config(
        source_file=None,
        storage=storage,
        encryption=encryption,
        signing=signing,
        hosts=hosts,
        retention=retention,
        snapshot=snapshot,
        transfer=transfer,
        monitoring=monitoring,
        drill=drill,
        check=check,
        copies=copies,
        pitr=pitr,
    )


def holds_credential(cfg: Config) -> bool:
    return any(
        s.secret_access_key is not None for s in (cfg.storage, *(c.storage for c in cfg.copies))
    )


def check_file_permissions(path: Path, cfg: Config, mode: int | None = None) -> None:
    """Raise ConfigError if *cfg* holds a credential and *path* grants any
    permission to group or others. *mode* (default: read from *path*) lets
    tests skip the file."""
    if not holds_credential(cfg):
        return
    if mode is None:
        mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: holds a storage credential (storage.secret_access_key) but is readable "
            f"by group or others (mode {stat.S_IMODE(mode):04o})",
            hint=f"chmod 600 {path}   (or move the credential to an AWS profile / environment)",
        )


def load_config(path: Path | None) -> Config:
    """Read and validate *path* (None: every key's default, what `init` starts
    from; the CLI never runs a command on it: no config file found is an error
    there) and return it as a Config. Raise ConfigError if the file is missing,
    unreadable, not UTF-8, not TOML, invalid, or holds a credential with
    group/other permissions."""
    if path is None:
        return Config(source_file=None)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    cfg = parse_config(data, str(path))
    check_file_permissions(path, cfg)
    from dataclasses import replace

    return replace(cfg, source_file=path)
