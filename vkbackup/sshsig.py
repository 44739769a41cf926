"""OpenSSH signatures (the SSHSIG format of `ssh-keygen -Y sign`), Ed25519 only.

Why this format: an operator can check a manifest by hand with the stock tool
and nothing of vkbackup's,

    ssh-keygen -Y verify -f allowed_signers -I vkbackup -n vkbackup \\
        -s manifest.json.sig < manifest.json

and the keys are ordinary OpenSSH keys that every ops team already knows how
to store, print and compare. The format is OpenSSH's PROTOCOL.sshsig: the
signature covers the namespace and a hash of the message, so a signature made
for vkbackup ("vkbackup") can never pass for a git commit or a login, and a
git or file signature made with the same key can never pass for a manifest.

Only Ed25519 is produced and accepted: one fixed algorithm leaves nothing to
negotiate. Both message hashes OpenSSH may use (sha512, its default, and
sha256) are accepted when verifying; sha512 is written.

Everything read is hostile until checked: lengths are bounded by the data,
every field must be exactly what the format says, and trailing bytes are an
error. `verify` returns the signing public key only when the signature checks
against one of the keys it was given.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vkbackup.errors import IntegrityError

MAGIC = b"SSHSIG"
VERSION = 1
NAMESPACE = "vkbackup"
KEY_TYPE = b"ssh-ed25519"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
MAX_ARMORED = 16 * 1024  # an Ed25519 signature is under 400 bytes armored


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self._pos = 0
        self._name = name

    def fail(self, why: str) -> IntegrityError:
        return IntegrityError(f"{self._name}: not a valid SSH signature: {why}")

    def take(self, n: int) -> bytes:
        if n > len(self._data) - self._pos:
            raise self.fail("truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail("trailing bytes")


def public_blob(key: Ed25519PublicKey) -> bytes:
    """The SSH wire encoding of an Ed25519 public key (string type, string key)."""
    return _string(KEY_TYPE) + _string(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_line(key: Ed25519PublicKey, comment: str = "") -> str:
    """The authorized_keys form: "ssh-ed25519 AAAA... comment"."""
    text = "ssh-ed25519 " + base64.b64encode(public_blob(key)).decode()
    return f"{text} {comment}" if comment else text


def fingerprint(key: Ed25519PublicKey) -> str:
    """The key's fingerprint as `ssh-keygen -l` prints it: "SHA256:..." (unpadded base64)."""
    digest = hashlib.sha256(public_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _signed_data(namespace: str, hash_name: str, message: bytes) -> bytes:
    digest = HASHES[hash_name](message).digest()
    return (
        MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_name.encode())
        + _string(digest)
    )


def sign(key: Ed25519PrivateKey, message: bytes, namespace: str = NAMESPACE) -> bytes:
    """Return the armored SSH signature of *message* (the bytes `ssh-keygen -Y
    sign -n NAMESPACE` writes to FILE.sig)."""
    sig = key.sign(_signed_data(namespace, "sha512", message))
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_blob(key.public_key()))
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(KEY_TYPE) + _string(sig))
    )
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([BEGIN, *lines, END, ""]).encode()


def _unarmor(armored: bytes, name: str) -> bytes:
    if len(armored) > MAX_ARMORED:
        raise IntegrityError(f"{name}: not a valid SSH signature: larger than {MAX_ARMORED} bytes")
    try:
        lines = armored.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        raise IntegrityError(f"{name}: not a valid SSH signature: not ASCII") from None
    if len(lines) < 3 or lines[0].strip() != BEGIN or lines[-1].strip() != END:
        raise IntegrityError(f"{name}: not a valid SSH signature: no SSH SIGNATURE armor")
    try:
        return base64.b64decode("".join(x.strip() for x in lines[1:-1]), validate=True)
    except ValueError:
        raise IntegrityError(f"{name}: not a valid SSH signature: bad base64") from None


def verify(
    armored: bytes,
    message: bytes,
    trusted: Iterable[Ed25519PublicKey],
    name: str,
    namespace: str = NAMESPACE,
) -> Ed25519PublicKey:
    """Check the armored SSH signature *armored* over *message*: namespace
    *namespace*, made by one of *trusted*. Return that key. Raise
    IntegrityError naming *name* (the signed file) if the signature is
    malformed, for another namespace, by a key not trusted, or does not match
    the message."""
    r = _Reader(_unarmor(armored, name), name)
    if r.take(6) != MAGIC:
        raise r.fail("bad magic")
    if r.uint32() != VERSION:
        raise r.fail("unknown version")
    key_blob = r.string()
    ns = r.string()
    r.string()  # reserved
    hash_name = r.string().decode("ascii", "replace")
    sig_blob = r.string()
    r.end()
    if ns != namespace.encode():
        raise IntegrityError(
            f"{name}: the signature is for namespace {ns[:40]!r}, not {namespace!r}"
        )
    if hash_name not in HASHES:
        raise r.fail(f"unknown hash {hash_name[:20]!r}")
    k = _Reader(key_blob, name)
    if k.string() != KEY_TYPE:
        raise IntegrityError(f"{name}: signed with a key that is not ssh-ed25519: refused")
    raw = k.string()
    k.end()
    if len(raw) != 32:
        raise k.fail("bad Ed25519 public key length")
    s = _Reader(sig_blob, name)
    if s.string() != KEY_TYPE:
        raise s.fail("signature algorithm is not ssh-ed25519")
    sig = s.string()
    s.end()
    if len(sig) != 64:
        raise s.fail("bad Ed25519 signature length")
    signer = Ed25519PublicKey.from_public_bytes(raw)
    known = [t for t in trusted if t.public_bytes(Encoding.Raw, PublicFormat.Raw) == raw]
    if not known:
        raise IntegrityError(
            f"{name}: signed by {fingerprint(signer)}, which is not in signing.trusted: refused"
        )
    try:
        signer.verify(sig, _signed_data(namespace, hash_name, message))
    except InvalidSignature:
        raise IntegrityError(
            f"{name}: BAD signature (by {fingerprint(signer)}): the file was changed after it "
            "was signed: refused"
        ) from None
    return known[0]
