"""Host key types against a real OpenSSH server that has an ed25519 AND an RSA host
key (issue 16, finding 1): the client asks for the type known_hosts knows (an
ssh-rsa line is negotiated as rsa-sha2-*), so a known RSA key is found even
though ed25519 is paramiko's first choice; a known host whose server has none
of the known types is refused by normal commands and is no first contact for
`vkbackup init`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.transport.conftest import SSHD, Sshd, _free_port
from tests.realparts import require
from vkbackup.actions.init import HostKeyOffer, trust_host_key
from vkbackup.errors import HostKeyError
from vkbackup.transport.ssh import connect


@pytest.fixture(scope="module")
def sshd2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        require(f"openssh-server is not installed, no {SSHD} (apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("sshd2")
    os.chmod(d, 0o700)
    for name, typ in (("host_ed25519", "ed25519"), ("host_rsa", "rsa"), ("client", "ed25519")):
        subprocess.run(["ssh-keygen", "-q", "-t", typ, "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nHostKey {d}/host_rsa\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
    yield Sshd(port, d, d / "client", d / "known_hosts", "")
    proc.terminate()
    proc.wait(timeout=10)


def pin(s: Sshd, kh: Path, pub: Path) -> str:
    typ, key = pub.read_text().split()[:2]
    text = f"[127.0.0.1]:{s.port} {typ} {key}\n"
    kh.write_text(text)
    return text


def refuse(offers: list[HostKeyOffer]) -> Callable[[HostKeyOffer], bool]:
    """An `ask` that records each offer and declines it."""

    def ask(o: HostKeyOffer) -> bool:
        offers.append(o)
        return False

    return ask


def fp(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True)
    return out.stdout.split()[1]


def test_a_known_rsa_key_is_found_though_the_server_has_ed25519_too(
    sshd2: Sshd, tmp_path: Path
) -> None:
    kh = tmp_path / "known_hosts"
    text = pin(sshd2, kh, sshd2.dir / "host_rsa.pub")
    t = connect(sshd2.host(known_hosts=kh))
    try:
        assert t.run(["echo", "hi"]).stdout == b"hi\n"
    finally:
        t.close()
    offers: list[HostKeyOffer] = []
    trust_host_key("127.0.0.1", sshd2.port, kh, refuse(offers))
    assert offers == [] and kh.read_text() == text


def test_a_known_host_with_none_of_the_known_types(sshd2: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(other)], check=True)
    kh = tmp_path / "known_hosts"
    text = pin(sshd2, kh, tmp_path / "ecdsa.pub")
    with pytest.raises(HostKeyError, match="new type") as exc:
        connect(sshd2.host(known_hosts=kh))
    assert fp(tmp_path / "ecdsa.pub") in str(exc.value)
    offers: list[HostKeyOffer] = []
    with pytest.raises(HostKeyError, match="not trusted"):
        trust_host_key("127.0.0.1", sshd2.port, kh, refuse(offers))
    [o] = offers
    assert not o.first_contact
    assert [k.fingerprint for k in o.known] == [fp(tmp_path / "ecdsa.pub")]
    assert o.fingerprint in (fp(sshd2.dir / "host_ed25519.pub"), fp(sshd2.dir / "host_rsa.pub"))
    assert kh.read_text() == text
