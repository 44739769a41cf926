"""ASCII armor: what `age -a` writes decodes; anything looser is refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.crypto.conftest import ChunkyReader
from vkbackup.crypto import decrypt_bytes, encrypt_bytes, generate_identity
from vkbackup.crypto.armor import BEGIN, END, ArmorReader, armor_encode, looks_armored
from vkbackup.errors import CryptoError
from vkbackup.streams import BytesReader


def decode(text: bytes, sizes: list[int] | None = None) -> bytes:
    src = ChunkyReader(text, sizes) if sizes else BytesReader(text)
    return ArmorReader(src, "obj.age").read(-1)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=2000),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    read=st.integers(1, 500),
)
def test_round_trip_with_short_reads(data: bytes, sizes: list[int], read: int) -> None:
    text = armor_encode(data)
    assert text.startswith(BEGIN + b"\n") and text.endswith(END + b"\n")
    assert all(len(line) <= 64 for line in text.split(b"\n"))
    reader = ArmorReader(ChunkyReader(text, sizes), "obj.age")
    out = b""
    while chunk := reader.read(read):
        assert len(chunk) <= read
        out += chunk
    assert out == data


def test_crlf_and_surrounding_whitespace_are_accepted() -> None:
    data = bytes(range(256)) * 3
    text = armor_encode(data).replace(b"\n", b"\r\n")
    assert decode(b"\n  \t" + text + b"\r\n \n") == data


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda t: t + b"garbage\n", "data after the END line"),
        (lambda t: t.replace(END + b"\n", b""), "no END line"),
        (lambda t: t.replace(BEGIN, b"-----BEGIN AGE FILE-----"), "missing BEGIN"),
        (lambda t: b"x" + t, "missing BEGIN"),
        (lambda t: t.replace(b"\n", b"\nA", 2).replace(b"\nA", b"\n", 1), "wrong length"),
        (lambda t: t.replace(b"==\n", b"=\n"), "bad base64"),
        (lambda t: b" " * 2000 + t, "leading whitespace"),
    ],
)
def test_malformed_armor_is_refused(mutate: object, why: str) -> None:
    assert callable(mutate)
    text = armor_encode(bytes(100))  # 100 bytes: 2 full lines + one "==" padded line
    with pytest.raises(CryptoError, match=f"obj.age: invalid ASCII armor: .*{why}"):
        decode(mutate(text))


def test_short_line_before_the_last_is_refused() -> None:
    body = base64.b64encode(bytes(200))
    lines = [body[:60], body[60:]]
    text = BEGIN + b"\n" + b"\n".join(lines) + b"\n" + END + b"\n"
    with pytest.raises(CryptoError, match="short base64 line"):
        decode(text)


def test_non_canonical_padding_bits_are_refused() -> None:
    text = BEGIN + b"\nAB==\n" + END + b"\n"  # canonical form of b"\x00" is "AA=="
    with pytest.raises(CryptoError, match="non-canonical"):
        decode(text)


def test_looks_armored() -> None:
    assert looks_armored(b"\n " + BEGIN + b"\nxx")
    assert not looks_armored(b"age-encryption.org/v1\n")
    assert not looks_armored(b"   ")


@pytest.mark.parametrize("ending", [b"", b"\r"])
@pytest.mark.parametrize("size", [0, 1, 47, 48, 100])
def test_end_line_without_final_newline_decodes(ending: bytes, size: int) -> None:
    data = bytes(range(256))[:size]
    text = armor_encode(data)
    assert text.endswith(END + b"\n")
    cut = text[:-1]
    if ending:  # a CRLF file that lost its last LF
        cut = cut.replace(b"\n", b"\r\n") + ending
    assert decode(cut) == data
    assert decode(cut, [1, 7, 64]) == data  # the last line may arrive in pieces


def test_without_final_newline_other_rules_still_hold() -> None:
    text = armor_encode(bytes(100))[:-1]
    with pytest.raises(CryptoError, match="no END line"):
        decode(text[: -len(END)])  # cut inside the armor: still truncated
    with pytest.raises(CryptoError, match="invalid ASCII armor"):
        decode(text[:-1])  # "-----END AGE ENCRYPTED FILE----" is not END
    with pytest.raises(CryptoError, match="data after the END line"):
        decode(text + b"\ngarbage")


def test_armored_age_file_without_final_newline_decrypts() -> None:
    ident = generate_identity()
    ct = armor_encode(encrypt_bytes(b"payload" * 1000, [ident.recipient()]))
    assert decrypt_bytes(ct.rstrip(b"\n"), [ident]) == b"payload" * 1000
