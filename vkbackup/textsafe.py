"""Names from a host, a config or a manifest, made safe to print on a terminal.

A container, volume, path or error message that came from a prod host or from
storage is data someone else chose. Printed as it is, an ESC sequence in it
can rewrite the screen (hide a line, fake an "ok", retitle the window, on some
terminals answer back into the input), a CR can overwrite what came before on
the same line, and a newline can forge a whole line of output. `printable`
shows every such character as a visible escape instead, so what reaches the
terminal is exactly one line of inert text that still says which odd bytes
the name held.

What is escaped: the C0 controls, DEL and the C1 controls (U+0080..U+009F,
which some terminals read as CSI and OSC), the Unicode line and paragraph
separators, the bidirectional overrides and isolates (they reorder what the
eye reads, "Trojan source"), and lone surrogates (bytes that were not UTF-8,
decoded with surrogateescape: printing one would raise, so it is shown as the
byte it stands for). Everything else, any script or emoji, is left alone.

Backslashes are not doubled: the function is idempotent, so text that was
already sanitised can go through it again (a formatter and the printer that
prints its lines may both apply it) without growing.

JSON output needs none of this: `json.dumps` escapes control characters
itself, and --json must stay exact.
"""

from __future__ import annotations

import unicodedata

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT:
        return _SHORT[ch]
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte itself
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    if ch in _BIDI:
        return True
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")


def printable(text: str) -> str:
    """Given text from outside (a name, a path, an error), return it with every
    character that could steer a terminal shown as a visible escape ("\\x1b",
    "\\r", "\\u202e"); plain text comes back unchanged."""
    if text.isprintable() and not any(ch in _BIDI for ch in text):
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)
