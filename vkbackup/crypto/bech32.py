"""Bech32 (BIP 173) as the age format uses it: no length limit on the data part.

Interface:
    encode(hrp: str, data: bytes) -> str
        Given a human-readable part and raw bytes, return the lowercase Bech32
        string ``hrp || "1" || data-and-checksum``. Callers that want the
        uppercase form (age secret keys) call ``.upper()`` on the result.
    decode(s: str) -> tuple[str, bytes]
        Given a Bech32 string, return (hrp as written, raw bytes). Raise
        CryptoError if the string mixes cases, has characters outside the
        charset, has no separator, a bad checksum, or non-zero padding bits.

The checksum is always computed over the lowercase string, so an all-uppercase
string (``AGE-SECRET-KEY-1...``) decodes to the same bytes as its lowercase form.
The hrp keeps its case so that callers can insist on one (age wants ``age`` for
recipients and ``AGE-SECRET-KEY-`` for identities).
"""

from __future__ import annotations

from vkbackup.errors import CryptoError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_GENERATORS):
            if (top >> i) & 1:
                chk ^= g
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    """Regroup *data* from from_bits-wide to to_bits-wide integers.

    Raise CryptoError if, without padding, leftover bits are too many or non-zero.
    """
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise CryptoError("invalid Bech32 padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Given an hrp and raw bytes, return the lowercase Bech32 encoding.

    Raise CryptoError if the hrp is empty or has characters outside 33..126.
    """
    hrp = hrp.lower()
    if not hrp or any(not 33 <= ord(c) <= 126 for c in hrp):
        raise CryptoError(f"invalid Bech32 human-readable part {hrp!r}")
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[v] for v in values + checksum)


def decode(s: str) -> tuple[str, bytes]:
    """Given a Bech32 string, return (hrp as written, data bytes).

    Raise CryptoError if it is mixed-case, malformed, or its checksum is wrong.
    """
    if s.lower() != s and s.upper() != s:
        raise CryptoError("mixed-case Bech32 string")
    if any(not 33 <= ord(c) <= 126 for c in s):
        raise CryptoError("Bech32 string has characters outside printable ASCII")
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise CryptoError("Bech32 string has no separator or is too short")
    hrp = s[:pos]
    try:
        values = [_CHARSET_REV[c] for c in s[pos + 1 :].lower()]
    except KeyError:
        raise CryptoError("invalid Bech32 character") from None
    if _polymod(_hrp_expand(hrp.lower()) + values) != 1:
        raise CryptoError("invalid Bech32 checksum")
    data = _convert_bits(values[:-6], 5, 8, pad=False)
    return hrp, bytes(data)
