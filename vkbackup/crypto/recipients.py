"""age recipients (who a file is encrypted to) and identities (who can open it).

A recipient wraps the 16-byte file key into one header stanza; an identity
looks through every stanza of a header for the ones of its own type and
returns the file key, None when nothing is addressed to it, or raises when a
stanza of its type breaks a rule of the spec. That split matters: "not for
me" lets the next identity try, while a malformed stanza stops the file,
because accepting it would make a partitioning oracle or hide tampering.

Three kinds, all as C2SP age defines them:
- X25519 ("age1...", "AGE-SECRET-KEY-1..."): the classic age key.
- mlkem768x25519 ("age1pq1...", "AGE-SECRET-KEY-PQ-1..."): the hybrid
  post-quantum key of age 1.3 (HPKE with ML-KEM-768 + X25519, see `hpke`).
  Backups outlive keys: a snapshot encrypted today to a PQ recipient stays
  closed to whoever stores it now and gets a quantum computer later. Its
  public key is 1216 bytes (a 1960-character string), its stanza about 1.5
  KiB, and it costs one ML-KEM operation per object, nothing per byte.
- scrypt (age -p): a passphrase, only ever alone in a header, with the work
  factor capped on decryption (stock age's default cap is also 2^22). The
  passphrase may be a callable so that a CLI prompts only when a file really
  has a scrypt stanza.

Parsing is strict and quiet: errors name a truncated recipient string but
never echo a secret key, and reprs of identities and scrypt objects hide
their secrets; passphrases are registered with `vkbackup.logs`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vkbackup.crypto import bech32, hpke
from vkbackup.crypto.header import Stanza, b64decode, b64encode, hkdf_sha256
from vkbackup.errors import CryptoError
from vkbackup.logs import register_secret

RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
X25519_INFO = b"age-encryption.org/v1/X25519"
PQ_RECIPIENT_HRP = "age1pq"
PQ_IDENTITY_HRP = "AGE-SECRET-KEY-PQ-"
PQ_STANZA = "mlkem768x25519"
PQ_INFO = b"age-encryption.org/mlkem768x25519"  # the HPKE info string
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
DEFAULT_SCRYPT_WORK_FACTOR = 18  # what stock age uses when encrypting
MAX_SCRYPT_WORK_FACTOR = 22  # stock age's default limit when decrypting
FILE_KEY_SIZE = 16
_ZERO_NONCE = bytes(12)
_WORK_FACTOR_RE = re.compile(r"[1-9][0-9]*")


class Recipient(Protocol):
    """Something a file key can be wrapped for (a public key or a passphrase)."""

    def wrap(self, file_key: bytes) -> list[Stanza]: ...


class Identity(Protocol):
    """Something that can unwrap a file key from the stanzas addressed to it."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None: ...


def _truncate(s: str, n: int = 24) -> str:
    return s if len(s) <= n else s[:n] + "..."


