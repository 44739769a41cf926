"""Identity files (what `age-keygen` writes and `age -i` reads) and passphrases.

An identity file is the one secret a restore cannot do without, so it is
written the way stock age-keygen writes it ("# created:", "# public key:",
then the key line) and read the way `age -i` reads it: the break-glass path
on incident day is plain `age -d -i FILE`, with or without vkbackup. Both
key kinds live in the same layout: "AGE-SECRET-KEY-1..." (X25519) and
"AGE-SECRET-KEY-PQ-1..." (post-quantum, as `age-keygen -pq` writes, opened
by stock age 1.3.0 and later), mixed freely in one file.

Files are created 0600 (parents 0700) and never overwritten. A file may be
passphrase-encrypted with age scrypt (binary or armored, as `age -p [-a]`
writes it); the passphrase is asked for only when the file really is
encrypted. A file that group or others may read is refused (ConfigError,
with the chmod that fixes it), encrypted or not, as OpenSSH refuses such a
key: on incident day a key off a stick that keeps no modes is copied off it
with mode 0600 first. Errors name the file and the line number, never a
line's content, and files over 1 MiB are refused before they are parsed.

A passphrase comes from a file (one trailing newline removed), else
$VKBACKUP_PASSPHRASE, else a prompt on the controlling terminal (/dev/tty,
never standard input, which may carry data), and never from the command
line. Every value read is registered with `vkbackup.logs.register_secret`.
`PassphraseSource` reads lazily, once, so a command prompts only if it must.
"""

from __future__ import annotations

import getpass
import os
import shlex
import stat
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from vkbackup.crypto.age import DecryptingReader, encrypt_bytes
from vkbackup.crypto.armor import armor_encode, looks_armored
from vkbackup.crypto.header import VERSION_PREFIX
from vkbackup.crypto.recipients import (
    DEFAULT_SCRYPT_WORK_FACTOR,
    IDENTITY_HRP,
    PQ_IDENTITY_HRP,
    AnyIdentity,
    Identity,
    ScryptIdentity,
    ScryptRecipient,
    parse_identity,
)
from vkbackup.errors import ConfigError, CryptoError
from vkbackup.logs import get_logger, register_secret
from vkbackup.streams import BytesReader

IDENTITY_FILE_MAX = 1024 * 1024
PASSPHRASE_ENV = "VKBACKUP_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
_TTY = "/dev/tty"

log = get_logger("crypto.keys")


def format_identity_file(identity: AnyIdentity, created: datetime | None = None) -> str:
    """Given an identity, return identity-file text in age-keygen's layout."""
    when = (created or datetime.now(UTC)).replace(microsecond=0)
    stamp = when.isoformat().replace("+00:00", "Z")
    return f"# created: {stamp}\n# public key: {identity.recipient()}\n{identity.to_string()}\n"


def parse_identities(text: str, name: str) -> list[AnyIdentity]:
    """Given identity-file text, return its identities. Raise CryptoError naming *name*."""
    identities: list[AnyIdentity] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("AGE-PLUGIN-"):
            raise CryptoError(f"{name}: line {number}: age plugin identities are not supported")
        if line.startswith("-----BEGIN"):
            raise CryptoError(
                f"{name}: line {number}: SSH or PEM keys are not supported; "
                "use an age identity (vkbackup keys generate)"
            )
        if not line.upper().startswith((IDENTITY_HRP + "1", PQ_IDENTITY_HRP + "1")):
            raise CryptoError(f"{name}: line {number} is not an age identity")
        try:
            identities.append(parse_identity(line))
        except CryptoError as e:
            raise CryptoError(f"{name}: line {number}: {e}") from None
    if not identities:
        raise CryptoError(f"{name}: no identity found in the file")
    return identities


def _is_encrypted(data: bytes) -> bool:
    return data.startswith(VERSION_PREFIX) or looks_armored(data[:256])


