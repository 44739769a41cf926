"""The age v1 readers: round trips, bounded memory, and every tampering refused."""

from __future__ import annotations

import os
import random
import tracemalloc
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.crypto.conftest import ChunkyReader, PatternReader
from vkbackup.crypto import (
    DecryptingReader,
    EncryptingReader,
    Identity,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt_bytes,
    encrypt_bytes,
    generate_identity,
)
from vkbackup.crypto.age import SEALED_CHUNK_SIZE
from vkbackup.crypto.armor import armor_encode
from vkbackup.crypto.header import Stanza, b64encode, encode_header, hkdf_sha256
from vkbackup.errors import CryptoError
from vkbackup.streams import BytesReader

CHUNK = 64 * 1024
ALICE = generate_identity()
BOB = generate_identity()
NAME = "snapshots/2026/db.dump.age"


def read_all(reader: EncryptingReader | DecryptingReader, n: int) -> bytes:
    parts: list[bytes] = []
    while True:
        chunk = reader.read(n)
        assert len(chunk) <= n
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def decrypt(data: bytes, identities: Sequence[Identity] = (ALICE,), n: int = 1 << 20) -> bytes:
    return read_all(DecryptingReader(BytesReader(data), identities, NAME), n)


def refuse(data: bytes, match: str, identities: Sequence[Identity] = (ALICE,)) -> None:
    with pytest.raises(CryptoError, match=match) as info:
        decrypt(data, identities)
    assert str(info.value).startswith(NAME + ": ")


def split(ct: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """Given an age file, return (header, payload nonce, sealed chunks)."""
    end = ct.index(b"\n", ct.index(b"\n---") + 1) + 1
    header, nonce, rest = ct[:end], ct[end : end + 16], ct[end + 16 :]
    chunks = [rest[i : i + SEALED_CHUNK_SIZE] for i in range(0, len(rest), SEALED_CHUNK_SIZE)]
    return header, nonce, chunks


def craft(
    chunks: Sequence[tuple[bytes, bool]],
    stanzas: Sequence[Stanza] | None = None,
    file_key: bytes | None = None,
) -> bytes:
    """Build an age file by hand, with chosen chunk contents and final flags."""
    file_key = file_key or os.urandom(16)
    if stanzas is None:
        stanzas = ALICE.recipient().wrap(file_key)
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))
    body = b"".join(
        aead.encrypt(i.to_bytes(11, "big") + bytes([final]), pt, None)
        for i, (pt, final) in enumerate(chunks)
    )
    return encode_header(file_key, stanzas) + nonce + body


PLAIN = random.Random(1).randbytes(3 * CHUNK + 1000)  # 4 chunks, the last one short
CT = encrypt_bytes(PLAIN, [ALICE.recipient()])


# -- round trips ---------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * CHUNK + 7])
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    data = os.urandom(size)
    ct = encrypt_bytes(data, [ALICE.recipient()])
    header, _, chunks = split(ct)
    assert header.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert len(chunks) == max(1, -(-size // CHUNK))  # never an empty extra chunk
    assert len(ct) == len(header) + 16 + size + 16 * len(chunks)
    assert decrypt_bytes(ct, [ALICE]) == data


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 4 * CHUNK + 100),
    src_sizes=st.lists(st.integers(1, 3 * CHUNK), min_size=1, max_size=4),
    enc_read=st.integers(1, 3 * CHUNK),
    dec_read=st.integers(1, 3 * CHUNK),
    seed=st.integers(0, 2**32),
)
def test_round_trip_any_size_and_read_pattern(
    size: int, src_sizes: list[int], enc_read: int, dec_read: int, seed: int
) -> None:
    data = random.Random(seed).randbytes(size)
    enc = EncryptingReader(ChunkyReader(data, src_sizes), [ALICE.recipient(), BOB.recipient()])
    ct = read_all(enc, enc_read)
    for who in (ALICE, BOB):
        dec = DecryptingReader(ChunkyReader(ct, src_sizes[::-1]), [who], NAME)
        assert read_all(dec, dec_read) == data


def test_read_minus_one_and_zero() -> None:
    enc = EncryptingReader(BytesReader(PLAIN), [ALICE.recipient()])
    assert enc.read(0) == b""
    ct = enc.read(-1)
    assert enc.read(-1) == b"" and enc.read(10) == b""
    dec = DecryptingReader(BytesReader(ct), [ALICE])
    assert dec.read(5) == PLAIN[:5]
    assert dec.read(-1) == PLAIN[5:]
    assert dec.read(1) == b""


