"""`vkbackup keys generate`, `encrypt`, `decrypt` as real processes, against stock age."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.crypto.conftest import clean_env, run_with_tty

CHUNK = 64 * 1024
PASSPHRASE = "tr0ub4dor&3 long enough"


def vk(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, home: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    e = clean_env()
    e.pop("XDG_CONFIG_HOME", None)
    if home is not None:
        e["HOME"] = str(home)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", *args],
        input=stdin,
        capture_output=True,
        env=e,
        timeout=120,
        start_new_session=True,  # no controlling terminal: prompts are impossible
    )


def age(*args: str, stdin: bytes = b"") -> bytes:
    r = subprocess.run(["/usr/bin/age", *args], input=stdin, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "ops.txt"
    r = vk("keys", "generate", "--out", str(path))
    assert r.returncode == 0, r.stderr
    return path, r.stdout.decode().strip()


def test_keys_generate_writes_0600_prints_recipient_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "id.txt"
    r = vk("keys", "generate", "--out", str(path))
    assert r.returncode == 0, r.stderr
    recipient = r.stdout.decode()
    assert recipient.startswith("age1") and recipient.count("\n") == 1
    assert str(path) in r.stderr.decode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    assert f"# public key: {recipient.strip()}".encode() in before
    again = vk("keys", "generate", "--out", str(path))
    assert again.returncode == 2
    assert f"{path}: already exists; refusing to overwrite it" in again.stderr.decode()
    assert path.read_bytes() == before


def test_keys_generate_default_location(tmp_path: Path) -> None:
    r = vk("keys", "generate", home=tmp_path)
    assert r.returncode == 0, r.stderr
    path = tmp_path / ".config" / "vkbackup" / "identity.txt"
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    r = vk("keys", "generate", "--passphrase", home=tmp_path, env={"VKBACKUP_PASSPHRASE": "x" * 12})
    assert r.returncode == 0, r.stderr
    assert (path.parent / "identity.age").read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE")


def test_keys_generate_help_documents_the_default() -> None:
    r = vk("keys", "generate", "--help")
    assert b"~/.config/vkbackup/identity.txt" in r.stdout


def test_keys_generate_pq_and_mixed_recipients_with_stock_age_13(
    tmp_path: Path, keypair: tuple[Path, str], age13_bin: str, age13_keygen_bin: str
) -> None:
    path = tmp_path / "pq.txt"
    r = vk("keys", "generate", "--pq", "--out", str(path))
    assert r.returncode == 0, r.stderr
    pq = r.stdout.decode()
    assert pq.startswith("age1pq1") and pq.count("\n") == 1
    pq = pq.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "AGE-SECRET-KEY-PQ-1" in path.read_text()
    from_age = subprocess.run(
        [age13_keygen_bin, "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert from_age == pq
    classic_file, classic = keypair
    data = os.urandom(2 * CHUNK + 9)
    mixed = vk("encrypt", "-r", pq, "-r", classic, stdin=data)
    assert mixed.returncode == 0, mixed.stderr
    assert b"only as strong as X25519" in mixed.stderr  # the mix is said, not hidden
    for ident in (path, classic_file):
        opened = subprocess.run(
            [age13_bin, "-d", "-i", str(ident)], input=mixed.stdout, capture_output=True
        )
        assert opened.returncode == 0 and opened.stdout == data, opened.stderr
        back = vk("decrypt", "-i", str(ident), stdin=mixed.stdout)
        assert back.returncode == 0 and back.stdout == data
    ct = subprocess.run([age13_bin, "-r", pq], input=data, capture_output=True, check=True).stdout
    back = vk("decrypt", "-i", str(path), stdin=ct)
    assert back.returncode == 0 and back.stdout == data


def test_encrypt_to_several_recipients_opens_with_stock_age(
    tmp_path: Path, keypair: tuple[Path, str], age_bin: str, age_keygen_bin: str
) -> None:
    ops_file, ops = keypair
    glass_file = tmp_path / "glass.txt"
    subprocess.run([age_keygen_bin, "-o", str(glass_file)], check=True, capture_output=True)
    glass = subprocess.run(
        [age_keygen_bin, "-y", str(glass_file)], check=True, capture_output=True, text=True
    ).stdout.strip()
    data = os.urandom(3 * CHUNK + 17)
    r = vk("encrypt", "-r", ops, "--recipient", glass, stdin=data)
    assert r.returncode == 0, r.stderr
    for ident in (ops_file, glass_file):
        assert age("-d", "-i", str(ident), stdin=r.stdout) == data
        back = vk("decrypt", "-i", str(ident), stdin=r.stdout)
        assert back.returncode == 0 and back.stdout == data


def test_decrypt_what_stock_age_encrypted(keypair: tuple[Path, str], age_bin: str) -> None:
    ident, recipient = keypair
    for size in (0, CHUNK, CHUNK + 1):
        data = os.urandom(size)
        for armor in ([], ["-a"]):
            ct = age("-e", *armor, "-r", recipient, stdin=data)
            r = vk("decrypt", "-i", str(ident), stdin=ct)
            assert r.returncode == 0, r.stderr
            assert r.stdout == data


def test_decrypt_age_passphrase_file_from_env_and_file(tmp_path: Path, age_bin: str) -> None:
    data = os.urandom(CHUNK + 3)
    made = run_with_tty([age_bin, "-p"], [PASSPHRASE, PASSPHRASE], stdin=data)
    assert made.returncode == 0, made.transcript
    r = vk("decrypt", stdin=made.stdout, env={"VKBACKUP_PASSPHRASE": PASSPHRASE})
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE + "\n")
    r = vk("decrypt", "--passphrase-file", str(pass_file), stdin=made.stdout)
    assert r.returncode == 0 and r.stdout == data
    wrong = vk("decrypt", stdin=made.stdout, env={"VKBACKUP_PASSPHRASE": "nope nope"})
    assert wrong.returncode == 12  # ExitCode.WRONG_KEY
    assert b"<stdin>: incorrect passphrase" in wrong.stderr
    assert wrong.stdout == b""
    assert b"nope nope" not in wrong.stderr


def test_passphrase_prompts_on_the_terminal(tmp_path: Path, age_bin: str) -> None:
    # keys generate --passphrase: asks twice on the tty; stock age opens the result.
    path = tmp_path / "identity.age"
    argv = [
        sys.executable,
        "-m",
        "vkbackup",
        "keys",
        "generate",
        "--passphrase",
        "--out",
        str(path),
    ]
    made = run_with_tty(argv, [PASSPHRASE, PASSPHRASE])
    assert made.returncode == 0, (made.stderr, made.transcript)
    assert PASSPHRASE not in made.transcript  # echo was off
    recipient = made.stdout.decode().strip()
    data = os.urandom(CHUNK + 9)
    ct = age("-e", "-r", recipient, stdin=data)
    opened = run_with_tty([age_bin, "-d", "-i", str(path)], [PASSPHRASE], stdin=ct)
    assert opened.returncode == 0 and opened.stdout == data
    # vkbackup decrypt -i asks for the identity file's passphrase on the tty.
    argv = [sys.executable, "-m", "vkbackup", "decrypt", "-i", str(path)]
    back = run_with_tty(argv, [PASSPHRASE], stdin=ct)
    assert back.returncode == 0, (back.stderr, back.transcript)
    assert back.stdout == data
    # Confirmation mismatch is refused and writes nothing.
    other = tmp_path / "other.age"
    argv = [
        sys.executable,
        "-m",
        "vkbackup",
        "keys",
        "generate",
        "--passphrase",
        "--out",
        str(other),
    ]
    bad = run_with_tty(argv, [PASSPHRASE, PASSPHRASE + "x"])
    assert bad.returncode == 1 and b"did not match" in bad.stderr
    assert not other.exists()


def test_encrypt_with_passphrase_opens_in_age(age_bin: str) -> None:
    data = os.urandom(100)
    r = vk("encrypt", "-p", stdin=data, env={"VKBACKUP_PASSPHRASE": PASSPHRASE})
    assert r.returncode == 0, r.stderr
    opened = run_with_tty([age_bin, "-d"], [PASSPHRASE], stdin=r.stdout)
    assert opened.returncode == 0 and opened.stdout == data


def test_tampered_input_fails_with_the_object_named(keypair: tuple[Path, str]) -> None:
    ident, recipient = keypair
    data = os.urandom(3 * 1024 * 1024 + 5)
    ct = vk("encrypt", "-r", recipient, stdin=data).stdout
    bad = bytearray(ct)
    bad[-1] ^= 0x80
    r = vk("decrypt", "-i", str(ident), stdin=bytes(bad))
    assert r.returncode == 1
    assert b"vkbackup: error: <stdin>: chunk 48 failed authentication" in r.stderr
    assert b"Traceback" not in r.stderr
    # Only authenticated chunks were written: a chunk-aligned prefix, never the bad tail.
    assert r.stdout == data[: len(r.stdout)]
    assert len(r.stdout) % CHUNK == 0 and len(r.stdout) <= 48 * CHUNK
    r = vk("decrypt", "-i", str(ident), stdin=ct[:-1000])
    assert r.returncode == 1 and b"<stdin>:" in r.stderr


def test_usage_errors(keypair: tuple[Path, str]) -> None:
    _, recipient = keypair
    r = vk("encrypt", stdin=b"x")
    assert r.returncode == 2 and b"at least one -r RECIPIENT" in r.stderr
    r = vk("encrypt", "-r", "age1notakey", stdin=b"x")
    assert r.returncode == 2 and b"invalid age recipient 'age1notakey'" in r.stderr
    r = vk("encrypt", "-r", recipient, "-p", stdin=b"x")
    assert r.returncode == 2 and b"not both" in r.stderr
    r = vk("decrypt", "--passphrase", "secret", stdin=b"x")
    assert r.returncode == 2  # no way to pass a passphrase on the command line


def test_without_identity_or_terminal_the_errors_say_what_to_do(
    keypair: tuple[Path, str],
) -> None:
    _, recipient = keypair
    ct = vk("encrypt", "-r", recipient, stdin=b"data").stdout
    r = vk("decrypt", stdin=ct)
    assert r.returncode == 1
    assert b"an identity file is needed" in r.stderr
    scrypt = vk("encrypt", "-p", stdin=b"data", env={"VKBACKUP_PASSPHRASE": PASSPHRASE}).stdout
    r = vk("decrypt", stdin=scrypt)
    assert r.returncode == 1
    assert b"no terminal to ask it on" in r.stderr and b"VKBACKUP_PASSPHRASE" in r.stderr