def _aead_open(key: bytes, body: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


class X25519Recipient:
    """An age X25519 public key; ``str()`` gives its "age1..." form."""

    __slots__ = ("_key", "_public")

    def __init__(self, public: bytes) -> None:
        if len(public) != 32:
            raise CryptoError(f"X25519 public key must be 32 bytes, got {len(public)}")
        self._public = bytes(public)
        self._key = X25519PublicKey.from_public_bytes(self._public)

    @property
    def public_bytes(self) -> bytes:
        return self._public

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self._public)

    def __repr__(self) -> str:
        return f"X25519Recipient({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other._public == self._public

    def __hash__(self) -> int:
        return hash(self._public)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Given a file key, return one X25519 stanza wrapping it for this recipient.

        Raise CryptoError if the public key is a low-order point (no shared secret).
        """
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        try:
            shared = ephemeral.exchange(self._key)
        except ValueError:
            raise CryptoError(f"recipient {_truncate(str(self))!r} is not a usable key") from None
        wrap_key = hkdf_sha256(shared, share + self._public, X25519_INFO)
        body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza("X25519", (b64encode(share),), body)]


class X25519Identity:
    """An age X25519 secret key. Its repr never shows the key."""

    __slots__ = ("_key", "_recipient", "_secret")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise CryptoError(f"X25519 secret key must be 32 bytes, got {len(secret)}")
        self._secret = bytes(secret)
        self._key = X25519PrivateKey.from_private_bytes(self._secret)
        self._recipient = X25519Recipient(self._key.public_key().public_bytes_raw())

    def __repr__(self) -> str:
        return f"X25519Identity(<secret for {self._recipient}>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Identity) and other._secret == self._secret

    def __hash__(self) -> int:
        return hash(self._recipient)

    def to_string(self) -> str:
        """Return the "AGE-SECRET-KEY-1..." encoding (handle it as a secret)."""
        return bech32.encode(IDENTITY_HRP, self._secret).upper()

    def recipient(self) -> X25519Recipient:
        """Return the public recipient that files for this identity are encrypted to."""
        return self._recipient

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Given a header's stanzas, return the file key if one X25519 stanza opens.

        Return None if none is for this identity. Raise CryptoError if an
        X25519 stanza is malformed or its share gives an all-zero secret.
        """
        for stanza in stanzas:
            if stanza.type != "X25519":
                continue
            if len(stanza.args) != 1:
                raise CryptoError("malformed X25519 stanza: wrong number of arguments")
            try:
                share = b64decode(stanza.args[0])
            except ValueError as e:
                raise CryptoError(f"malformed X25519 stanza: {e}") from None
            if len(share) != 32:
                raise CryptoError("malformed X25519 stanza: ephemeral share is not 32 bytes")
            if len(stanza.body) != 32:
                raise CryptoError("malformed X25519 stanza: body is not 32 bytes")
            try:
                shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:
                raise CryptoError("malformed X25519 stanza: all-zero shared secret") from None
            wrap_key = hkdf_sha256(shared, share + self._recipient.public_bytes, X25519_INFO)
            file_key = _aead_open(wrap_key, stanza.body)
            if file_key is not None:
                return file_key
        return None


class HybridRecipient:
    """An age post-quantum (ML-KEM-768 + X25519) public key; ``str()`` gives "age1pq1..."."""

    __slots__ = ("_key", "_text")

    def __init__(self, public: bytes) -> None:
        self._key = hpke.HybridPublicKey(public)
        self._text: str | None = None

    @property
    def public_bytes(self) -> bytes:
        return self._key.public_bytes

    def __str__(self) -> str:
        if self._text is None:  # 1216 bytes of Bech32: worth computing once
            self._text = bech32.encode(PQ_RECIPIENT_HRP, self._key.public_bytes)
        return self._text

    def __repr__(self) -> str:
        return f"HybridRecipient({_truncate(str(self), 40)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridRecipient) and other.public_bytes == self.public_bytes

    def __hash__(self) -> int:
        return hash(self.public_bytes)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Given a file key, return one mlkem768x25519 stanza (HPKE SealBase) wrapping it.

        Raise CryptoError if the key's X25519 half is a low-order point.
        """
        try:
            enc, body = hpke.seal_base(self._key, PQ_INFO, file_key)
        except CryptoError as e:
            raise CryptoError(
                f"recipient {_truncate(str(self))!r} is not a usable key: {e}"
            ) from None
        return [Stanza(PQ_STANZA, (b64encode(enc),), body)]


class HybridIdentity:
    """An age post-quantum secret key (a 32-byte seed). Its repr never shows the key."""

    __slots__ = ("_key", "_recipient", "_seed")

    def __init__(self, seed: bytes) -> None:
        self._key = hpke.HybridPrivateKey(seed)
        self._seed = bytes(seed)
        self._recipient = HybridRecipient(self._key.public_bytes)

    def __repr__(self) -> str:
        return f"HybridIdentity(<secret for {self._recipient!r}>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridIdentity) and other._seed == self._seed

    def __hash__(self) -> int:
        return hash(self._recipient)

    def to_string(self) -> str:
        """Return the "AGE-SECRET-KEY-PQ-1..." encoding (handle it as a secret)."""
        return bech32.encode(PQ_IDENTITY_HRP, self._seed).upper()

    def recipient(self) -> HybridRecipient:
        """Return the public recipient that files for this identity are encrypted to."""
        return self._recipient

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Given a header's stanzas, return the file key if one mlkem768x25519 stanza opens.

        Return None if none is for this identity (a wrong key fails the tag:
        ML-KEM rejects implicitly). Raise CryptoError if such a stanza has
        other than one argument, non-canonical base64, an encapsulation that
        is not 1120 bytes, a body that is not 32 bytes, or a low-order X25519
        share.
        """
        for stanza in stanzas:
            if stanza.type != PQ_STANZA:
                continue
            if len(stanza.args) != 1:
                raise CryptoError(f"malformed {PQ_STANZA} stanza: wrong number of arguments")
            try:
                enc = b64decode(stanza.args[0])
            except ValueError as e:
                raise CryptoError(f"malformed {PQ_STANZA} stanza: {e}") from None
            if len(enc) != hpke.ENC_SIZE:
                raise CryptoError(
                    f"malformed {PQ_STANZA} stanza: encapsulated key is not {hpke.ENC_SIZE} bytes"
                )
            if len(stanza.body) != FILE_KEY_SIZE + 16:
                raise CryptoError(f"malformed {PQ_STANZA} stanza: body is not 32 bytes")
            try:
                file_key = hpke.open_base(self._key, enc, PQ_INFO, stanza.body)
            except CryptoError as e:
                raise CryptoError(f"malformed {PQ_STANZA} stanza: {e}") from None
            if file_key is not None:
                return file_key
        return None


