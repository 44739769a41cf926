"""Interop with stock age 1.3.2 (Debian unstable), both ways: post-quantum, mixed, passphrase.

age 1.3 is the first release that knows the hybrid ML-KEM-768 + X25519
recipient; .ci/setup unpacks its .deb into a cache directory (see age13.py),
and these tests fail in CI when it is missing and skip elsewhere. Sizes sit
on the chunk boundaries (0, 1, 64 KiB - 1, 64 KiB, 64 KiB + 1) and one large
object (5 MiB + 3). Stock age refuses to *write* a file that mixes PQ and
classic recipients (the spec's SHOULD NOT); it reads one, so the mixed case
goes vkbackup -> age, and age's refusal is pinned by a test of its own.
Passphrase prompts of stock age (read on /dev/tty) are answered through a
pseudo-terminal.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.crypto.conftest import clean_env, run_with_tty
from vkbackup.crypto import (
    HybridIdentity,
    HybridRecipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt_bytes,
    encrypt_bytes,
    generate_hybrid_identity,
    generate_identity,
    load_identity_file,
    parse_recipient,
    write_identity_file,
)
from vkbackup.crypto.armor import BEGIN, armor_encode

CHUNK = 64 * 1024
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * 1024 * 1024 + 3]
PASSPHRASE = "correct horse battery staple"


def run(argv: list[str], stdin: bytes = b"") -> bytes:
    r = subprocess.run(argv, input=stdin, capture_output=True, env=clean_env(), timeout=120)
    assert r.returncode == 0, (argv, r.stderr.decode(errors="replace"))
    return r.stdout


@pytest.fixture(scope="module")
def age_pq_file(tmp_path_factory: pytest.TempPathFactory, age13_keygen_bin: str) -> Path:
    """An identity file written by `age-keygen -pq`."""
    path = tmp_path_factory.mktemp("age13") / "pq.txt"
    subprocess.run([age13_keygen_bin, "-pq", "-o", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def vk_pq_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vk") / "pq.txt"
    write_identity_file(path, generate_hybrid_identity())
    return path


@pytest.fixture(scope="module")
def vk_classic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vk") / "classic.txt"
    write_identity_file(path, generate_identity())
    return path


def pq_identity(path: Path) -> HybridIdentity:
    (ident,) = load_identity_file(path)
    assert isinstance(ident, HybridIdentity)
    return ident


def classic_identity(path: Path) -> X25519Identity:
    (ident,) = load_identity_file(path)
    assert isinstance(ident, X25519Identity)
    return ident


def recipient_of(keygen: str, path: Path) -> str:
    return run([keygen, "-y", str(path)]).decode().strip()


# -- keys ------------------------------------------------------------------


def test_both_tools_agree_on_pq_recipients(
    age13_keygen_bin: str, age_pq_file: Path, vk_pq_file: Path
) -> None:
    for path in (age_pq_file, vk_pq_file):
        from_age = recipient_of(age13_keygen_bin, path)
        assert from_age.startswith("age1pq1")
        assert str(pq_identity(path).recipient()) == from_age
        assert isinstance(parse_recipient(from_age), HybridRecipient)
        assert f"# public key: {from_age}" in path.read_text()


# -- post-quantum only ----------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_vkbackup_encrypts_pq_age_decrypts(size: int, age13_bin: str, vk_pq_file: Path) -> None:
    data = os.urandom(size)
    ct = encrypt_bytes(data, [pq_identity(vk_pq_file).recipient()])
    assert b"\n-> mlkem768x25519 " in ct[:4096]
    assert run([age13_bin, "-d", "-i", str(vk_pq_file)], ct) == data


@pytest.mark.parametrize("size", SIZES)
def test_age_encrypts_pq_vkbackup_decrypts(
    size: int, age13_bin: str, age13_keygen_bin: str, age_pq_file: Path
) -> None:
    recipient = recipient_of(age13_keygen_bin, age_pq_file)
    data = os.urandom(size)
    ct = run([age13_bin, "-e", "-r", recipient], data)
    assert b"\n-> mlkem768x25519 " in ct[:4096]
    assert decrypt_bytes(ct, load_identity_file(age_pq_file)) == data


def test_several_pq_recipients_both_ways(
    tmp_path: Path,
    age13_bin: str,
    age13_keygen_bin: str,
    age_pq_file: Path,
    vk_pq_file: Path,
) -> None:
    theirs = recipient_of(age13_keygen_bin, age_pq_file)
    ours = str(pq_identity(vk_pq_file).recipient())
    data = os.urandom(2 * CHUNK + 5)
    ct = encrypt_bytes(data, [parse_recipient(ours), parse_recipient(theirs)])
    for ident_file in (vk_pq_file, age_pq_file):
        assert run([age13_bin, "-d", "-i", str(ident_file)], ct) == data
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# ops\n{ours}\n# break glass\n{theirs}\n")
    ct2 = run([age13_bin, "-e", "-R", str(recipients)], data)
    assert decrypt_bytes(ct2, load_identity_file(vk_pq_file)) == data
    assert decrypt_bytes(ct2, load_identity_file(age_pq_file)) == data


# -- mixed post-quantum and X25519 ------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_vkbackup_encrypts_mixed_age_decrypts_with_either_key(
    size: int, age13_bin: str, age13_keygen_bin: str, age_pq_file: Path, vk_classic_file: Path
) -> None:
    pq = parse_recipient(recipient_of(age13_keygen_bin, age_pq_file))
    classic = classic_identity(vk_classic_file).recipient()
    data = os.urandom(size)
    ct = encrypt_bytes(data, [pq, classic])
    for ident_file in (age_pq_file, vk_classic_file):
        assert run([age13_bin, "-d", "-i", str(ident_file)], ct) == data
    both = [*load_identity_file(age_pq_file), *load_identity_file(vk_classic_file)]
    assert decrypt_bytes(ct, both) == data


def test_age_refuses_to_write_mixed_files_and_vkbackup_reads_its_pq_files_with_both_keys(
    age13_bin: str, age13_keygen_bin: str, age_pq_file: Path, vk_classic_file: Path
) -> None:
    pq = recipient_of(age13_keygen_bin, age_pq_file)
    classic = str(classic_identity(vk_classic_file).recipient())
    r = subprocess.run(
        [age13_bin, "-e", "-r", pq, "-r", classic],
        input=b"x",
        capture_output=True,
        env=clean_env(),
        timeout=60,
    )
    assert r.returncode != 0
    assert b"can't mix post-quantum and classic recipients" in r.stderr
    data = os.urandom(CHUNK + 1)
    ct = run([age13_bin, "-e", "-r", pq], data)
    identities = [*load_identity_file(vk_classic_file), *load_identity_file(age_pq_file)]
    assert decrypt_bytes(ct, identities) == data


@pytest.mark.parametrize("size", [0, CHUNK + 1])
def test_age_13_still_opens_classic_files_both_ways(
    size: int, age13_bin: str, vk_classic_file: Path
) -> None:
    data = os.urandom(size)
    classic = classic_identity(vk_classic_file).recipient()
    mine = encrypt_bytes(data, [classic])
    assert run([age13_bin, "-d", "-i", str(vk_classic_file)], mine) == data
    ct = run([age13_bin, "-e", "-r", str(classic)], data)
    assert decrypt_bytes(ct, load_identity_file(vk_classic_file)) == data


# -- passphrase (scrypt) ---------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_age_passphrase_encrypts_vkbackup_decrypts(size: int, age13_bin: str) -> None:
    data = os.urandom(size)
    r = run_with_tty([age13_bin, "-p"], [PASSPHRASE, PASSPHRASE], stdin=data)
    assert r.returncode == 0, (r.stderr, r.transcript)
    assert r.stdout.startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert decrypt_bytes(r.stdout, [ScryptIdentity(PASSPHRASE)]) == data


@pytest.mark.parametrize("size", SIZES)
def test_vkbackup_passphrase_encrypts_age_decrypts(size: int, age13_bin: str) -> None:
    data = os.urandom(size)
    ct = encrypt_bytes(data, [ScryptRecipient(PASSPHRASE, work_factor=14)])
    r = run_with_tty([age13_bin, "-d"], [PASSPHRASE], stdin=ct)
    assert r.returncode == 0, (r.stderr, r.transcript)
    assert r.stdout == data


def test_passphrase_protected_pq_identity_file_opens_in_age(age13_bin: str, tmp_path: Path) -> None:
    ident = generate_hybrid_identity()
    path = tmp_path / "pq.age"
    write_identity_file(path, ident, passphrase=PASSPHRASE)  # default work factor, as the CLI
    data = os.urandom(CHUNK + 1)
    ct = encrypt_bytes(data, [ident.recipient()])
    r = run_with_tty([age13_bin, "-d", "-i", str(path)], [PASSPHRASE], stdin=ct)
    assert r.returncode == 0, (r.stderr, r.transcript)
    assert r.stdout == data


# -- armor ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 5 * 1024 * 1024 + 3])
def test_age_armored_pq_output_decrypts(
    size: int, age13_bin: str, age13_keygen_bin: str, age_pq_file: Path
) -> None:
    recipient = recipient_of(age13_keygen_bin, age_pq_file)
    data = os.urandom(size)
    ct = run([age13_bin, "-e", "-a", "-r", recipient], data)
    assert ct.startswith(BEGIN) and ct.endswith(b"-----\n")
    identities = load_identity_file(age_pq_file)
    assert decrypt_bytes(ct, identities) == data
    assert decrypt_bytes(ct.rstrip(b"\n"), identities) == data  # without its final newline
    assert run([age13_bin, "-d", "-i", str(age_pq_file)], ct.rstrip(b"\n")) == data


def test_vkbackup_armored_pq_output_opens_in_age(age13_bin: str, vk_pq_file: Path) -> None:
    data = os.urandom(CHUNK + 1)
    ct = armor_encode(encrypt_bytes(data, [pq_identity(vk_pq_file).recipient()]))
    assert run([age13_bin, "-d", "-i", str(vk_pq_file)], ct) == data


def test_age_armored_passphrase_output_decrypts(age13_bin: str) -> None:
    data = os.urandom(CHUNK + 1)
    r = run_with_tty([age13_bin, "-p", "-a"], [PASSPHRASE, PASSPHRASE], stdin=data)
    assert r.returncode == 0, (r.stderr, r.transcript)
    assert r.stdout.startswith(BEGIN)
    assert decrypt_bytes(r.stdout, [ScryptIdentity(PASSPHRASE)]) == data