def test_reads_return_full_requests_until_the_end() -> None:
    enc = EncryptingReader(BytesReader(PLAIN), [ALICE.recipient()])
    sizes = []
    while chunk := enc.read(100_000):
        sizes.append(len(chunk))
    assert all(s == 100_000 for s in sizes[:-1])


def test_each_file_has_fresh_keys_and_nonce() -> None:
    a = encrypt_bytes(b"same", [ALICE.recipient()])
    b = encrypt_bytes(b"same", [ALICE.recipient()])
    assert split(a)[0] != split(b)[0] and split(a)[1] != split(b)[1]


def test_identity_order_and_unrelated_identities_do_not_matter() -> None:
    ct = encrypt_bytes(b"x" * 10, [BOB.recipient(), ALICE.recipient()])
    assert decrypt_bytes(ct, [generate_identity(), ALICE]) == b"x" * 10


def test_unknown_stanza_types_are_ignored() -> None:
    key = os.urandom(16)
    stanzas = [Stanza("example.com/other", ("a", "b"), b"xyz"), *ALICE.recipient().wrap(key)]
    assert decrypt(craft([(b"hello", True)], stanzas, key)) == b"hello"


def test_armored_input_is_decoded() -> None:
    assert decrypt(armor_encode(CT)) == PLAIN


# -- bounded memory ------------------------------------------------------


