"""The age v1 file format, streaming: header, recipient stanzas, STREAM payload.

Every object vkbackup stores is an age file, so that stock `age -d` can open
it on the day vkbackup cannot run. Objects are large (database dumps, volume
tars) and pass through pipes, so both directions are Readables that never
hold the whole stream: one block read from the source (the size a read(n)
asked for, at least one chunk), one pending chunk, and up to n bytes of
output. Chunks are sealed or opened straight into one reusable output
buffer, and read(n) copies out of it once, so reading 1 MiB at a time costs
one memcpy per byte beyond the cipher itself.

The payload is a 16-byte random nonce, then 64 KiB plaintext chunks sealed
with ChaCha20-Poly1305 under HKDF-SHA-256(file key, nonce, "payload"); the
AEAD nonce is an 11-byte big-endian chunk counter and a last-chunk flag
byte. The recipient type only changes the header: an X25519, post-quantum
or passphrase stanza wraps the same 16-byte file key, which is why a PQ
recipient costs one KEM operation per object and nothing per byte.

Decryption releases only authenticated bytes, and returns b"" (the end) only
after the final chunk authenticated and the source reported its end. It
refuses, naming the object, a malformed or tampered header, a wrong key or
passphrase, a header from another file, flipped bits, reordered, dropped or
duplicated chunks, truncation anywhere, a missing final chunk, an empty
final chunk after data, and trailing data; after an error every later read
raises the same error. Armored input (`age -a`) is recognised and decoded on
the fly.

Recipient rules on encryption: a passphrase (scrypt) is always alone, as the
spec requires. Post-quantum and X25519 recipients may be mixed, which the
operator asked for (a classic break-glass key next to a new PQ key), but the
spec says SHOULD NOT and stock age 1.3 refuses it: such a file is only as
strong as X25519, so the mix is logged as a warning, once per recipient set
per process, naming what to change.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vkbackup.crypto.armor import ArmorReader
from vkbackup.crypto.header import (
    encode_header,
    find_header_end,
    header_mac,
    hkdf_sha256,
)
from vkbackup.crypto.recipients import (
    HybridRecipient,
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
)
from vkbackup.errors import CryptoError, WrongKeyError
from vkbackup.logs import get_logger
from vkbackup.streams import BytesReader, Readable

log = get_logger("crypto.age")

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
PAYLOAD_NONCE_SIZE = 16
FILE_KEY_SIZE = 16
MAX_HEADER_SIZE = 1024 * 1024
_HEADER_READ = 16 * 1024
_ALL_READ = 1024 * 1024
_MAX_RESERVE = 16 * 1024 * 1024
_WHITESPACE = b" \t\r\n"

# 12-byte AEAD nonce: 3 zero bytes + 8-byte counter = 11-byte big-endian counter, then the flag.
_NONCE = struct.Struct(">3xQB")

Buffer = bytes | memoryview

# cryptography >= 45 can seal and open straight into a caller's buffer; older
# releases return new bytes that are then copied in.
_HAS_INTO = hasattr(ChaCha20Poly1305, "encrypt_into")


class _Output:
    """A reusable output buffer: chunks are sealed/opened into it, read(n) copies out once.

    Holding output in one warm bytearray (instead of joining fresh per-chunk
    bytes objects) keeps the per-MiB overhead at a single memcpy. Ready bytes
    are ``[_start:_end]``; space is reclaimed only when a new slot needs it, so
    many small reads cost no more than one big one.
    """

    __slots__ = ("_buf", "_end", "_start", "_view")

    def __init__(self) -> None:
        self._buf = bytearray(2 * SEALED_CHUNK_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    @property
    def size(self) -> int:
        """Bytes ready to be taken."""
        return self._end - self._start

    def _make_room(self, capacity: int) -> None:
        ready = self._end - self._start
        if self._start:
            self._view[:ready] = self._view[self._start : self._end]
            self._start, self._end = 0, ready
        if capacity > len(self._buf):
            bigger = bytearray(capacity)
            bigger[:ready] = self._view[:ready]
            self._view.release()
            self._buf = bigger
            self._view = memoryview(bigger)

    def reserve(self, n: int) -> None:
        """Size the buffer for a read(n): n bytes plus two sealed chunks of slack.

        Reads larger than 16 MiB are not reserved up front (the buffer grows
        as data arrives), so read(huge) does not allocate "huge" on its own.
        """
        want = min(n, _MAX_RESERVE) + 2 * SEALED_CHUNK_SIZE
        if want > len(self._buf):
            self._make_room(want)

    def slot(self, k: int) -> memoryview:
        """Return a writable view of the next *k* bytes (commit() them once written)."""
        if self._end + k > len(self._buf):
            ready = self._end - self._start
            capacity = len(self._buf)
            if ready + k > capacity:
                capacity = max(ready + k, 2 * capacity)
            self._make_room(capacity)
        return self._view[self._end : self._end + k]

    def commit(self, k: int) -> None:
        self._end += k

    def write(self, data: Buffer) -> None:
        self.slot(len(data))[:] = data
        self.commit(len(data))

    def take(self, n: int) -> bytes:
        """Return up to *n* bytes from the front."""
        n = min(n, self._end - self._start)
        out = bytes(self._view[self._start : self._start + n])
        self._start += n
        if self._start == self._end:
            self._start = self._end = 0
        return out

    def take_all(self) -> bytes:
        return self.take(self.size)


_warned_mixes: set[frozenset[Recipient]] = set()


def _check_recipients(recipients: Sequence[Recipient]) -> None:
    if not recipients:
        raise CryptoError("no recipients to encrypt to")
    if len(recipients) > 1 and any(isinstance(r, ScryptRecipient) for r in recipients):
        raise CryptoError("a passphrase (scrypt) recipient must be the only recipient")
    pq = [r for r in recipients if isinstance(r, HybridRecipient)]
    if pq and len(pq) < len(recipients):
        key = frozenset(recipients)  # hashed by key bytes, not by their long Bech32 form
        if key not in _warned_mixes:
            _warned_mixes.add(key)
            log.warning(
                "encrypting to %d post-quantum (age1pq1...) and %d classic recipient(s): the "
                "objects are only as strong as X25519, not quantum-safe, and stock age 1.3 "
                "refuses to write such files; list only age1pq1... recipients to keep "
                "post-quantum protection",
                len(pq),
                len(recipients) - len(pq),
            )


class EncryptingReader:
    """Read plaintext from *src*; return the age v1 file encrypting it to *recipients*."""

    def __init__(self, src: Readable, recipients: Sequence[Recipient]) -> None:
        _check_recipients(recipients)
        file_key = os.urandom(FILE_KEY_SIZE)
        stanzas = [s for r in recipients for s in r.wrap(file_key)]
        if len(stanzas) > 1 and any(s.type == "scrypt" for s in stanzas):
            raise CryptoError("a passphrase (scrypt) recipient must be the only recipient")
        nonce = os.urandom(PAYLOAD_NONCE_SIZE)
        self._aead = ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))
        self._src = src
        self._out = _Output()
        self._out.write(encode_header(file_key, stanzas) + nonce)
        # Plaintext not yet sealed: up to one chunk, held until we know whether
        # more data follows (the last chunk carries the final flag).
        self._pending: Buffer = b""
        self._counter = 0
        self._eof = False

    def _seal(self, chunk: Buffer, final: bool) -> None:
        nonce = _NONCE.pack(self._counter, 1 if final else 0)
        k = len(chunk) + TAG_SIZE
        if _HAS_INTO:
            self._aead.encrypt_into(nonce, chunk, None, self._out.slot(k))
        else:  # pragma: no cover - cryptography < 45
            self._out.slot(k)[:] = self._aead.encrypt(nonce, chunk, None)
        self._out.commit(k)
        self._counter += 1

    def _fill(self, want: int) -> None:
        # Ask for whole chunks: when the source returns what was asked, the
        # pending chunk is always complete and never needs joining.
        data = self._src.read(max(1, -(-want // SEALED_CHUNK_SIZE)) * CHUNK_SIZE)
        if not data:
            # Non-empty unless the whole payload is empty (then one empty final chunk).
            self._seal(self._pending, final=True)
            self._pending = b""
            self._eof = True
            return
        view = memoryview(data)
        pending = self._pending
        if pending:
            if len(pending) < CHUNK_SIZE:
                take = CHUNK_SIZE - len(pending)
                pending = bytes(pending) + view[:take]
                view = view[take:]
                if not view:
                    self._pending = pending
                    return
            self._seal(pending, final=False)
        while len(view) > CHUNK_SIZE:
            self._seal(view[:CHUNK_SIZE], final=False)
            view = view[CHUNK_SIZE:]
        self._pending = view

    def read(self, n: int = -1, /) -> bytes:
        """Return up to *n* bytes of the age file (all of it if n < 0); b"" at the end."""
        if n is None or n < 0:
            while not self._eof:
                self._fill(_ALL_READ)
            return self._out.take_all()
        self._out.reserve(n)
        while self._out.size < n and not self._eof:
            self._fill(n - self._out.size)
        return self._out.take(n)


def _public_keys(identities: Sequence[Identity]) -> list[str]:
    """The public keys (age1..., shortened) of the identities that have one: named
    in a "no identity matches" error, to compare with the intended recipients."""
    out: list[str] = []
    for i in identities:
        recipient = getattr(i, "recipient", None)
        if callable(recipient):
            text = str(recipient())
            out.append(text if len(text) <= 70 else f"{text[:24]}...{text[-8:]}")
    return out


class _PrefixedReader:
    """A Readable that returns *prefix* first, then whatever *src* returns."""

    def __init__(self, prefix: bytes, src: Readable) -> None:
        self._prefix = BytesReader(prefix)
        self._left = len(prefix)
        self._src = src

    def read(self, n: int = -1, /) -> bytes:
        if self._left:
            data = self._prefix.read(n if n is not None and n >= 0 else -1)
            self._left -= len(data)
            return data
        return self._src.read(n)


class DecryptingReader:
    """Read an age v1 file from *src*; return its authenticated plaintext."""

    def __init__(
        self, src: Readable, identities: Sequence[Identity], name: str = "<stdin>"
    ) -> None:
        if not identities:
            raise CryptoError(f"{name}: no identity to decrypt with")
        self._src = src
        self._identities = list(identities)
        self._name = name
        self._aead: ChaCha20Poly1305 | None = None
        self._out = _Output()
        # Ciphertext not yet opened: up to one sealed chunk, held until we know
        # whether it is the last one (then it must carry the final flag).
        self._pending: Buffer = b""
        self._counter = 0
        self._eof = False
        self._error: CryptoError | None = None

    def _fail(
        self, why: str, hint: str | None = None, kind: type[CryptoError] = CryptoError
    ) -> CryptoError:
        self._error = kind(f"{self._name}: {why}", hint=hint)
        return self._error

    # -- header ----------------------------------------------------------

    def _start(self) -> None:
        buf = bytearray()
        armor_checked = False
        while True:
            if not armor_checked:
                stripped = buf.lstrip(_WHITESPACE)
                if stripped:
                    armor_checked = True
                    if stripped.startswith(b"-"):
                        # ASCII armor (age -a): decode it on the fly and start over.
                        self._src = ArmorReader(_PrefixedReader(bytes(buf), self._src), self._name)
                        buf = bytearray()
                        continue
            if armor_checked:
                try:
                    parsed = find_header_end(buf)
                except ValueError as e:
                    raise self._fail(f"not a valid age file: {e}") from None
                if parsed is not None:
                    break
            if len(buf) > MAX_HEADER_SIZE:
                raise self._fail("not a valid age file: header larger than 1 MiB")
            data = self._src.read(_HEADER_READ)
            if not data:
                if not buf.strip(_WHITESPACE):
                    raise self._fail("empty input: not an age file")
                raise self._fail("truncated inside the age header")
            buf += data

        stanzas = parsed.stanzas
        if len(stanzas) > 1 and any(s.type == "scrypt" for s in stanzas):
            raise self._fail("an scrypt (passphrase) stanza is mixed with other stanzas")
        file_key: bytes | None = None
        for identity in self._identities:
            try:
                file_key = identity.unwrap(stanzas)
            except CryptoError as e:
                raise self._fail(str(e), e.hint, type(e)) from None
            if file_key is not None:
                break
        if file_key is None:
            have_passphrase = any(isinstance(i, ScryptIdentity) for i in self._identities)
            if stanzas[0].type == "scrypt":
                if have_passphrase:
                    raise self._fail(
                        "incorrect passphrase (or the header was tampered with)",
                        kind=WrongKeyError,
                    )
                raise self._fail(
                    "is passphrase-encrypted (age -p) and no passphrase was given",
                    "decrypt it with a passphrase instead of an identity file",
                    WrongKeyError,
                )
            kinds = ", ".join(sorted({s.type for s in stanzas}))
            only_passphrase = all(isinstance(i, ScryptIdentity) for i in self._identities)
            tried = _public_keys(self._identities)
            raise self._fail(
                f"no identity matches any of its {len(stanzas)} recipient stanza(s) "
                f"({kinds}): wrong key, or the header was tampered with"
                + (f" (tried the identity of {', '.join(tried)})" if tried else ""),
                "it is encrypted to public keys: an identity file is needed, not a passphrase"
                if only_passphrase
                else None,
                # no identity at all (a passphrase for a public-key file) is a usage
                # problem, exit 1; an identity that is not a recipient is exit 12
                CryptoError if only_passphrase else WrongKeyError,
            )
        if not hmac.compare_digest(header_mac(file_key, parsed.mac_input), parsed.mac):
            raise self._fail("header MAC mismatch: the header was modified")

        rest = bytes(buf[parsed.end :])
        while len(rest) < PAYLOAD_NONCE_SIZE:
            data = self._src.read(_HEADER_READ)
            if not data:
                raise self._fail("truncated: the payload nonce is incomplete")
            rest += data
        nonce = rest[:PAYLOAD_NONCE_SIZE]
        self._aead = ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))
        if len(rest) > PAYLOAD_NONCE_SIZE:
            self._feed(memoryview(rest)[PAYLOAD_NONCE_SIZE:])

    # -- payload ---------------------------------------------------------

    def _try_open(self, chunk: Buffer, final: bool) -> int | None:
        """Open *chunk* into the output buffer (not yet committed); return its length.

        Return None if it does not authenticate; whatever was written to the
        uncommitted slot is then never returned to the caller.
        """
        assert self._aead is not None
        nonce = _NONCE.pack(self._counter, 1 if final else 0)
        k = len(chunk) - TAG_SIZE
        try:
            if _HAS_INTO:
                self._aead.decrypt_into(nonce, chunk, None, self._out.slot(k))
            else:  # pragma: no cover - cryptography < 45
                self._out.slot(k)[:] = self._aead.decrypt(nonce, chunk, None)
        except InvalidTag:
            return None
        return k

    def _open_middle(self, chunk: Buffer) -> None:
        """Open a full chunk that more data follows."""
        k = self._try_open(chunk, final=False)
        if k is None:
            if self._try_open(chunk, final=True) is not None:
                raise self._fail(f"trailing data after the final chunk (chunk {self._counter})")
            raise self._fail(
                f"chunk {self._counter} failed authentication "
                "(modified, reordered, dropped, duplicated, or from another file)"
            )
        self._out.commit(k)
        self._counter += 1

    def _open_last(self, chunk: Buffer) -> None:
        """Open the chunk that the end of input follows: it must be the final chunk."""
        if len(chunk) < TAG_SIZE:
            raise self._fail(f"truncated: chunk {self._counter} is shorter than its tag")
        k = self._try_open(chunk, final=True)
        if k is None:
            if len(chunk) == SEALED_CHUNK_SIZE and self._try_open(chunk, final=False) is not None:
                raise self._fail(
                    f"truncated after chunk {self._counter}: the final chunk is missing"
                )
            raise self._fail(
                f"chunk {self._counter} failed authentication as the final chunk "
                "(truncated, modified, or trailing data)"
            )
        if k == 0 and self._counter > 0:
            raise self._fail("empty final chunk after data (not allowed by age v1)")
        self._out.commit(k)
        self._counter += 1

    def _feed(self, view: memoryview) -> None:
        pending = self._pending
        if pending:
            if len(pending) < SEALED_CHUNK_SIZE:
                take = SEALED_CHUNK_SIZE - len(pending)
                pending = bytes(pending) + view[:take]
                view = view[take:]
                if not view:
                    self._pending = pending
                    return
            self._open_middle(pending)
        while len(view) > SEALED_CHUNK_SIZE:
            self._open_middle(view[:SEALED_CHUNK_SIZE])
            view = view[SEALED_CHUNK_SIZE:]
        self._pending = view

    def _fill(self, want: int) -> None:
        # Ask for whole sealed chunks (see EncryptingReader._fill).
        data = self._src.read(max(1, -(-want // CHUNK_SIZE)) * SEALED_CHUNK_SIZE)
        if data:
            self._feed(memoryview(data))
            return
        if not self._pending:
            raise self._fail("truncated: no payload after the header")
        self._open_last(self._pending)
        self._pending = b""
        self._eof = True

    def read(self, n: int = -1, /) -> bytes:
        """Return up to *n* plaintext bytes (all if n < 0); b"" only after the final chunk."""
        if self._error is not None:
            raise self._error
        try:
            return self._read(n)
        except CryptoError as e:  # sticky: a broken stream stays broken
            self._error = e
            raise

    def _read(self, n: int) -> bytes:
        if self._aead is None:
            self._start()
        if n is None or n < 0:
            while not self._eof:
                self._fill(_ALL_READ)
            return self._out.take_all()
        self._out.reserve(n)
        while self._out.size < n and not self._eof:
            self._fill(n - self._out.size)
        return self._out.take(n)


def encrypt_bytes(data: bytes, recipients: Sequence[Recipient]) -> bytes:
    """Given plaintext bytes, return the age file encrypting them to *recipients*."""
    return EncryptingReader(BytesReader(data), recipients).read(-1)


def decrypt_bytes(data: bytes, identities: Sequence[Identity], name: str = "<bytes>") -> bytes:
    """Given an age file's bytes, return the plaintext. Raise CryptoError naming *name*."""
    return DecryptingReader(BytesReader(data), identities, name).read(-1)
