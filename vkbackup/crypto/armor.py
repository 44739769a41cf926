"""age ASCII armor: strict PEM with the label "AGE ENCRYPTED FILE".

Armor is a convenience for copy and paste, and its danger is malleability: a
lax decoder would let many texts map to one file. So the reader accepts what
stock `age -a` writes and nothing looser, as the spec asks: whitespace
before BEGIN and after END, LF or CRLF line endings, full 64-column lines and
one shorter last line, canonical base64, and a last line without its final
newline (an editor or a copy that dropped it changes no byte of the file, and
the C2SP testkit's armor_no_eol vector requires it to decrypt). Anything else,
including data after END, raises CryptoError naming the object.

Decoding streams one line at a time, so an armored snapshot object costs no
more memory than a binary one; `looks_armored` lets callers decide from a
file's first bytes.
"""

from __future__ import annotations

import base64
import binascii

from vkbackup.errors import CryptoError
from vkbackup.streams import Readable

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
_WHITESPACE = b" \t\r\n"
_MAX_SURROUNDING_WHITESPACE = 1024
_READ_SIZE = 64 * 1024


def armor_encode(data: bytes) -> bytes:
    """Given binary age file bytes, return their ASCII-armored form."""
    text = base64.b64encode(data)
    lines = [text[i : i + COLUMNS] for i in range(0, len(text), COLUMNS)]
    return BEGIN + b"\n" + b"".join(line + b"\n" for line in lines) + END + b"\n"


def looks_armored(prefix: bytes) -> bool:
    """Given a file's first bytes, return True if they start an armored age file."""
    stripped = prefix.lstrip(_WHITESPACE)
    if not stripped:
        return False
    n = min(len(stripped), len(BEGIN))
    return stripped[:n] == BEGIN[:n] and len(stripped) >= len(BEGIN)


class ArmorReader:
    """Decode an armored age file from *src*; raise CryptoError naming *name* if malformed."""

    def __init__(self, src: Readable, name: str = "<stdin>") -> None:
        self._src = src
        self._name = name
        self._text = bytearray()  # undecoded text read from src
        self._eof = False
        self._state = "begin"  # begin -> body -> trailer -> done
        self._short_seen = False  # a short or padded line ended the data
        self._out = bytearray()

    def _fail(self, why: str) -> CryptoError:
        return CryptoError(f"{self._name}: invalid ASCII armor: {why}")

    def _fill(self) -> bool:
        """Read more text from src; return False at EOF."""
        if self._eof:
            return False
        data = self._src.read(_READ_SIZE)
        if not data:
            self._eof = True
            return False
        self._text += data
        return True

    def _next_line(self) -> bytes | None:
        """Return the next line without its LF/CRLF, or None at EOF.

        A last line that ends at EOF without a newline is still a line.
        """
        while True:
            nl = self._text.find(b"\n")
            if nl >= 0:
                line = bytes(self._text[:nl])
                del self._text[: nl + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._text) > 4 * COLUMNS + _MAX_SURROUNDING_WHITESPACE:
                raise self._fail("line too long")
            if not self._fill():
                if not self._text:
                    return None
                line = bytes(self._text)
                self._text.clear()
                return line[:-1] if line.endswith(b"\r") else line

    def _step(self) -> None:
        if self._state == "begin":
            skipped = 0
            while True:
                while not self._text and self._fill():
                    pass
                stripped = self._text.lstrip(_WHITESPACE)
                skipped += len(self._text) - len(stripped)
                if skipped > _MAX_SURROUNDING_WHITESPACE:
                    raise self._fail("too much leading whitespace")
                self._text = bytearray(stripped)
                if self._text or not self._fill():
                    break
            line = self._next_line()
            if line != BEGIN:
                raise self._fail("missing BEGIN line")
            self._state = "body"
            return
        if self._state == "body":
            line = self._next_line()
            if line is None:
                raise self._fail("truncated (no END line)")
            if line == END:
                self._state = "trailer"
                return
            if self._short_seen:
                raise self._fail("a short base64 line is not the last line")
            if not line or len(line) > COLUMNS:
                raise self._fail("base64 line of the wrong length")
            if len(line) < COLUMNS:
                self._short_seen = True
            try:
                decoded = binascii.a2b_base64(line, strict_mode=True)
            except binascii.Error as e:
                raise self._fail(f"bad base64 ({e})") from None
            if line.endswith(b"="):
                self._short_seen = True  # padding ends the data
            if base64.b64encode(decoded) != line:
                raise self._fail("non-canonical base64")
            self._out += decoded
            return
        if self._state == "trailer":
            while self._fill():
                if len(self._text) > _MAX_SURROUNDING_WHITESPACE:
                    break
            if self._text.strip(_WHITESPACE) or len(self._text) > _MAX_SURROUNDING_WHITESPACE:
                raise self._fail("data after the END line")
            self._text.clear()
            self._state = "done"

    def read(self, n: int = -1, /) -> bytes:
        """Return up to *n* decoded bytes (all if n < 0); b"" only at the end."""
        while (n < 0 or len(self._out) < n) and self._state != "done":
            self._step()
        if n < 0 or n >= len(self._out):
            out = bytes(self._out)
            self._out.clear()
            return out
        out = bytes(self._out[:n])
        del self._out[:n]
        return out