def _peak_bytes(size: int) -> int:
    src = PatternReader(size, seed=3)
    tracemalloc.start()
    try:
        enc = EncryptingReader(src, [ALICE.recipient()])
        dec = DecryptingReader(enc, [ALICE], "stream")
        out = PatternReader(0)
        while chunk := dec.read(1 << 20):
            out.sha256.update(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.sha256.digest() == src.sha256.digest()
    return peak


@pytest.mark.timeout(120)
def test_memory_is_flat_in_the_stream_size() -> None:
    small = _peak_bytes(4 << 20)
    large = _peak_bytes(64 << 20)
    assert large < 8 << 20, f"peak {large} bytes for a 64 MiB stream"
    assert large < small + (1 << 20), (small, large)


# -- tampering -----------------------------------------------------------


def test_every_truncation_is_refused() -> None:
    header, _, chunks = split(CT)
    boundaries = [len(header) + 16 + i * SEALED_CHUNK_SIZE for i in range(len(chunks))]
    cuts = set(range(0, len(header) + 40))  # everywhere in the header, nonce, first tag
    cuts.update(b + d for b in boundaries for d in (-17, -16, -1, 0, 1, 15, 16, 17))
    cuts.update(random.Random(2).sample(range(len(CT)), 150))
    cuts.update(range(len(CT) - 20, len(CT)))
    for cut in sorted(c for c in cuts if 0 <= c < len(CT)):
        with pytest.raises(CryptoError) as info:
            decrypt(CT[:cut])
        assert str(info.value).startswith(NAME + ": "), (cut, info.value)


def test_truncation_messages_say_what_happened() -> None:
    header, _, _ = split(CT)
    refuse(b"", "empty input")
    refuse(header[:30], "truncated inside the age header")
    refuse(header + b"\x00" * 5, "payload nonce is incomplete")
    refuse(CT[: len(header) + 16], "no payload after the header")
    at_boundary = CT[: len(header) + 16 + 2 * SEALED_CHUNK_SIZE]
    refuse(at_boundary, "truncated after chunk 1: the final chunk is missing")
    refuse(CT[: len(header) + 16 + 2 * SEALED_CHUNK_SIZE + 10], "shorter than its tag")


def test_flipped_bits_are_refused_everywhere() -> None:
    header, _, _ = split(CT)
    positions = set(range(len(header) + 16))  # every byte of the header and the nonce
    positions.update(random.Random(4).sample(range(len(header) + 16, len(CT)), 200))
    positions.update(range(len(CT) - 16, len(CT)))  # the final tag
    for pos in sorted(positions):
        bit = 1 << (pos % 8)
        bad = bytearray(CT)
        bad[pos] ^= bit
        with pytest.raises(CryptoError) as info:
            decrypt(bytes(bad))
        assert str(info.value).startswith(NAME + ": "), (pos, info.value)


def test_reordered_dropped_duplicated_chunks_are_refused() -> None:
    header, nonce, c = split(CT)
    assert len(c) == 4
    cases = {
        "swapped": [c[1], c[0], c[2], c[3]],
        "dropped middle": [c[0], c[2], c[3]],
        "duplicated": [c[0], c[1], c[1], c[2], c[3]],
        "final moved": [c[0], c[1], c[3], c[2]],
        "final dropped": [c[0], c[1], c[2]],
        "final doubled": [c[0], c[1], c[2], c[3], c[3]],
    }
    for label, order in cases.items():
        with pytest.raises(CryptoError, match=NAME) as info:
            decrypt(header + nonce + b"".join(order))
        assert info.value is not None, label


def test_wrong_key_is_refused() -> None:
    refuse(CT, r"no identity matches any of its 1 recipient stanza\(s\) \(X25519\)", [BOB])


def test_header_spliced_from_another_file_is_refused() -> None:
    other = encrypt_bytes(PLAIN, [ALICE.recipient()])
    h1, n1, c1 = split(CT)
    h2, n2, c2 = split(other)
    refuse(h2 + n1 + b"".join(c1), "chunk 0 failed authentication")
    refuse(h1 + n2 + b"".join(c1), "chunk 0 failed authentication")  # nonce from elsewhere
    refuse(h1 + n1 + c1[0] + c2[1] + c1[2] + c1[3], "chunk 1 failed authentication")


def test_header_mac_is_checked() -> None:
    key = os.urandom(16)
    stanzas = [Stanza("example.com/other", ("a",), b""), *ALICE.recipient().wrap(key)]
    good = craft([(b"data", True)], stanzas, key)
    assert decrypt(good) == b"data"
    bad = good.replace(b"-> example.com/other a", b"-> example.com/other b")
    refuse(bad, "header MAC mismatch")


def test_trailing_data_is_refused() -> None:
    _, _, chunks = split(CT)
    refuse(CT + b"\x00", "failed authentication as the final chunk")
    refuse(CT + chunks[-1], "chunk 3 failed authentication as the final chunk")
    full = encrypt_bytes(b"z" * (2 * CHUNK), [ALICE.recipient()])
    refuse(full + b"x", "trailing data after the final chunk")


def test_missing_final_flag_is_refused() -> None:
    refuse(craft([(b"a" * CHUNK, False)]), "the final chunk is missing")
    refuse(craft([(b"a" * CHUNK, False), (b"b" * CHUNK, False)]), "final chunk is missing")
    refuse(craft([(b"a" * 10, False)]), "failed authentication as the final chunk")


def test_final_flag_in_the_middle_is_refused() -> None:
    refuse(craft([(b"a" * CHUNK, True), (b"b", True)]), "trailing data after the final chunk")


def test_empty_final_chunk_only_for_empty_payload() -> None:
    assert decrypt(craft([(b"", True)])) == b""
    refuse(craft([(b"a" * CHUNK, False), (b"", True)]), "empty final chunk after data")


def test_short_non_final_chunk_is_refused() -> None:
    refuse(craft([(b"a" * 100, False), (b"b", True)]), "failed authentication")


def test_only_authenticated_data_is_returned_and_errors_stick() -> None:
    bad = bytearray(CT)
    bad[-SEALED_CHUNK_SIZE - 100] ^= 1  # inside chunk 2 (0-based)
    dec = DecryptingReader(BytesReader(bytes(bad)), [ALICE], NAME)
    got = b""
    with pytest.raises(CryptoError, match="chunk 2 failed authentication"):
        while chunk := dec.read(1000):
            got += chunk
    assert got == PLAIN[: len(got)]
    assert len(got) <= 2 * CHUNK
    with pytest.raises(CryptoError, match="chunk 2"):
        dec.read(1)


def test_end_is_never_reported_before_the_final_chunk_is_checked() -> None:
    header, nonce, chunks = split(CT)
    truncated = header + nonce + b"".join(chunks[:-1])
    dec = DecryptingReader(BytesReader(truncated), [ALICE], NAME)
    got = b""
    with pytest.raises(CryptoError, match="final chunk is missing"):
        while chunk := dec.read(CHUNK):
            got += chunk
    assert got == PLAIN[: len(got)]


# -- stanzas -------------------------------------------------------------


def test_malformed_x25519_stanzas_are_refused() -> None:
    key = os.urandom(16)
    (good,) = ALICE.recipient().wrap(key)
    cases = {
        "wrong number of arguments": Stanza("X25519", (*good.args, "x"), good.body),
        "body is not 32 bytes": Stanza("X25519", good.args, good.body + b"\x00"),
        "ephemeral share is not 32 bytes": Stanza("X25519", (b64encode(bytes(31)),), good.body),
        "all-zero shared secret": Stanza("X25519", (b64encode(bytes(32)),), good.body),
    }
    for why, stanza in cases.items():
        refuse(craft([(b"x", True)], [stanza], key), why)


def _scrypt_stanza(key: bytes, work_factor: str) -> Stanza:
    (stanza,) = ScryptRecipient("pw", work_factor=2).wrap(key)
    return Stanza("scrypt", (stanza.args[0], work_factor), stanza.body)


def test_scrypt_round_trip_and_wrong_passphrase() -> None:
    ct = encrypt_bytes(PLAIN, [ScryptRecipient("correct horse", work_factor=10)])
    assert b"\n-> scrypt " in ct and b" 10\n" in ct
    assert decrypt(ct, [ScryptIdentity("correct horse")]) == PLAIN
    asked: list[int] = []

    def lazily() -> str:
        asked.append(1)
        return "correct horse"

    assert decrypt(ct, [ALICE, ScryptIdentity(lazily)]) == PLAIN
    assert asked == [1]
    refuse(ct, "incorrect passphrase", [ScryptIdentity("wrong")])
    refuse(ct, "passphrase-encrypted .* no passphrase was given", [ALICE])


def test_lazy_passphrase_is_not_asked_for_x25519_files() -> None:
    def never() -> str:
        raise AssertionError("asked for a passphrase")

    assert decrypt(CT, [ScryptIdentity(never), ALICE]) == PLAIN


def test_scrypt_must_be_alone() -> None:
    key = os.urandom(16)
    mixed = [_scrypt_stanza(key, "2"), *ALICE.recipient().wrap(key)]
    refuse(craft([(b"x", True)], mixed, key), "mixed with other stanzas")
    refuse(craft([(b"x", True)], mixed, key), "mixed", [ScryptIdentity("pw")])
    two = [_scrypt_stanza(key, "2"), _scrypt_stanza(key, "2")]
    refuse(craft([(b"x", True)], two, key), "mixed", [ScryptIdentity("pw")])
    with pytest.raises(CryptoError, match="only recipient"):
        EncryptingReader(BytesReader(b""), [ScryptRecipient("pw"), ALICE.recipient()])


def test_scrypt_work_factor_is_capped_and_strictly_formatted() -> None:
    key = os.urandom(16)
    assert decrypt(craft([(b"x", True)], [_scrypt_stanza(key, "2")], key), [ScryptIdentity("pw")])
    for wf, why in [("23", "above the limit 2\\^22"), ("40", "above"), ("02", "bad work factor")]:
        bad = craft([(b"x", True)], [_scrypt_stanza(key, wf)], key)
        refuse(bad, why, [ScryptIdentity("pw")])
    for wf in ("0", "-1", "1e3", "abc"):
        bad = craft([(b"x", True)], [_scrypt_stanza(key, wf)], key)
        refuse(bad, "bad work factor", [ScryptIdentity("pw")])
    lowered = ScryptIdentity("pw", max_work_factor=1)
    refuse(craft([(b"x", True)], [_scrypt_stanza(key, "2")], key), "limit 2\\^1", [lowered])


def test_scrypt_recipient_validates_its_arguments() -> None:
    with pytest.raises(CryptoError, match="empty passphrase"):
        ScryptRecipient("")
    with pytest.raises(CryptoError, match="work factor"):
        ScryptRecipient("pw", work_factor=23)


def test_no_recipients_or_identities() -> None:
    with pytest.raises(CryptoError, match="no recipients"):
        EncryptingReader(BytesReader(b""), [])
    with pytest.raises(CryptoError, match="obj: no identity"):
        DecryptingReader(BytesReader(b""), [], "obj")


def test_secrets_do_not_show_in_reprs() -> None:
    ident = generate_identity()
    secret = ident.to_string()
    for obj in (ident, ScryptRecipient("hunter2-secret"), ScryptIdentity("hunter2-secret")):
        assert "hunter2-secret" not in repr(obj)
        assert secret not in repr(obj) and secret[15:40].lower() not in repr(obj).lower()
    assert isinstance(ident, X25519Identity)


def test_a_huge_read_request_does_not_allocate_that_much() -> None:
    enc = EncryptingReader(BytesReader(b"small"), [ALICE.recipient()])
    ct = enc.read(1 << 40)  # a MemoryError here would mean read(n) pre-allocates n
    dec = DecryptingReader(BytesReader(ct), [ALICE])
    assert dec.read(1 << 40) == b"small"


def test_armor_errors_are_sticky_too() -> None:
    bad = armor_encode(CT) + b"trailing garbage\n"
    dec = DecryptingReader(BytesReader(bad), [ALICE], NAME)
    with pytest.raises(CryptoError, match="invalid ASCII armor"):
        while dec.read(1 << 20):
            pass
    with pytest.raises(CryptoError, match="invalid ASCII armor"):
        dec.read(1)