def _scrypt_key(passphrase: str, salt: bytes, work_factor: int) -> bytes:
    kdf = Scrypt(salt=SCRYPT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1)
    return kdf.derive(passphrase.encode("utf-8"))


class ScryptRecipient:
    """Passphrase encryption (age -p). Must be a file's only recipient."""

    __slots__ = ("_passphrase", "work_factor")

    def __init__(self, passphrase: str, work_factor: int = DEFAULT_SCRYPT_WORK_FACTOR) -> None:
        if not passphrase:
            raise CryptoError("empty passphrase")
        if not 1 <= work_factor <= MAX_SCRYPT_WORK_FACTOR:
            raise CryptoError(
                f"scrypt work factor must be 1..{MAX_SCRYPT_WORK_FACTOR}, got {work_factor}"
            )
        register_secret(passphrase)
        self._passphrase = passphrase
        self.work_factor = work_factor

    def __repr__(self) -> str:
        return f"ScryptRecipient(<passphrase>, work_factor={self.work_factor})"

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Given a file key, return the one scrypt stanza wrapping it."""
        salt = os.urandom(16)
        key = _scrypt_key(self._passphrase, salt, self.work_factor)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza("scrypt", (b64encode(salt), str(self.work_factor)), body)]


class ScryptIdentity:
    """Opens passphrase-encrypted files; the passphrase may be asked for lazily."""

    __slots__ = ("_get", "_passphrase", "max_work_factor")

    def __init__(
        self,
        passphrase: str | Callable[[], str],
        max_work_factor: int = MAX_SCRYPT_WORK_FACTOR,
    ) -> None:
        self._passphrase: str | None = None
        self._get: Callable[[], str] | None = None
        if isinstance(passphrase, str):
            register_secret(passphrase)
            self._passphrase = passphrase
        else:
            self._get = passphrase
        self.max_work_factor = max_work_factor

    def __repr__(self) -> str:
        return f"ScryptIdentity(<passphrase>, max_work_factor={self.max_work_factor})"

    def _the_passphrase(self) -> str:
        if self._passphrase is None:
            assert self._get is not None
            value = self._get()
            if not value:
                raise CryptoError("empty passphrase")
            register_secret(value)
            self._passphrase = value
        return self._passphrase

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Given a header's stanzas, return the file key if the passphrase opens it.

        Return None if there is no scrypt stanza or the passphrase is wrong.
        Raise CryptoError if the scrypt stanza is not alone, malformed, or its
        work factor exceeds the cap.
        """
        scrypt = [s for s in stanzas if s.type == "scrypt"]
        if not scrypt:
            return None
        if len(stanzas) != 1:
            raise CryptoError("an scrypt stanza must be the only stanza in the header")
        stanza = scrypt[0]
        if len(stanza.args) != 2:
            raise CryptoError("malformed scrypt stanza: wrong number of arguments")
        try:
            salt = b64decode(stanza.args[0])
        except ValueError as e:
            raise CryptoError(f"malformed scrypt stanza: {e}") from None
        if len(salt) != 16:
            raise CryptoError("malformed scrypt stanza: salt is not 16 bytes")
        if not _WORK_FACTOR_RE.fullmatch(stanza.args[1]):
            raise CryptoError("malformed scrypt stanza: bad work factor")
        work_factor = int(stanza.args[1])
        if work_factor > self.max_work_factor:
            raise CryptoError(
                f"scrypt work factor 2^{work_factor} is above the limit 2^{self.max_work_factor}"
            )
        if len(stanza.body) != 32:
            raise CryptoError("malformed scrypt stanza: body is not 32 bytes")
        key = _scrypt_key(self._the_passphrase(), salt, work_factor)
        return _aead_open(key, stanza.body)


