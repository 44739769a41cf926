"""The C2SP/CCTV age test vectors in tests/unit/crypto/testkit/, each decrypted as a test.

Every vector says what decrypting it must do (success, "no match", "HMAC
failure", "header failure", "payload failure", "armor failure"), and the
SHA-256 of all plaintext released before the end or the error. vkbackup's
errors are one type with a message, so the outcome is told apart by stage
(read(0) parses the header and unwraps the file key and nothing more) and by
the message of the header stage.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vkbackup.crypto import DecryptingReader, Identity, ScryptIdentity, parse_identity
from vkbackup.errors import CryptoError
from vkbackup.streams import BytesReader

TESTKIT = Path(__file__).parent / "testkit"
VECTORS = sorted(p for p in TESTKIT.iterdir() if p.is_file() and "." not in p.name)


@dataclass
class Vector:
    expect: str
    payload: str | None
    identities: list[str] = field(default_factory=list)
    passphrases: list[str] = field(default_factory=list)
    armored: bool = False
    body: bytes = b""


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, body = raw.split(b"\n\n", 1)
    v = Vector(expect="", payload=None)
    compressed = False
    for line in head.decode("utf-8").splitlines():
        key, value = line.split(": ", 1)
        if key == "expect":
            v.expect = value
        elif key == "payload":
            v.payload = value
        elif key == "identity":
            v.identities.append(value)
        elif key == "passphrase":
            v.passphrases.append(value)
        elif key == "armored":
            v.armored = value == "yes"
        elif key == "compressed":
            assert value == "zlib", value
            compressed = True
    v.body = zlib.decompress(body) if compressed else body
    return v


def outcome(v: Vector) -> tuple[str, bytes]:
    """Decrypt the vector; return (what happened in testkit terms, plaintext released)."""
    identities: list[Identity] = [parse_identity(s) for s in v.identities]
    identities += [ScryptIdentity(p) for p in v.passphrases]
    reader = DecryptingReader(BytesReader(v.body), identities, "vector")
    try:
        reader.read(0)  # the header stage: parse, unwrap, MAC
    except CryptoError as e:
        message = str(e)
        if "invalid ASCII armor" in message:
            return "armor failure", b""
        if "no identity matches" in message or "incorrect passphrase" in message:
            return "no match", b""
        if "header MAC mismatch" in message:
            return "HMAC failure", b""
        return "header failure", b""
    released = b""
    try:
        while chunk := reader.read(4096):
            released += chunk
    except CryptoError as e:
        return ("armor failure" if "invalid ASCII armor" in str(e) else "payload failure"), released
    return "success", released


def test_the_vectors_are_here() -> None:
    names = {p.name for p in VECTORS}
    assert {"hybrid", "hybrid_low_order", "armor_no_eol", "armor_hybrid"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path", VECTORS, ids=[p.name for p in VECTORS])
def test_vector(path: Path) -> None:
    v = load(path)
    got, released = outcome(v)
    assert got == v.expect
    if v.payload is not None:
        assert hashlib.sha256(released).hexdigest() == v.payload
