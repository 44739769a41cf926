"""Interop with Debian's stock age 1.1.1, both ways, at chunk-boundary sizes.

Needs /usr/bin/age and /usr/bin/age-keygen: fails when CI=true and they are
missing, skips otherwise. Passphrase prompts of stock age (it reads
/dev/tty) are answered through a pseudo-terminal.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.crypto.conftest import clean_env, run_with_tty
from vkbackup.crypto import (
    ScryptIdentity,
    ScryptRecipient,
    decrypt_bytes,
    encrypt_bytes,
    generate_identity,
    load_identity_file,
    parse_recipient,
    write_identity_file,
)
from vkbackup.crypto.armor import BEGIN

CHUNK = 64 * 1024
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * 1024 * 1024 + 3]
PASSPHRASE = "correct horse battery staple"


def data_of(size: int) -> bytes:
    return os.urandom(size)


def run(argv: list[str], stdin: bytes = b"") -> bytes:
    r = subprocess.run(argv, input=stdin, capture_output=True, env=clean_env(), timeout=120)
    assert r.returncode == 0, (argv, r.stderr.decode(errors="replace"))
    return r.stdout


@pytest.fixture(scope="module")
def keygen_identity(tmp_path_factory: pytest.TempPathFactory, age_keygen_bin: str) -> Path:
    path = tmp_path_factory.mktemp("age") / "keygen.txt"
    subprocess.run([age_keygen_bin, "-o", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def vk_identity_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vk") / "identity.txt"
    write_identity_file(path, generate_identity())
    return path


@pytest.mark.parametrize("size", SIZES)
def test_vkbackup_encrypts_age_decrypts(size: int, age_bin: str, vk_identity_file: Path) -> None:
    (ident,) = load_identity_file(vk_identity_file)
    assert hasattr(ident, "recipient")
    data = data_of(size)
    ct = encrypt_bytes(data, [ident.recipient()])
    assert run([age_bin, "-d", "-i", str(vk_identity_file)], ct) == data


@pytest.mark.parametrize("size", SIZES)
def test_age_encrypts_vkbackup_decrypts(size: int, age_bin: str, keygen_identity: Path) -> None:
    identities = load_identity_file(keygen_identity)
    recipient = run(["/usr/bin/age-keygen", "-y", str(keygen_identity)]).decode().strip()
    data = data_of(size)
    ct = run([age_bin, "-e", "-r", recipient], data)
    assert decrypt_bytes(ct, identities) == data


@pytest.mark.parametrize("size", [0, CHUNK + 1, 3 * 1024 * 1024])
def test_age_armored_output_decrypts(size: int, age_bin: str, keygen_identity: Path) -> None:
    identities = load_identity_file(keygen_identity)
    recipient = run(["/usr/bin/age-keygen", "-y", str(keygen_identity)]).decode().strip()
    data = data_of(size)
    ct = run([age_bin, "-e", "-a", "-r", recipient], data)
    assert ct.startswith(BEGIN)
    assert decrypt_bytes(ct, identities) == data


def test_several_recipients_both_ways(
    age_bin: str, keygen_identity: Path, vk_identity_file: Path, tmp_path: Path
) -> None:
    ops = load_identity_file(vk_identity_file)
    glass = load_identity_file(keygen_identity)
    ops_r = parse_recipient(
        run(["/usr/bin/age-keygen", "-y", str(vk_identity_file)]).decode().strip()
    )
    glass_r = parse_recipient(
        run(["/usr/bin/age-keygen", "-y", str(keygen_identity)]).decode().strip()
    )
    data = data_of(CHUNK * 2 + 5)
    ct = encrypt_bytes(data, [ops_r, glass_r])
    for ident_file in (vk_identity_file, keygen_identity):
        assert run([age_bin, "-d", "-i", str(ident_file)], ct) == data
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# ops\n{ops_r}\n# break glass\n{glass_r}\n")
    ct2 = run([age_bin, "-e", "-R", str(recipients)], data)
    assert decrypt_bytes(ct2, ops) == data
    assert decrypt_bytes(ct2, glass) == data


def test_identity_files_agree_on_the_recipient(
    keygen_identity: Path, vk_identity_file: Path
) -> None:
    for path in (keygen_identity, vk_identity_file):
        (ident,) = load_identity_file(path)
        from_age = run(["/usr/bin/age-keygen", "-y", str(path)]).decode().strip()
        assert hasattr(ident, "recipient")
        assert str(ident.recipient()) == from_age
        assert f"# public key: {from_age}" in path.read_text()


def test_age_keygen_file_with_several_keys(age_keygen_bin: str, tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    for p in (a, b):
        subprocess.run([age_keygen_bin, "-o", str(p)], check=True, capture_output=True)
    both = tmp_path / "both.txt"
    both.write_text(a.read_text() + "\n" + b.read_text())
    both.chmod(0o600)  # a key file others can read is refused
    assert len(load_identity_file(both)) == 2


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1])
def test_age_passphrase_encrypts_vkbackup_decrypts(size: int, age_bin: str) -> None:
    data = data_of(size)
    r = run_with_tty([age_bin, "-p"], [PASSPHRASE, PASSPHRASE], stdin=data)
    assert r.returncode == 0, (r.stderr, r.transcript)
    assert r.stdout.startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert decrypt_bytes(r.stdout, [ScryptIdentity(PASSPHRASE)]) == data


@pytest.mark.parametrize(("size", "work_factor"), [(0, 18), (CHUNK + 1, 12), (3 << 20, 14)])
def test_vkbackup_passphrase_encrypts_age_decrypts(
    size: int, work_factor: int, age_bin: str
) -> None:
    data = data_of(size)
    ct = encrypt_bytes(data, [ScryptRecipient(PASSPHRASE, work_factor)])
    r = run_with_tty([age_bin, "-d"], [PASSPHRASE], stdin=ct)
    assert r.returncode == 0, (r.stderr, r.transcript)
    assert r.stdout == data


def test_passphrase_identity_file_opens_in_age(age_bin: str, tmp_path: Path) -> None:
    ident = generate_identity()
    path = tmp_path / "identity.age"
    write_identity_file(path, ident, passphrase=PASSPHRASE)  # default work factor, as the CLI
    data = data_of(CHUNK + 1)
    ct = encrypt_bytes(data, [ident.recipient()])
    r = run_with_tty([age_bin, "-d", "-i", str(path)], [PASSPHRASE], stdin=ct)
    assert r.returncode == 0, (r.stderr, r.transcript)
    assert "identity file" in r.transcript  # age knew it was an encrypted identity file
    assert r.stdout == data


@pytest.mark.parametrize("armor", [True, False])
def test_age_passphrase_protected_keygen_file_loads(
    armor: bool, age_bin: str, keygen_identity: Path, tmp_path: Path
) -> None:
    plain = keygen_identity.read_bytes()
    argv = [age_bin, "-p", *(["-a"] if armor else [])]
    r = run_with_tty(argv, [PASSPHRASE, PASSPHRASE], stdin=plain)
    assert r.returncode == 0, (r.stderr, r.transcript)
    path = tmp_path / "keygen.age"
    path.write_bytes(r.stdout)
    path.chmod(0o600)  # a key file others can read is refused, encrypted or not
    assert r.stdout.startswith(BEGIN) == armor
    assert load_identity_file(path, lambda: PASSPHRASE) == load_identity_file(keygen_identity)
