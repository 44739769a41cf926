"""Bech32 as age uses it: BIP 173 checksums, no length limit, one case only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vkbackup.crypto import bech32
from vkbackup.errors import CryptoError

# From the C2SP age specification (X25519 recipient type section).
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"


@pytest.mark.parametrize(
    "valid",
    ["A12UEL5L", "a12uel5l", "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw", "?1ezyfcl"],
)
def test_bip173_valid_strings_decode(valid: str) -> None:
    hrp, data = bech32.decode(valid)
    assert hrp == valid[: valid.rfind("1")]
    assert bech32.encode(hrp, data) == valid.lower()


def test_spec_identity_decodes_to_32_bytes_and_reencodes() -> None:
    hrp, data = bech32.decode(SPEC_IDENTITY)
    assert hrp == "AGE-SECRET-KEY-"
    assert len(data) == 32
    assert bech32.encode(hrp, data).upper() == SPEC_IDENTITY


def test_uppercase_and_lowercase_give_the_same_bytes() -> None:
    assert bech32.decode(SPEC_RECIPIENT.upper())[1] == bech32.decode(SPEC_RECIPIENT)[1]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwJ", "mixed-case"),
        ("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwk", "checksum"),
        ("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwb", "character"),
        ("agezvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj", "separator"),
        ("1qqqqqq", "separator"),
        ("age1qqqq", "separator"),
        ("age 1zvkyg2lqzraa2lnj", "printable"),
    ],
)
def test_invalid_strings_are_refused(bad: str, why: str) -> None:
    with pytest.raises(CryptoError, match=why):
        bech32.decode(bad)


def test_every_single_character_change_is_detected() -> None:
    for i in range(len("age1"), len(SPEC_RECIPIENT)):
        for c in bech32.CHARSET:
            if c == SPEC_RECIPIENT[i]:
                continue
            mutated = SPEC_RECIPIENT[:i] + c + SPEC_RECIPIENT[i + 1 :]
            with pytest.raises(CryptoError):
                bech32.decode(mutated)


def test_non_zero_padding_bits_are_refused() -> None:
    # 1 byte = 8 bits -> two 5-bit groups with 2 padding bits; set them.
    good = bech32.encode("x", b"\xff")
    assert bech32.decode(good) == ("x", b"\xff")
    values = [bech32.CHARSET.index(c) for c in good[2:-6]]
    values[-1] |= 1  # a padding bit
    polymod = bech32._polymod([*bech32._hrp_expand("x"), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    forged = "x1" + "".join(bech32.CHARSET[v] for v in values + checksum)
    with pytest.raises(CryptoError, match="padding"):
        bech32.decode(forged)


@given(
    hrp=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20),
    data=st.binary(max_size=200),
)
def test_round_trip_without_length_limit(hrp: str, data: bytes) -> None:
    s = bech32.encode(hrp, data)
    assert bech32.decode(s) == (hrp, data)
    assert bech32.decode(s.upper()) == (hrp.upper(), data)
