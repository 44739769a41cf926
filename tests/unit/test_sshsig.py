"""SSH signatures: vkbackup's and OpenSSH's `ssh-keygen -Y` read each other's,
and every way a signature can be wrong is refused, naming the file."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.realparts import require
from vkbackup import sshsig
from vkbackup.errors import IntegrityError
from vkbackup.signing import generate_key_file, parse_public_line, read_private_key

MESSAGE = b'{"id": "20261130T020000Z-abcd"}\n'


@pytest.fixture(scope="module")
def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        require("ssh-keygen is missing (apt install openssh-client)")
    return path


def allowed_signers(tmp_path: Path, public_line: str) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(f'vkbackup namespaces="vkbackup" {public_line}\n')
    return path


def test_ssh_keygen_verifies_what_vkbackup_signs(tmp_path: Path, ssh_keygen: str) -> None:
    line = generate_key_file(tmp_path / "signing")
    key = read_private_key(tmp_path / "signing")
    (tmp_path / "m.json").write_bytes(MESSAGE)
    (tmp_path / "m.json.sig").write_bytes(sshsig.sign(key, MESSAGE))
    argv = [ssh_keygen, "-Y", "verify", "-f", str(allowed_signers(tmp_path, line))]
    argv += ["-I", "vkbackup", "-n", "vkbackup", "-s", str(tmp_path / "m.json.sig")]
    ok = subprocess.run(argv, input=MESSAGE, capture_output=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert b'Good "vkbackup" signature' in ok.stdout + ok.stderr
    bad = subprocess.run(argv, input=MESSAGE + b" ", capture_output=True, check=False)
    assert bad.returncode != 0


def test_vkbackup_verifies_what_ssh_keygen_signs(tmp_path: Path, ssh_keygen: str) -> None:
    key = tmp_path / "k"
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "m").write_bytes(MESSAGE)
    subprocess.run(
        [ssh_keygen, "-Y", "sign", "-f", str(key), "-n", "vkbackup", str(tmp_path / "m")],
        check=True,
        capture_output=True,
    )
    pub = parse_public_line((tmp_path / "k.pub").read_text(), "k.pub")
    signature = (tmp_path / "m.sig").read_bytes()
    assert sshsig.verify(signature, MESSAGE, [pub], "m") is pub
    # ssh-keygen -l prints the same fingerprint vkbackup names keys by
    shown = subprocess.run(
        [ssh_keygen, "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert sshsig.fingerprint(pub) in shown
    # the private key ssh-keygen wrote is one vkbackup signs with
    assert sshsig.verify(sshsig.sign(read_private_key(key), b"x"), b"x", [pub], "m") is pub


def test_generated_key_is_an_openssh_key_file_mode_0600(tmp_path: Path, ssh_keygen: str) -> None:
    path = tmp_path / "dir" / "signing"
    line = generate_key_file(path, comment="vkbackup-signing@backup")
    assert path.stat().st_mode & 0o777 == 0o600
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" vkbackup-signing@backup")
    derived = subprocess.run(
        [ssh_keygen, "-y", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert derived.split()[:2] == line.split()[:2]
    with pytest.raises(Exception, match="already exists"):
        generate_key_file(path)


def test_signature_checks_only_the_exact_message_by_a_trusted_key() -> None:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    sig = sshsig.sign(key, MESSAGE)
    assert sshsig.verify(sig, MESSAGE, [other.public_key(), key.public_key()], "m.json")
    with pytest.raises(IntegrityError, match=r"m\.json: BAD signature .*changed after"):
        sshsig.verify(sig, MESSAGE.replace(b"abcd", b"abce"), [key.public_key()], "m.json")
    with pytest.raises(IntegrityError, match=r"m\.json: signed by SHA256:\S+, which is not in"):
        sshsig.verify(sig, MESSAGE, [other.public_key()], "m.json")
    with pytest.raises(IntegrityError, match=r"not in signing\.trusted"):
        sshsig.verify(sig, MESSAGE, [], "m.json")


def test_a_signature_for_another_namespace_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    sig = sshsig.sign(key, MESSAGE, namespace="git")
    with pytest.raises(IntegrityError, match=r"m\.json: the signature is for namespace b'git'"):
        sshsig.verify(sig, MESSAGE, [key.public_key()], "m.json")


def _blob(sig: bytes) -> bytes:
    lines = sig.decode().strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


def _armor(blob: bytes) -> bytes:
    text = base64.b64encode(blob).decode()
    return f"{sshsig.BEGIN}\n{text}\n{sshsig.END}\n".encode()


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda b: b"", "no SSH SIGNATURE armor"),
        (lambda b: b"-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----\n", "base64"),
        (lambda b: b"x" * (sshsig.MAX_ARMORED + 1), "larger than"),
        (lambda b: _armor(b"SSHSIH" + _blob(b)[6:]), "bad magic"),
        (lambda b: _armor(_blob(b)[:6] + struct.pack(">I", 2) + _blob(b)[10:]), "unknown version"),
        (lambda b: _armor(_blob(b)[:40]), "truncated"),
        (lambda b: _armor(_blob(b) + b"\0"), "trailing bytes"),
        (lambda b: _armor(_blob(b).replace(b"sha512", b"sha999")), "unknown hash"),
    ],
)
def test_malformed_signatures_are_refused_naming_the_file(mangle: object, why: str) -> None:
    key = Ed25519PrivateKey.generate()
    sig = sshsig.sign(key, MESSAGE)
    assert callable(mangle)
    with pytest.raises(IntegrityError, match=rf"^snapshots/p/x\.json: .*{why}"):
        sshsig.verify(mangle(sig), MESSAGE, [key.public_key()], "snapshots/p/x.json")


def test_public_line_must_be_ed25519(tmp_path: Path, ssh_keygen: str) -> None:
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "e")], check=True
    )
    with pytest.raises(Exception, match=r"signing\.trusted\[0\]: must be an OpenSSH ed25519"):
        parse_public_line((tmp_path / "e.pub").read_text(), "signing.trusted[0]")
    with pytest.raises(Exception, match="not a valid ssh-ed25519 public key"):
        parse_public_line("ssh-ed25519 AAAAnotbase64", "signing.trusted[0]")


def test_private_key_file_readable_by_others_or_locked_is_refused(
    tmp_path: Path, ssh_keygen: str
) -> None:
    path = tmp_path / "signing"
    generate_key_file(path)
    path.chmod(0o640)
    with pytest.raises(Exception, match=r"readable by group or others \(mode 0640\)"):
        read_private_key(path)
    locked = tmp_path / "locked"
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(locked)], check=True
    )
    with pytest.raises(Exception, match="passphrase-protected"):
        read_private_key(locked)
    with pytest.raises(Exception, match="cannot read the signing key"):
        read_private_key(tmp_path / "missing")