def load_identity_file(path: Path, passphrase: Callable[[], str] | None = None) -> list[Identity]:
    """Given an identity file (plain or age-passphrase-encrypted), return its identities.

    *passphrase* is called only if the file is encrypted. Raise ConfigError if
    the file is readable by group or others, CryptoError naming the file on
    any other failure.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(IDENTITY_FILE_MAX + 1)
            mode = os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise CryptoError(f"{path}: cannot read identity file: {e.strerror or e}") from None
    if len(data) > IDENTITY_FILE_MAX:
        raise CryptoError(f"{path}: too large for an identity file (over 1 MiB)")
    if stat.S_IMODE(mode) & 0o077:
        # Refused, as OpenSSH refuses such a key and as a config file holding a
        # credential is refused: a private key that others can read is one
        # others may have. A key brought on a stick that cannot keep modes
        # (FAT) is copied off it first; the hint says how.
        quoted = shlex.quote(str(path))
        raise ConfigError(
            f"{path}: identity file is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}): it holds the private key of every "
            "snapshot; refusing to use it",
            hint=f"chmod 600 {quoted}   (on a stick that keeps no modes: "
            f"install -m 600 {quoted} ~/{shlex.quote(path.name)}, and use that copy)",
        )
    if _is_encrypted(data):
        if passphrase is None:
            raise CryptoError(
                f"{path}: the identity file is passphrase-encrypted and no passphrase was given",
                hint="use --passphrase-file, $VKBACKUP_PASSPHRASE or a terminal",
            )
        reader = DecryptingReader(BytesReader(data), [ScryptIdentity(passphrase)], str(path))
        data = reader.read(-1)
        if len(data) > IDENTITY_FILE_MAX:
            raise CryptoError(f"{path}: decrypted identity file is over 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError(f"{path}: not an identity file (not UTF-8 text)") from None
    return list(parse_identities(text, str(path)))


def write_identity_file(
    path: Path,
    identity: AnyIdentity,
    passphrase: str | None = None,
    work_factor: int = DEFAULT_SCRYPT_WORK_FACTOR,
    created: datetime | None = None,
) -> None:
    """Create *path* (mode 0600) holding *identity*, passphrase-encrypted if asked.

    Raise CryptoError naming the file if it already exists or cannot be written.
    """
    path = Path(path)
    content = format_identity_file(identity, created).encode("ascii")
    if passphrase is not None:
        content = armor_encode(encrypt_bytes(content, [ScryptRecipient(passphrase, work_factor)]))
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CryptoError(f"{path}: already exists; refusing to overwrite it") from None
    except OSError as e:
        raise CryptoError(f"{path}: cannot create identity file: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise CryptoError(f"{path}: cannot write identity file: {e.strerror or e}") from None
    os.close(fd)


def default_identity_path(
    environ: Mapping[str, str] | None = None, passphrase: bool = False
) -> Path:
    """Return where `keys generate` writes by default (XDG config directory)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "vkbackup" / ("identity.age" if passphrase else "identity.txt")


def _read_passphrase_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CryptoError(f"{path}: cannot read passphrase file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError(f"{path}: passphrase file is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise CryptoError(f"{path}: passphrase file is empty")
    return text


def _prompt_tty(prompt: str, confirm: bool) -> str:
    try:
        fd = os.open(_TTY, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise CryptoError(
            "a passphrase is needed and there is no terminal to ask it on",
            hint=f"set ${PASSPHRASE_ENV} or use --passphrase-file",
        ) from None
    os.close(fd)
    value = getpass.getpass(prompt)
    if not value:
        raise CryptoError("empty passphrase")
    if confirm and getpass.getpass("Confirm passphrase: ") != value:
        raise CryptoError("the passphrases did not match")
    return value


def read_passphrase(
    passphrase_file: Path | str | None = None,
    *,
    env_var: str = PASSPHRASE_ENV,
    environ: Mapping[str, str] | None = None,
    prompt: str = "Enter passphrase: ",
    confirm: bool = False,
) -> str:
    """Return the passphrase from the file, else $env_var, else a /dev/tty prompt.

    Raise CryptoError if none is available, it is empty, or confirmation fails.
    """
    env = os.environ if environ is None else environ
    if passphrase_file is not None:
        value = _read_passphrase_file(Path(passphrase_file))
    elif env.get(env_var):
        value = env[env_var]
    else:
        value = _prompt_tty(prompt, confirm)
    register_secret(value)
    return value


class PassphraseSource:
    """A callable that gets the passphrase (as read_passphrase) on first call, then caches it."""

    def __init__(
        self,
        passphrase_file: Path | str | None = None,
        *,
        env_var: str = PASSPHRASE_ENV,
        environ: Mapping[str, str] | None = None,
        prompt: str = "Enter passphrase: ",
        confirm: bool = False,
    ) -> None:
        self._file = passphrase_file
        self._env_var = env_var
        self._environ = environ
        self._prompt = prompt
        self._confirm = confirm
        self._value: str | None = None

    def __repr__(self) -> str:
        return "PassphraseSource(<passphrase>)"

    def __call__(self) -> str:
        if self._value is None:
            self._value = read_passphrase(
                self._file,
                env_var=self._env_var,
                environ=self._environ,
                prompt=self._prompt,
                confirm=self._confirm,
            )
        return self._value
