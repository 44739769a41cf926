"""The age v1 header: recipient stanzas and the header MAC, strictly parsed.

Interface:
    Stanza(type, args, body)            one recipient stanza ("-> type args...\\nbody")
    b64encode(data) -> str              unpadded standard base64
    b64decode(s) -> bytes               unpadded, canonical only (ValueError otherwise)
    header_mac_input(stanzas) -> bytes  the header bytes up to and including "---"
    header_mac(file_key, mac_input) -> bytes
                                        HMAC-SHA-256 keyed with HKDF(file key, "header")
    encode_header(file_key, stanzas) -> bytes
                                        the whole header, MAC line included
    find_header_end(buf) -> ParsedHeader | None
        Given the first bytes of an age file, return the parsed header once its
        MAC line is complete, or None if *buf* ends before that. Raise
        ValueError (the caller adds the object's name) on anything that breaks
        the grammar: wrong version line, bad argument characters, body lines
        longer than 64 columns or non-canonical base64, no stanza, bad MAC line.

Grammar (age v1):
    header = "age-encryption.org/v1" LF 1*stanza "--- " 43base64char LF
    stanza = "-> " arg *(SP arg) LF *(64base64char LF) *63base64char LF
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION_LINE = b"age-encryption.org/v1\n"
VERSION_PREFIX = b"age-encryption.org/"
STANZA_PREFIX = b"-> "
MAC_PREFIX = b"---"
COLUMNS = 64
_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


@dataclass(frozen=True, repr=False)
class Stanza:
    """One recipient stanza: its type (first argument), other arguments, body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def __repr__(self) -> str:
        return f"Stanza({self.type!r}, {self.args!r}, <{len(self.body)} bytes>)"

    def encode(self) -> bytes:
        """Return the stanza's wire form, ending with its (possibly empty) short line."""
        line = " ".join((self.type, *self.args)).encode("ascii")
        body = b64encode(self.body).encode("ascii")
        lines = [b"-> " + line]
        lines.extend(body[i : i + COLUMNS] for i in range(0, len(body), COLUMNS))
        if len(body) % COLUMNS == 0:
            lines.append(b"")
        return b"\n".join(lines) + b"\n"


@dataclass(frozen=True)
class ParsedHeader:
    """A header read from the wire: its stanzas, the MAC, and where it ended."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes  # the header bytes up to and including "---"
    end: int  # offset of the first payload byte in the buffer parsed


def b64encode(data: bytes) -> str:
    """Given bytes, return unpadded standard base64."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(s: str | bytes) -> bytes:
    """Given unpadded base64, return its bytes. Raise ValueError if non-canonical."""
    raw = s.encode("ascii") if isinstance(s, str) else bytes(s)
    if not set(raw) <= _B64_CHARS:
        raise ValueError("invalid base64 characters")
    if len(raw) % 4 == 1:
        raise ValueError("invalid base64 length")
    try:
        data = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
    except binascii.Error as e:
        raise ValueError(f"invalid base64: {e}") from None
    if b64encode(data).encode("ascii") != raw:
        raise ValueError("non-canonical base64")
    return data


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """Return 32 bytes of HKDF-SHA-256(ikm, salt, info)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def header_mac_input(stanzas: Sequence[Stanza]) -> bytes:
    """Given stanzas, return the header bytes the MAC covers (through "---")."""
    return VERSION_LINE + b"".join(s.encode() for s in stanzas) + MAC_PREFIX


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    """Return HMAC-SHA-256 of *mac_input* under HKDF(file_key, salt="", "header")."""
    key = hkdf_sha256(file_key, b"", b"header")
    return hmac.new(key, mac_input, hashlib.sha256).digest()


def encode_header(file_key: bytes, stanzas: Sequence[Stanza]) -> bytes:
    """Given the file key and the stanzas wrapping it, return the full header."""
    mac_input = header_mac_input(stanzas)
    mac = header_mac(file_key, mac_input)
    return mac_input + b" " + b64encode(mac).encode("ascii") + b"\n"


_VCHARS = bytes(range(0x21, 0x7F))


def _is_vchar_arg(arg: bytes) -> bool:
    # translate() in C: a post-quantum stanza's argument is 1494 characters
    return bool(arg) and not arg.translate(None, _VCHARS)


def find_header_end(buf: bytes | bytearray) -> ParsedHeader | None:
    """Given the first bytes of an age file, return its parsed header or None if incomplete.

    Raise ValueError naming the broken rule if the bytes cannot be an age v1 header.
    """
    pos = 0

    def next_line() -> bytes | None:
        nonlocal pos
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return None
        line = bytes(buf[pos:nl])
        pos = nl + 1
        return line

    first = next_line()
    if first is None:
        head = bytes(buf[: len(VERSION_PREFIX)])
        if not VERSION_PREFIX.startswith(head):
            raise ValueError("not an age file (no age-encryption.org version line)")
        if len(buf) > 256:
            raise ValueError("version line too long")
        return None
    if first + b"\n" != VERSION_LINE:
        if first.startswith(VERSION_PREFIX):
            raise ValueError(f"unsupported age version {first.decode('ascii', 'replace')!r}")
        raise ValueError("not an age file (no age-encryption.org version line)")

    stanzas: list[Stanza] = []
    while True:
        line_start = pos
        line = next_line()
        if line is None:
            return None
        if line.startswith(MAC_PREFIX):
            if not stanzas:
                raise ValueError("header has no recipient stanza")
            if not line.startswith(b"--- ") or len(line) != 4 + 43:
                raise ValueError("malformed header MAC line")
            try:
                mac = b64decode(line[4:])
            except ValueError as e:
                raise ValueError(f"malformed header MAC: {e}") from None
            mac_input = bytes(buf[: line_start + len(MAC_PREFIX)])
            return ParsedHeader(tuple(stanzas), mac, mac_input, pos)
        if not line.startswith(STANZA_PREFIX):
            raise ValueError("malformed header line (expected '-> ' or '---')")
        args = line[len(STANZA_PREFIX) :].split(b" ")
        if not all(_is_vchar_arg(a) for a in args):
            raise ValueError("malformed stanza arguments")
        body_lines: list[bytes] = []
        while True:
            body_line = next_line()
            if body_line is None:
                return None
            if len(body_line) > COLUMNS:
                raise ValueError("stanza body line longer than 64 columns")
            body_lines.append(body_line)
            if len(body_line) < COLUMNS:
                break
        try:
            body = b64decode(b"".join(body_lines))
        except ValueError as e:
            raise ValueError(f"malformed stanza body: {e}") from None
        decoded = [a.decode("ascii") for a in args]
        stanzas.append(Stanza(decoded[0], tuple(decoded[1:]), body))
