"""Small helpers the actions and the restore package share: keys from the config, hosts, time.

Not an action itself: it lives beside them so that no action imports another."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import Identity, Recipient, load_identity_file, parse_recipient
from vkbackup.crypto.keys import read_passphrase
from vkbackup.errors import ConfigError, UsageError


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def recipients(cfg: Config) -> list[Recipient]:
    """The public keys every object is encrypted to. Raise ConfigError if none."""
    if not cfg.encryption.recipients:
        raise ConfigError(
            f"{cfg.source_file or '(no config file)'}: encryption.recipients is empty: "
            "nothing to encrypt to",
            hint="vkbackup keys generate --out ~/.config/vkbackup/identity.txt, then put the "
            "printed age1... key in encryption.recipients",
        )
    return [parse_recipient(r) for r in cfg.encryption.recipients]


def identities(
    cfg: Config, passphrase: Callable[[], str] | None = None, path: str | None = None
) -> list[Identity]:
    """The private keys (restore, verify, drill). Raise ConfigError if not configured."""
    p = path or cfg.encryption.identity
    if p is None:
        raise ConfigError(
            f"{cfg.source_file or '(no config file)'}: encryption.identity is not set: "
            "restore, verify and drill need the private key",
        )
    return list(load_identity_file(Path(p).expanduser(), passphrase or read_passphrase))


def host(cfg: Config, name: str) -> HostConfig:
    if name not in cfg.hosts:
        known = ", ".join(sorted(cfg.hosts)) or "none"
        raise UsageError(
            f"{cfg.source_file or '(no config file)'}: no host {name!r} (configured: {known})"
        )
    return cfg.hosts[name]


def parse_target(cfg: Config, target: str) -> HostConfig:
    """Given a configured host name or user@address[:port], return a HostConfig."""
    if target in cfg.hosts:
        return cfg.hosts[target]
    if "@" not in target and ":" not in target:
        return host(cfg, target)
    user, _, rest = target.rpartition("@")
    address, _, port = rest.partition(":")
    try:
        port_n = int(port) if port else 22
    except ValueError:
        raise UsageError(f"bad port in {target!r}") from None
    base: dict[str, Any] = {}
    if cfg.hosts:
        first = next(iter(cfg.hosts.values()))
        base = {"key_file": first.key_file, "known_hosts": first.known_hosts}
    return HostConfig(name=address, address=address, port=port_n, user=user or "root", **base)
