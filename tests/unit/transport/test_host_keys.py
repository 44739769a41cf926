"""Host keys of normal commands (snapshot, restore, verify...): known_hosts is read
whole, every key of a host counts, and nothing but a key known_hosts holds is
accepted. A known host whose server offers a key of another type is refused
like a changed key, before any authentication (issue 16, finding 1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vkbackup.config.model import HostConfig
from vkbackup.errors import HostKeyError
from vkbackup.transport import ssh as ssh_module
from vkbackup.transport.ssh import (
    KnownKey,
    fingerprint,
    host_key_algorithms,
    host_key_status,
    read_known_keys,
)

NAME = "[203.0.113.7]:2222"


def ed25519() -> paramiko.PKey:
    pub = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    typ, b64 = pub.decode().split()
    return paramiko.PKey.from_type_string(typ, base64.b64decode(b64))


def rsa() -> paramiko.PKey:
    return paramiko.RSAKey.generate(1024)


def line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def hashed(name: str) -> str:
    salt = b"s" * 20
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


def host(kh: Path) -> HostConfig:
    return HostConfig(name="prod", address="203.0.113.7", port=2222, known_hosts=kh)


# -- reading known_hosts -------------------------------------------------------------


def test_read_known_keys_every_key_of_the_host_any_name_form(tmp_path: Path) -> None:
    a, b, c, other = ed25519(), rsa(), paramiko.ECDSAKey.generate(), ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(
        "# comment\n\n"
        + line(NAME, a)
        + line(f"prod.example,{NAME}", b)
        + line(hashed(NAME), c)
        + line("[203.0.113.7]:22", other)  # another port: another host
        + line("203.0.113.7", other)
        + f"{NAME} ssh-ed25519 !!not-base64!!\n"
        + "@cert-authority * "
        + line("", other).strip()
        + "\n"
    )
    keys = read_known_keys(kh, NAME)
    assert [k.blob for k in keys] == [a.asbytes(), b.asbytes(), c.asbytes()]
    assert [k.type for k in keys] == ["ssh-ed25519", "ssh-rsa", c.get_name()]
    assert keys[0].fingerprint == fingerprint(a)
    assert not any(k.revoked for k in keys)


def test_a_key_type_paramiko_cannot_load_still_makes_the_host_known(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    blob = base64.b64encode(b"\x00\x00\x00\x1ask-ssh-ed25519@openssh.com...").decode()
    kh.write_text(f"{NAME} sk-ssh-ed25519@openssh.com {blob}\n")
    keys = read_known_keys(kh, NAME)
    assert [k.type for k in keys] == ["sk-ssh-ed25519@openssh.com"]
    assert host_key_status(keys, ed25519()) == "new-type"


def test_revoked_lines_apply_to_every_host(tmp_path: Path) -> None:
    bad = ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"@revoked * {bad.get_name()} {bad.get_base64()}\n" + line(NAME, rsa()))
    keys = read_known_keys(kh, NAME)
    assert [k.revoked for k in keys] == [True, False]
    assert host_key_status(keys, bad) == "revoked"


def test_missing_file_holds_no_keys(tmp_path: Path) -> None:
    assert read_known_keys(tmp_path / "nope", NAME) == []


def test_host_key_status() -> None:
    a, b, r = ed25519(), ed25519(), rsa()
    ka = KnownKey(a.get_name(), a.asbytes())
    kr = KnownKey(r.get_name(), r.asbytes())
    assert host_key_status([], a) == "unknown-host"
    assert host_key_status([ka], a) == "known"
    assert host_key_status([kr, ka], a) == "known"
    assert host_key_status([ka], b) == "changed"
    assert host_key_status([kr], a) == "new-type"
    assert host_key_status([KnownKey(a.get_name(), a.asbytes(), revoked=True)], a) == "revoked"


def test_an_ssh_rsa_line_prefers_the_rsa_sha2_algorithms() -> None:
    # paramiko (and OpenSSH >= 8.8) no longer negotiate "ssh-rsa": preferring the
    # literal type would let the server show another key type it also has
    assert host_key_algorithms(["ssh-rsa"])[:2] == ["rsa-sha2-512", "rsa-sha2-256"]
    assert host_key_algorithms(["ssh-ed25519", "ssh-ed25519"]) == ["ssh-ed25519"]


# -- connect -----------------------------------------------------------------------


class FakeTransport:
    """A paramiko Transport whose server shows *key*; authentication is recorded."""

    def __init__(self, key: paramiko.PKey) -> None:
        self.key = key
        self.auth: list[Any] = []
        self.closed = False

    def start_client(self, timeout: float | None = None) -> None:
        return None

    def get_remote_server_key(self) -> paramiko.PKey:
        return self.key

    def auth_publickey(self, user: str, key: paramiko.PKey) -> None:
        self.auth.append(key)

    def close(self) -> None:
        self.closed = True


def connect_showing(
    monkeypatch: pytest.MonkeyPatch, kh: Path, key: paramiko.PKey
) -> tuple[FakeTransport, list[Any]]:
    fake = FakeTransport(key)
    prefer: list[Any] = []

    def new_transport(sock: Any, key_types: list[str] | None = None) -> FakeTransport:
        prefer.append(key_types)
        return fake

    monkeypatch.setattr(ssh_module, "_open_socket", lambda *a: socket.socket())
    monkeypatch.setattr(ssh_module, "_new_transport", new_transport)
    return fake, prefer


def test_connect_refuses_a_new_key_type_for_a_known_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    known, offered = rsa(), ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, known))
    fake, prefer = connect_showing(monkeypatch, kh, offered)
    with pytest.raises(HostKeyError) as exc:
        ssh_module.connect(host(kh))
    msg = str(exc.value)
    assert NAME in msg and str(kh) in msg and "new type" in msg
    assert fingerprint(offered) in msg and fingerprint(known) in msg
    assert "vkbackup init" in (exc.value.hint or "")
    assert fake.auth == [] and fake.closed
    assert kh.read_text() == line(NAME, known)  # nothing added
    assert prefer[0][:2] == ["rsa-sha2-512", "rsa-sha2-256"]


def test_connect_refuses_a_changed_key_of_a_known_type(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    known, offered = ed25519(), ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, known))
    fake, _ = connect_showing(monkeypatch, kh, offered)
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as exc:
        ssh_module.connect(host(kh))
    assert fingerprint(offered) in str(exc.value) and fingerprint(known) in str(exc.value)
    assert fake.auth == [] and kh.read_text() == line(NAME, known)


def test_connect_refuses_a_revoked_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, key) + f"@revoked * {key.get_name()} {key.get_base64()}\n")
    fake, _ = connect_showing(monkeypatch, kh, key)
    with pytest.raises(HostKeyError, match="revoked"):
        ssh_module.connect(host(kh))
    assert fake.auth == []


def test_connect_refuses_an_unknown_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(line("other.example", ed25519()))
    fake, _ = connect_showing(monkeypatch, kh, ed25519())
    with pytest.raises(HostKeyError, match="not in"):
        ssh_module.connect(host(kh))
    assert fake.auth == []