def generate_identity() -> X25519Identity:
    """Return a new random X25519 identity."""
    return X25519Identity(X25519PrivateKey.generate().private_bytes_raw())


def generate_hybrid_identity() -> HybridIdentity:
    """Return a new random post-quantum (ML-KEM-768 + X25519) identity."""
    return HybridIdentity(os.urandom(hpke.SEED_SIZE))


AnyRecipient = X25519Recipient | HybridRecipient
AnyIdentity = X25519Identity | HybridIdentity


def parse_recipient(s: str) -> AnyRecipient:
    """Given an "age1..." or "age1pq1..." string, return its recipient.

    Raise CryptoError naming the (truncated) string if it is not a valid age
    X25519 or hybrid post-quantum recipient.
    """
    try:
        hrp, data = bech32.decode(s)
    except CryptoError as e:
        raise CryptoError(f"invalid age recipient {_truncate(s)!r}: {e}") from None
    if hrp == PQ_RECIPIENT_HRP:
        if len(data) != hpke.PUBLIC_KEY_SIZE:
            raise CryptoError(f"invalid age recipient {_truncate(s)!r}: wrong key length")
        try:
            return HybridRecipient(data)
        except CryptoError as e:
            raise CryptoError(f"invalid age recipient {_truncate(s)!r}: {e}") from None
    if hrp != RECIPIENT_HRP:
        raise CryptoError(
            f"invalid age recipient {_truncate(s)!r}: not an age1... or age1pq1... key"
        )
    if len(data) != 32:
        raise CryptoError(f"invalid age recipient {_truncate(s)!r}: wrong key length")
    return X25519Recipient(data)


def parse_identity(s: str) -> AnyIdentity:
    """Given an "AGE-SECRET-KEY-1..." or "AGE-SECRET-KEY-PQ-1..." string, return its identity.

    Raise CryptoError (without echoing the secret) if the string is malformed.
    """
    try:
        hrp, data = bech32.decode(s)
    except CryptoError as e:
        raise CryptoError(f"malformed age secret key: {e}") from None
    if hrp not in (IDENTITY_HRP, PQ_IDENTITY_HRP):
        raise CryptoError(
            "malformed age secret key: not an AGE-SECRET-KEY-1... or AGE-SECRET-KEY-PQ-1... key"
        )
    if len(data) != 32:
        raise CryptoError("malformed age secret key: wrong key length")
    register_secret(s)
    if hrp == PQ_IDENTITY_HRP:
        return HybridIdentity(data)
    return X25519Identity(data)
