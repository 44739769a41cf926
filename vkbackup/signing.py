"""The backup machine's signing key, and which public keys readers trust.

age encryption hides what a snapshot holds, but it does not say who wrote it:
the recipients are public, so anyone who can write to the bucket can write a
manifest, a private part and objects that decrypt fine. What a restore trusts
must therefore be signed by a key only the backup machine holds. That key is
an ordinary OpenSSH Ed25519 key (`vkbackup keys generate --signing`), written
without a passphrase because cron signs every night, mode 0600 like the age
identity (a key file readable by group or others is refused, naming it).

Readers (list, show, verify, restore, drill, prune, and snapshot when it picks
objects to reuse) accept what is signed by a key in `signing.trusted` or by
the configured key itself. A machine that only restores holds the public keys
alone. `Trust.from_config` turns the configuration into the keys; how records
are signed and checked on their way to and from storage is
`vkbackup.signed_storage`.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vkbackup import sshsig
from vkbackup.config.model import SigningConfig
from vkbackup.errors import ConfigError

MAX_KEY_FILE = 64 * 1024


def parse_public_line(text: str, where: str) -> Ed25519PublicKey:
    """Given "ssh-ed25519 AAAA... [comment]", return the key. Raise ConfigError
    naming *where* for anything else (another key type, bad base64)."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise ConfigError(f"{where}: must be an OpenSSH ed25519 public key (ssh-ed25519 AAAA...)")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: not a valid ssh-ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):  # pragma: no cover - the type prefix says so
        raise ConfigError(f"{where}: not an ed25519 key")
    return key


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """Return the Ed25519 private key in the OpenSSH key file *path*. Raise
    ConfigError naming the file if it is missing, readable by group or others,
    passphrase-protected, or holds another kind of key."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the signing key (signing.key): {e.strerror}"
        ) from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"{path}: signing key is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); refusing to use it",
            hint=f"chmod 600 {path}",
        )
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(f"{path}: too large to be a signing key")
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{path}: the signing key is passphrase-protected; nightly runs cannot unlock it",
            hint="generate one with `vkbackup keys generate --signing --out PATH`",
        ) from None
    except ValueError:
        raise ConfigError(f"{path}: not an OpenSSH private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: the signing key must be ed25519 (ssh-keygen -t ed25519)")
    return key


def generate_key_file(path: Path, comment: str = "vkbackup-signing") -> str:
    """Write a new Ed25519 key to *path* in OpenSSH format (mode 0600; never
    overwrites) and return its public line, "ssh-ed25519 AAAA... comment".
    Raise ConfigError naming the path if it exists or cannot be written."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; refusing to overwrite it") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the signing key: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return sshsig.public_line(key.public_key(), comment)


@dataclass(frozen=True)
class Trust:
    """What this machine signs with (*key*, None: it cannot sign) and accepts
    (*trusted*). *configured* is whether [signing] exists at all: without it
    nothing is signed or checked, and readers say so once."""

    key: Ed25519PrivateKey | None
    trusted: tuple[Ed25519PublicKey, ...]
    key_path: Path | None = None

    @property
    def configured(self) -> bool:
        return self.key is not None or bool(self.trusted)

    @classmethod
    def none(cls) -> Trust:
        return cls(key=None, trusted=())

    @classmethod
    def from_config(cls, cfg: SigningConfig) -> Trust:
        trusted = [parse_public_line(t, f"signing.trusted[{i}]") for i, t in enumerate(cfg.trusted)]
        key = read_private_key(cfg.key) if cfg.key is not None else None
        if key is not None:
            trusted.append(key.public_key())
        return cls(key=key, trusted=tuple(trusted), key_path=cfg.key)

    def describe(self) -> list[str]:
        """One line per trusted key: its fingerprint and line, for `config check`."""
        return [
            f"{sshsig.fingerprint(k)} {base64.b64encode(sshsig.public_blob(k)).decode()[:24]}..."
            for k in self.trusted
        ]
