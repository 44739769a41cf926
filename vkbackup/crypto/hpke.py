"""The one HPKE suite age's post-quantum recipient needs, and its hybrid KEM.

Backups live for years in an off-site bucket: ciphertext taken today can be
opened the day X25519 falls ("harvest now, decrypt later"). age 1.3 answers
with the mlkem768x25519 recipient, which wraps the file key with HPKE
(RFC 9180) SealBase under the MLKEM768-X25519 hybrid KEM (X-Wing), HKDF-SHA256
and ChaCha20-Poly1305. The file key stays safe while either ML-KEM-768 or
X25519 holds. Only the header changes: the payload, its streaming and its
memory are the same for every recipient type.

Why write it here instead of importing an HPKE library: `cryptography` has
ML-KEM-768, X25519, SHA-3, HKDF and ChaCha20-Poly1305 but no HPKE, and age
uses one narrow corner of it: base mode, one message (sequence number 0), an
empty AAD, one fixed suite. That corner is a few dozen lines, checked
against the C2SP/CCTV age vectors and stock age 1.3 (tests/unit/crypto).

The hybrid KEM follows filippo.io/hpke-pq (which the C2SP age spec cites):
a private key is a 32-byte seed; SHAKE256(seed) gives 96 bytes, the first
64 the ML-KEM-768 seed (d || z), the last 32 the X25519 scalar. The public
key is the ML-KEM encapsulation key (1184 bytes) then the X25519 point
(32 bytes); the encapsulation is the ML-KEM ciphertext (1088) then the
ephemeral X25519 share (32). The shared secret is
SHA3-256(ss_MLKEM || ss_X25519 || ct_X25519 || pk_X25519 || label) with the
six-byte X-Wing label. An all-zero X25519 result (a low-order share) is an
error, as in Go's crypto/ecdh, never a secret; a wrong ML-KEM ciphertext is
not an error (ML-KEM rejects implicitly): the AEAD tag then fails.

Keys are only handled as the library's key objects and never logged; the
seed is kept (it is the identity's encoding) by the caller, not here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vkbackup.errors import CryptoError

try:
    from cryptography.hazmat.primitives.asymmetric.mlkem import (
        MLKEM768PrivateKey,
        MLKEM768PublicKey,
    )
except ImportError:  # pragma: no cover - cryptography < 47 has no ML-KEM
    HAVE_MLKEM = False
else:
    HAVE_MLKEM = True

KEM_ID = 0x647A  # MLKEM768-X25519, draft-ietf-hpke-pq
KDF_ID = 0x0001  # HKDF-SHA256, RFC 9180 section 7.2
AEAD_ID = 0x0003  # ChaCha20Poly1305, RFC 9180 section 7.3
SUITE_ID = b"HPKE" + struct.pack(">HHH", KEM_ID, KDF_ID, AEAD_ID)
XWING_LABEL = b"\\.//^\\"  # 5c2e2f2f5e5c

SEED_SIZE = 32
MLKEM_SEED_SIZE = 64
MLKEM_PUBLIC_SIZE = 1184
MLKEM_CIPHERTEXT_SIZE = 1088
X25519_SIZE = 32
PUBLIC_KEY_SIZE = MLKEM_PUBLIC_SIZE + X25519_SIZE  # 1216
ENC_SIZE = MLKEM_CIPHERTEXT_SIZE + X25519_SIZE  # 1120
_AEAD_KEY_SIZE = 32
_AEAD_NONCE_SIZE = 12
_MODE_BASE = b"\x00"
_VERSION = b"HPKE-v1"


def _unsupported() -> CryptoError:
    return CryptoError(
        "post-quantum (age1pq) keys need ML-KEM-768: cryptography >= 47 built with "
        "an OpenSSL that has ML-KEM",
        hint="pip install 'cryptography>=47'",
    )


def _mlkem_from_seed(seed: bytes) -> MLKEM768PrivateKey:
    if not HAVE_MLKEM:  # pragma: no cover
        raise _unsupported()
    try:
        return MLKEM768PrivateKey.from_seed_bytes(seed)
    except UnsupportedAlgorithm:  # pragma: no cover - OpenSSL without ML-KEM
        raise _unsupported() from None


def _mlkem_public(data: bytes) -> MLKEM768PublicKey:
    if not HAVE_MLKEM:  # pragma: no cover
        raise _unsupported()
    try:
        return MLKEM768PublicKey.from_public_bytes(data)
    except UnsupportedAlgorithm:  # pragma: no cover
        raise _unsupported() from None


class HybridPrivateKey:
    """An MLKEM768-X25519 decapsulation key, expanded once from its 32-byte seed."""

    __slots__ = ("_mlkem", "_x25519", "public_bytes", "x25519_public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise CryptoError(f"hybrid secret key must be {SEED_SIZE} bytes, got {len(seed)}")
        expanded = hashlib.shake_256(seed).digest(MLKEM_SEED_SIZE + X25519_SIZE)
        self._mlkem = _mlkem_from_seed(expanded[:MLKEM_SEED_SIZE])
        self._x25519 = X25519PrivateKey.from_private_bytes(expanded[MLKEM_SEED_SIZE:])
        self.x25519_public = self._x25519.public_key().public_bytes_raw()
        self.public_bytes = self._mlkem.public_key().public_bytes_raw() + self.x25519_public

    def __repr__(self) -> str:
        return "HybridPrivateKey(<secret>)"

    def decapsulate(self, enc: bytes) -> bytes:
        """Given a 1120-byte encapsulation, return the 32-byte shared secret.

        Raise CryptoError if *enc* has the wrong length or its X25519 share
        gives the all-zero secret (a low-order point).
        """
        if len(enc) != ENC_SIZE:
            raise CryptoError(f"encapsulated key must be {ENC_SIZE} bytes, got {len(enc)}")
        ct_pq, ct_t = enc[:MLKEM_CIPHERTEXT_SIZE], enc[MLKEM_CIPHERTEXT_SIZE:]
        ss_pq = self._mlkem.decapsulate(ct_pq)
        try:
            ss_t = self._x25519.exchange(X25519PublicKey.from_public_bytes(ct_t))
        except ValueError:
            raise CryptoError("X25519 share is a low-order point (all-zero secret)") from None
        return _combine(ss_pq, ss_t, ct_t, self.x25519_public)


class HybridPublicKey:
    """An MLKEM768-X25519 encapsulation key (1216 bytes), checked when parsed."""

    __slots__ = ("_mlkem", "_x25519", "public_bytes")

    def __init__(self, data: bytes) -> None:
        if len(data) != PUBLIC_KEY_SIZE:
            raise CryptoError(f"hybrid public key must be {PUBLIC_KEY_SIZE} bytes, got {len(data)}")
        try:
            self._mlkem = _mlkem_public(data[:MLKEM_PUBLIC_SIZE])
        except ValueError:
            raise CryptoError("invalid ML-KEM-768 encapsulation key") from None
        self._x25519 = X25519PublicKey.from_public_bytes(data[MLKEM_PUBLIC_SIZE:])
        self.public_bytes = bytes(data)

    def encapsulate(self) -> tuple[bytes, bytes]:
        """Return (shared secret, 1120-byte encapsulation) for a fresh ephemeral key.

        Raise CryptoError if the X25519 half is a low-order point.
        """
        ss_pq, ct_pq = self._mlkem.encapsulate()
        ephemeral = X25519PrivateKey.generate()
        ct_t = ephemeral.public_key().public_bytes_raw()
        try:
            ss_t = ephemeral.exchange(self._x25519)
        except ValueError:
            raise CryptoError("the X25519 half of the key is a low-order point") from None
        pk_t = self.public_bytes[MLKEM_PUBLIC_SIZE:]
        return _combine(ss_pq, ss_t, ct_t, pk_t), ct_pq + ct_t


def _combine(ss_pq: bytes, ss_t: bytes, ct_t: bytes, pk_t: bytes) -> bytes:
    return hashlib.sha3_256(ss_pq + ss_t + ct_t + pk_t + XWING_LABEL).digest()


# -- HPKE base mode, RFC 9180 section 5.1 (two-stage KDF: HKDF-SHA256) ------


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    # HKDF-Extract is HMAC keyed with the salt; an empty salt equals HashLen zeros.
    return hmac.new(salt, _VERSION + SUITE_ID + label + ikm, hashlib.sha256).digest()


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    # HKDF-Expand up to HashLen (32) bytes is its first block: HMAC(prk, info || 0x01).
    assert length <= 32
    labeled_info = struct.pack(">H", length) + _VERSION + SUITE_ID + label + info
    return hmac.new(prk, labeled_info + b"\x01", hashlib.sha256).digest()[:length]


@functools.lru_cache(maxsize=8)
def _key_schedule_context(info: bytes) -> bytes:
    psk_id_hash = _labeled_extract(b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(b"", b"info_hash", info)
    return _MODE_BASE + psk_id_hash + info_hash


def _key_and_nonce(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    context = _key_schedule_context(info)
    secret = _labeled_extract(shared_secret, b"secret", b"")
    key = _labeled_expand(secret, b"key", context, _AEAD_KEY_SIZE)
    base_nonce = _labeled_expand(secret, b"base_nonce", context, _AEAD_NONCE_SIZE)
    return key, base_nonce  # the first message's nonce is base_nonce XOR 0


def seal_base(public: HybridPublicKey, info: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """HPKE SealBase with an empty AAD: return (enc, ciphertext)."""
    shared, enc = public.encapsulate()
    key, nonce = _key_and_nonce(shared, info)
    return enc, ChaCha20Poly1305(key).encrypt(nonce, plaintext, None)


def open_base(
    private: HybridPrivateKey, enc: bytes, info: bytes, ciphertext: bytes
) -> bytes | None:
    """HPKE OpenBase with an empty AAD: return the plaintext, or None if the tag fails.

    Raise CryptoError if *enc* is malformed (wrong length, low-order X25519 share).
    """
    shared = private.decapsulate(enc)
    key, nonce = _key_and_nonce(shared, info)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, None)
    except InvalidTag:
        return None
