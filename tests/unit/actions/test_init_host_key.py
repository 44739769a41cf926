"""`vkbackup init` trusts a host key on first use only. A key of a new type for a
host known_hosts already knows (it has the host's ssh-rsa key, the server now
shows ssh-ed25519) is no first contact: it is shown with the known keys and
needs an explicit confirmation (issue 16, finding 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.unit.transport.test_host_keys import ed25519, line, rsa
from vkbackup.actions import init as init_module
from vkbackup.actions.init import HostKeyOffer, trust_host_key
from vkbackup.errors import HostKeyError
from vkbackup.transport.ssh import fingerprint

ADDRESS, PORT = "203.0.113.7", 2222
NAME = "[203.0.113.7]:2222"


def serve(monkeypatch: pytest.MonkeyPatch, key: paramiko.PKey) -> list[list[str]]:
    """Make the host show *key*; return the key types each fetch preferred."""
    prefs: list[list[str]] = []

    def fetch(address: str, port: int, timeout: float = 15.0, prefer: Any = ()) -> paramiko.PKey:
        assert (address, port) == (ADDRESS, PORT)
        prefs.append(list(prefer))
        return key

    monkeypatch.setattr(init_module, "fetch_host_key", fetch)
    return prefs


class Asker:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.offers: list[HostKeyOffer] = []

    def __call__(self, offer: HostKeyOffer) -> bool:
        self.offers.append(offer)
        return self.answer


def test_a_new_key_type_for_a_known_host_is_shown_with_the_known_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    known, offered = rsa(), ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, known))
    prefs = serve(monkeypatch, offered)
    ask = Asker(False)
    with pytest.raises(HostKeyError, match="not trusted"):
        trust_host_key(ADDRESS, PORT, kh, ask)
    assert prefs == [["ssh-rsa"]]  # the known type was asked for first
    [offer] = ask.offers
    assert not offer.first_contact
    assert offer.describe() == f"ssh-ed25519 {fingerprint(offered)}"
    assert [k.describe() for k in offer.known] == [f"ssh-rsa {fingerprint(known)}"]
    assert offer.known_hosts == kh and offer.name == NAME
    assert kh.read_text() == line(NAME, known)  # declined: nothing written


def test_a_confirmed_new_key_type_is_added_beside_the_known_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    known, offered = rsa(), ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, known).rstrip("\n"))  # no final newline
    serve(monkeypatch, offered)
    assert trust_host_key(ADDRESS, PORT, kh, Asker(True)) == fingerprint(offered)
    assert kh.read_text() == line(NAME, known) + line(NAME, offered)


def test_a_first_contact_stays_a_first_contact(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    offered = ed25519()
    kh = tmp_path / "ssh" / "known_hosts"
    prefs = serve(monkeypatch, offered)
    ask = Asker(True)
    trust_host_key(ADDRESS, PORT, kh, ask)
    assert prefs == [[]]
    assert ask.offers[0].first_contact and ask.offers[0].known == ()
    assert kh.read_text() == line(NAME, offered)


def test_a_known_key_is_trusted_without_a_question(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, rsa()) + line(NAME, key))
    serve(monkeypatch, key)
    ask = Asker(False)
    assert trust_host_key(ADDRESS, PORT, kh, ask) == fingerprint(key)
    assert ask.offers == []


def test_a_changed_key_is_refused_without_a_question(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    known, offered = ed25519(), ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, known))
    serve(monkeypatch, offered)
    ask = Asker(True)
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as exc:
        trust_host_key(ADDRESS, PORT, kh, ask)
    assert fingerprint(known) in str(exc.value) and fingerprint(offered) in str(exc.value)
    assert ask.offers == [] and kh.read_text() == line(NAME, known)
