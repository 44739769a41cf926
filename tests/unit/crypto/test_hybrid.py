"""Post-quantum (mlkem768x25519) recipients and identities: the C2SP age rules, one test each.

The spec (C2SP age.md, "The MLKEM768-X25519 (i.e. X-Wing) hybrid post-quantum
recipient type") says an identity implementation MUST ignore stanzas of other
types, MUST reject a stanza with other than two arguments (type + enc), whose
enc is not the canonical base64 of 1120 bytes, or whose body is not 32 bytes
(checked before decrypting); HPKE's X25519 half must not give the all-zero
secret; a wrong tag is "not for me"; and an scrypt stanza is always alone.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from tests.unit.crypto.conftest import ChunkyReader
from vkbackup.crypto import (
    DecryptingReader,
    EncryptingReader,
    HybridIdentity,
    HybridRecipient,
    Identity,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    bech32,
    decrypt_bytes,
    encrypt_bytes,
    format_identity_file,
    generate_hybrid_identity,
    generate_identity,
    hpke,
    load_identity_file,
    parse_identities,
    parse_identity,
    parse_recipient,
    write_identity_file,
)
from vkbackup.crypto import age as age_module
from vkbackup.crypto.header import Stanza, b64decode, b64encode, encode_header, hkdf_sha256
from vkbackup.crypto.recipients import PQ_INFO, PQ_STANZA
from vkbackup.errors import CryptoError
from vkbackup.streams import BytesReader

CHUNK = 64 * 1024
PQ = generate_hybrid_identity()
PQ2 = generate_hybrid_identity()
CLASSIC = generate_identity()
NAME = "snapshots/2026/db.dump.age"

# The example key pair printed in C2SP age.md (the hybrid recipient section).
SPEC_IDENTITY = "AGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR"
SPEC_RECIPIENT_PREFIX = "age1pq1x34nzsvr0rxjsgdn8zgyhfe8j7ceq5r9rdelkjuh3y235jzxshfg87pzf5zrqtzdx"
SPEC_RECIPIENT_SUFFIX = "qheyty7saeq0d3fzv49zc0k"

# X25519 points whose product with any scalar is the all-zero value (RFC 7748 section 6.1).
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def decrypt(data: bytes, identities: Sequence[Identity] = (PQ,)) -> bytes:
    return DecryptingReader(BytesReader(data), identities, NAME).read(-1)


def refuse(data: bytes, match: str, identities: Sequence[Identity] = (PQ,)) -> None:
    with pytest.raises(CryptoError, match=match) as info:
        decrypt(data, identities)
    assert str(info.value).startswith(NAME + ": ")


def craft(stanzas: Sequence[Stanza], file_key: bytes, plain: bytes = b"hello") -> bytes:
    """An age file with the given stanzas (sealed for *file_key*) and a one-chunk payload."""
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))
    return encode_header(file_key, stanzas) + nonce + aead.encrypt(bytes(11) + b"\x01", plain, None)


def good_stanza(file_key: bytes, identity: HybridIdentity = PQ) -> Stanza:
    (stanza,) = identity.recipient().wrap(file_key)
    return stanza


# -- keys ----------------------------------------------------------------


def test_spec_example_identity_gives_the_spec_recipient() -> None:
    ident = parse_identity(SPEC_IDENTITY)
    assert isinstance(ident, HybridIdentity)
    assert ident.to_string() == SPEC_IDENTITY
    recipient = str(ident.recipient())
    assert recipient.startswith(SPEC_RECIPIENT_PREFIX)
    assert recipient.endswith(SPEC_RECIPIENT_SUFFIX)
    assert len(recipient) == 7 + 1946 + 6  # "age1pq1", 1216 bytes in Bech32, checksum
    assert parse_recipient(recipient) == ident.recipient()


def test_recipient_and_identity_strings_round_trip() -> None:
    s = PQ.to_string()
    assert s.startswith("AGE-SECRET-KEY-PQ-1") and s == s.upper()
    assert parse_identity(s) == PQ
    r = str(PQ.recipient())
    assert r.startswith("age1pq1") and r == r.lower()
    parsed = parse_recipient(r)
    assert isinstance(parsed, HybridRecipient) and parsed == PQ.recipient()
    assert len(parsed.public_bytes) == hpke.PUBLIC_KEY_SIZE
    assert PQ != PQ2 and PQ.recipient() != PQ2.recipient()


def _last_char_changed(s: str) -> str:
    """*s* with its last character replaced by another bech32 character (the key is
    random: replacing it with a fixed one would leave it unchanged once in 32 runs)."""
    return s[:-1] + ("q" if s[-1] != "q" else "p")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: bech32.encode("age1pq", bytes(1215)), "wrong key length"),
        (lambda: bech32.encode("age1pq", bytes(32)), "wrong key length"),
        (lambda: bech32.encode("age1pq", b"\xff\x0f" + bytes(1214)), "ML-KEM"),
        (lambda: bech32.encode("age1pqx", bytes(1216)), "not an age1"),
        (lambda: _last_char_changed(str(PQ.recipient())), "checksum"),
    ],
)
def test_bad_pq_recipients_are_refused(make: object, why: str) -> None:
    assert callable(make)
    bad = make()
    with pytest.raises(CryptoError, match=why) as info:
        parse_recipient(bad)
    assert str(info.value).startswith("invalid age recipient")
    assert bad[40:] not in str(info.value)  # the string is truncated, not echoed


def test_bad_pq_identities_are_refused_without_echoing_them() -> None:
    short = bech32.encode("AGE-SECRET-KEY-PQ-", bytes(31)).upper()
    with pytest.raises(CryptoError, match="wrong key length") as info:
        parse_identity(short)
    assert short not in str(info.value)
    with pytest.raises(CryptoError, match="malformed age secret key"):
        parse_identity(PQ.to_string().lower())  # like stock age: secret keys are uppercase


def test_low_order_x25519_half_of_a_recipient_cannot_be_encrypted_to() -> None:
    mlkem_part = PQ.recipient().public_bytes[: hpke.MLKEM_PUBLIC_SIZE]
    recipient = HybridRecipient(mlkem_part + bytes(32))
    with pytest.raises(CryptoError, match="not a usable key"):
        encrypt_bytes(b"x", [recipient])


def test_identity_file_holds_both_kinds_like_age_keygen(tmp_path: Path) -> None:
    text = format_identity_file(PQ)
    lines = text.splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[1] == f"# public key: {PQ.recipient()}"
    assert lines[2] == PQ.to_string()
    both = text + "\n" + format_identity_file(CLASSIC)
    parsed = parse_identities(both, "keys.txt")
    assert parsed == [PQ, CLASSIC]
    path = tmp_path / "pq.age"
    write_identity_file(path, PQ, passphrase="correct horse battery", work_factor=10)
    (loaded,) = load_identity_file(path, lambda: "correct horse battery")
    assert loaded == PQ


def test_pq_secrets_do_not_show_in_reprs() -> None:
    seed_text = PQ.to_string()
    for obj in (PQ, PQ.recipient(), hpke.HybridPrivateKey(bytes(32))):
        assert seed_text not in repr(obj)
        assert seed_text[20:40] not in repr(obj)


# -- round trips -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_round_trip_pq_only(size: int) -> None:
    plain = random.Random(size).randbytes(size)
    ct = encrypt_bytes(plain, [PQ.recipient()])
    header = ct[: ct.index(b"\n---")]
    assert header.count(b"\n-> ") == 1 and b"\n-> mlkem768x25519 " in header
    assert decrypt(ct) == plain
    assert decrypt(ct, [CLASSIC, PQ2, PQ]) == plain  # unrelated identities do not matter


def test_streaming_with_short_reads_is_unchanged() -> None:
    plain = random.Random(7).randbytes(2 * CHUNK + 3)
    reader = EncryptingReader(ChunkyReader(plain, [1, 4096, CHUNK + 1]), [PQ.recipient()])
    ct = b""
    while part := reader.read(1000):
        ct += part
    out = DecryptingReader(ChunkyReader(ct, [7, 300, 5000]), [PQ], NAME)
    got = b""
    while part := out.read(333):
        got += part
    assert got == plain


def test_stanza_shape_and_fresh_encapsulation_per_file() -> None:
    key = os.urandom(16)
    a, b = good_stanza(key), good_stanza(key)
    for s in (a, b):
        assert s.type == PQ_STANZA and len(s.args) == 1
        assert len(b64decode(s.args[0])) == hpke.ENC_SIZE
        assert len(s.body) == 32
    assert a.args != b.args and a.body != b.body


def test_mixed_pq_and_x25519_each_identity_opens_and_it_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    age_module._warned_mixes.clear()
    plain = random.Random(3).randbytes(CHUNK + 1)
    with caplog.at_level(logging.WARNING, logger="vkbackup.crypto.age"):
        ct = encrypt_bytes(plain, [PQ.recipient(), CLASSIC.recipient()])
        encrypt_bytes(plain, [CLASSIC.recipient(), PQ.recipient()])  # same set: no second warning
    warnings = [r for r in caplog.records if "post-quantum" in r.getMessage()]
    assert len(warnings) == 1
    assert "only as strong as X25519" in warnings[0].getMessage()
    assert decrypt(ct, [PQ]) == plain
    assert decrypt(ct, [CLASSIC]) == plain


def test_pq_only_and_x25519_only_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    age_module._warned_mixes.clear()
    with caplog.at_level(logging.WARNING, logger="vkbackup.crypto.age"):
        encrypt_bytes(b"x", [PQ.recipient(), PQ2.recipient()])
        encrypt_bytes(b"x", [CLASSIC.recipient()])
    assert not caplog.records


def test_hpke_info_binds_the_wrap() -> None:
    key = os.urandom(16)
    enc, body = hpke.seal_base(PQ.recipient()._key, PQ_INFO, key)
    assert hpke.open_base(PQ._key, enc, PQ_INFO, body) == key
    assert hpke.open_base(PQ._key, enc, b"age-encryption.org/other", body) is None


# -- the spec's rules for mlkem768x25519 stanzas, one test each -----------------


def test_other_stanza_types_are_ignored_including_an_uppercase_type() -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    upper = Stanza(PQ_STANZA.upper(), good.args, good.body)
    grease = Stanza("example.com/grease", ("x",), os.urandom(40))
    assert decrypt(craft([grease, good], key)) == b"hello"
    refuse(craft([upper], key), "no identity matches")


@pytest.mark.parametrize("extra", [(), ("extra",), ("a", "b")])
def test_wrong_argument_count_is_refused(extra: tuple[str, ...]) -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    args = () if extra == () else (*good.args, *extra)
    refuse(craft([Stanza(PQ_STANZA, args, good.body)], key), "wrong number of arguments")


def test_non_canonical_base64_enc_is_refused() -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    text = good.args[0]
    # 1120 = 3 * 373 + 1: the last character carries 2 bits and 4 zero bits; set one.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = alphabet.index(text[-1])
    assert index & 0xF == 0
    non_canonical = text[:-1] + alphabet[index | 1]
    refuse(craft([Stanza(PQ_STANZA, (non_canonical,), good.body)], key), "non-canonical")
    padded = text + "=="
    refuse(craft([Stanza(PQ_STANZA, (padded,), good.body)], key), "malformed .*base64")


@pytest.mark.parametrize("length", [1, 32, hpke.ENC_SIZE - 1, hpke.ENC_SIZE + 1, 2 * hpke.ENC_SIZE])
def test_wrong_encapsulation_length_is_refused(length: int) -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    enc = (b64decode(good.args[0]) * 2)[:length]
    stanza = Stanza(PQ_STANZA, (b64encode(enc),), good.body)
    refuse(craft([stanza], key), "encapsulated key is not 1120 bytes")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 48])
def test_wrong_body_length_is_refused_before_decrypting(length: int) -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    body = (good.body + os.urandom(32))[:length]
    refuse(craft([Stanza(PQ_STANZA, good.args, body)], key), "body is not 32 bytes")


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_x25519_share_is_refused(point: bytes) -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    enc = b64decode(good.args[0])[: hpke.MLKEM_CIPHERTEXT_SIZE] + point
    stanza = Stanza(PQ_STANZA, (b64encode(enc),), good.body)
    refuse(craft([stanza], key), "low-order")


def test_bad_tag_is_no_match_not_a_crash() -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    body = bytearray(good.body)
    body[-1] ^= 1
    refuse(craft([Stanza(PQ_STANZA, good.args, bytes(body))], key), "no identity matches")


def test_corrupted_mlkem_ciphertext_is_no_match_by_implicit_rejection() -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    enc = bytearray(b64decode(good.args[0]))
    enc[100] ^= 0x40
    stanza = Stanza(PQ_STANZA, (b64encode(bytes(enc)),), good.body)
    refuse(craft([stanza], key), "no identity matches")


def test_wrong_identity_is_no_match() -> None:
    ct = encrypt_bytes(b"secret", [PQ.recipient()])
    refuse(ct, r"no identity matches any of its 1 recipient stanza\(s\) \(mlkem768x25519\)", [PQ2])
    refuse(ct, "no identity matches", [CLASSIC])


def test_a_later_stanza_for_this_identity_still_opens() -> None:
    key = os.urandom(16)
    ct = craft([good_stanza(key, PQ2), good_stanza(key, PQ)], key)
    assert decrypt(ct) == b"hello"


def test_pq_stanza_mixed_with_scrypt_is_refused() -> None:
    key = os.urandom(16)
    (scrypt,) = ScryptRecipient("pw", work_factor=2).wrap(key)
    for stanzas in ([scrypt, good_stanza(key)], [good_stanza(key), scrypt]):
        ct = craft(stanzas, key)
        refuse(ct, "scrypt .*mixed", [PQ])
        refuse(ct, "scrypt .*mixed", [ScryptIdentity("pw")])
    with pytest.raises(CryptoError, match="only recipient"):
        encrypt_bytes(b"x", [ScryptRecipient("pw", work_factor=2), PQ.recipient()])


def test_x25519_stanza_with_a_hybrid_enc_is_refused_by_the_x25519_identity() -> None:
    key = os.urandom(16)
    good = good_stanza(key)
    stanza = Stanza("X25519", good.args, good.body)
    refuse(craft([stanza], key), "ephemeral share is not 32 bytes", [CLASSIC, PQ])


def test_header_mac_still_guards_a_pq_header() -> None:
    ct = bytearray(encrypt_bytes(b"x" * 100, [PQ.recipient()]))
    mac_line = ct.index(b"\n--- ") + 5
    ct[mac_line] = ord("A") if ct[mac_line] != ord("A") else ord("B")
    refuse(bytes(ct), "header MAC mismatch")


def test_identities_of_both_kinds_open_what_they_should() -> None:
    ct_pq = encrypt_bytes(b"pq", [PQ.recipient()])
    ct_classic = encrypt_bytes(b"classic", [CLASSIC.recipient()])
    both: list[Identity] = [CLASSIC, PQ]
    assert decrypt_bytes(ct_pq, both) == b"pq"
    assert decrypt_bytes(ct_classic, both) == b"classic"
    assert isinstance(parse_identity(CLASSIC.to_string()), X25519Identity)
