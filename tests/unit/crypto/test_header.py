"""The age header grammar: strict parsing, canonical base64, the MAC input."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vkbackup.crypto.header import (
    Stanza,
    b64decode,
    b64encode,
    encode_header,
    find_header_end,
    header_mac,
)

KEY = bytes(range(16))


def test_b64_is_unpadded_and_round_trips() -> None:
    assert b64encode(b"\x00") == "AA"
    assert b64decode("AA") == b"\x00"
    assert b64decode("") == b""


@pytest.mark.parametrize("bad", ["AB", "AA==", "A", "AA=", "A-", "QUJD\n", "QU JD"])
def test_b64_refuses_non_canonical_or_padded(bad: str) -> None:
    with pytest.raises(ValueError):
        b64decode(bad)


@given(st.binary(max_size=300))
def test_b64_round_trip(data: bytes) -> None:
    assert b64decode(b64encode(data)) == data


def test_stanza_body_of_exactly_48_bytes_ends_with_an_empty_line() -> None:
    wire = Stanza("t", ("a",), bytes(48)).encode()
    lines = wire.split(b"\n")
    assert lines[0] == b"-> t a"
    assert len(lines[1]) == 64
    assert lines[2] == b"" and lines[3] == b""  # the empty final line, then the split's tail


@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcXYZ019+/-.", min_size=1, max_size=12),
            st.lists(st.text(alphabet="abcXYZ019+/=", min_size=1, max_size=10), max_size=3),
            st.binary(max_size=200),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_header_round_trips_and_mac_covers_up_to_dashes(
    raw: list[tuple[str, list[str], bytes]],
) -> None:
    stanzas = [Stanza(t, tuple(a), b) for t, a, b in raw]
    header = encode_header(KEY, stanzas)
    payload = os.urandom(20)
    parsed = find_header_end(header + payload)
    assert parsed is not None
    assert parsed.stanzas == tuple(stanzas)
    assert parsed.end == len(header)
    assert parsed.mac_input == header[: header.rindex(b"---") + 3]
    assert parsed.mac == header_mac(KEY, parsed.mac_input)
    # Every strict prefix is incomplete, never an error and never a header.
    for cut in range(len(header)):
        assert find_header_end(header[:cut]) is None


GOOD = encode_header(KEY, [Stanza("X25519", ("A" * 43,), bytes(32))])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h.replace(b"/v1", b"/v2"), "unsupported age version"),
        (lambda h: b"not age\n" + h, "not an age file"),
        (lambda h: h.replace(b"-> X25519", b"->  X25519"), "malformed stanza arguments"),
        (lambda h: h.replace(b"-> X25519", b"-> X25519\x7f"), "malformed stanza arguments"),
        (lambda h: h.replace(b"-> X25519", b"=> X25519"), "malformed header line"),
        (lambda h: h.replace(b"\n---", b"\n--- x\n---"), "malformed header MAC line"),
        (lambda h: h[: h.index(b"---")] + b"---" + b"A" * 44 + b"\n", "malformed header MAC"),
    ],
)
def test_grammar_violations_are_refused(mutate: object, message: str) -> None:
    assert callable(mutate)
    bad = mutate(GOOD)
    with pytest.raises(ValueError, match=message):
        find_header_end(bad + b"payload")


def test_body_line_longer_than_64_columns_is_refused() -> None:
    bad = b"age-encryption.org/v1\n-> t\n" + b"A" * 68 + b"\n\n--- " + b"A" * 43 + b"\n"
    with pytest.raises(ValueError, match="longer than 64"):
        find_header_end(bad)


def test_full_body_line_needs_a_final_short_line() -> None:
    # A 64-column line followed directly by "---" is not a complete stanza body.
    bad = b"age-encryption.org/v1\n-> t\n" + b"A" * 64 + b"\n--- " + b"A" * 43 + b"\n"
    with pytest.raises(ValueError):
        find_header_end(bad)


def test_header_without_stanza_is_refused() -> None:
    with pytest.raises(ValueError, match="no recipient stanza"):
        find_header_end(b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n")


def test_non_canonical_body_is_refused() -> None:
    # One 32-byte body encodes as 43 chars whose last carries 2 unused bits.
    line = b64encode(bytes(32)).encode()
    bad = GOOD.replace(b"\n" + line + b"\n", b"\n" + line[:-1] + b"B\n")
    assert bad != GOOD
    with pytest.raises(ValueError, match="malformed stanza body"):
        find_header_end(bad)
