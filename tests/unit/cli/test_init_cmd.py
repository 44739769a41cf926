"""`vkbackup init`'s host-key questions: a key of a new type for a known host is
shown with the known keys and needs an explicit confirmation, which --yes is
not; with no terminal to ask on, init refuses and says how to accept (issue 16,
finding 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import paramiko
import pytest
from click.testing import CliRunner

from tests.unit.transport.test_host_keys import ed25519, line, rsa
from vkbackup.actions import init as init_module
from vkbackup.actions.init import HostKeyOffer
from vkbackup.cli.init_cmd import host_key_asker
from vkbackup.cli.main import cli
from vkbackup.errors import HostKeyError
from vkbackup.transport.ssh import KnownKey, fingerprint

NAME = "[203.0.113.7]:2222"
RECIPIENT = "age1" + "q" * 58


def offer(key: paramiko.PKey, known: list[paramiko.PKey], kh: Path) -> HostKeyOffer:
    return HostKeyOffer(
        NAME,
        key.get_name(),
        fingerprint(key),
        tuple(KnownKey(k.get_name(), k.asbytes()) for k in known),
        kh,
    )


def ask_with(
    capsys: pytest.CaptureFixture[str],
    o: HostKeyOffer,
    *,
    yes: bool = False,
    accept: str | None = None,
    interactive: bool = False,
) -> tuple[bool | BaseException, str]:
    ask = host_key_asker(
        "203.0.113.7:2222", yes=yes, accept=accept, interactive=lambda: interactive
    )
    try:
        got: bool | BaseException = ask(o)
    except HostKeyError as e:
        got = e
    return got, capsys.readouterr().err


def test_new_key_type_without_a_terminal_is_refused_even_with_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    known, new = rsa(), ed25519()
    kh = tmp_path / "known_hosts"
    got, err = ask_with(capsys, offer(new, [known], kh), yes=True)
    assert isinstance(got, HostKeyError)
    msg = str(got)
    assert NAME in msg and str(kh) in msg and "--yes is not one" in msg
    assert f"--accept-host-key {fingerprint(new)}" in (got.hint or "")
    # shown: the new key and the known one, with their types
    assert f"ssh-ed25519 {fingerprint(new)}" in err
    assert f"ssh-rsa {fingerprint(known)}" in err
    assert "NEW TYPE" in err


def test_new_key_type_on_a_terminal_asks_and_defaults_to_no(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[dict[str, Any]] = []

    def confirm(text: str, **kw: Any) -> bool:
        asked.append({"text": text, **kw})
        return False

    monkeypatch.setattr(click, "confirm", confirm)
    got, _ = ask_with(
        capsys, offer(ed25519(), [rsa()], tmp_path / "kh"), yes=True, interactive=True
    )
    assert got is False
    assert asked[0]["default"] is False and "NEW ssh-ed25519" in asked[0]["text"]


def test_new_key_type_accepted_by_its_fingerprint_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = ed25519()
    o = offer(new, [rsa()], tmp_path / "kh")
    assert ask_with(capsys, o, accept=fingerprint(new))[0] is True
    got, _ = ask_with(capsys, o, accept=fingerprint(ed25519()))
    assert isinstance(got, HostKeyError) and "not the --accept-host-key" in str(got)


def test_first_contact_is_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = ed25519()
    got, err = ask_with(capsys, offer(new, [], tmp_path / "kh"), yes=True)
    assert got is True
    assert f"203.0.113.7:2222 offers host key ssh-ed25519 {fingerprint(new)}" in err
    assert "trusting it (--yes)" in err


def test_init_command_refuses_a_new_key_type_without_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known, new = rsa(), ed25519()
    kh = tmp_path / "known_hosts"
    kh.write_text(line(NAME, known))
    cfg = tmp_path / "base.toml"
    cfg.write_text(
        f'[storage]\ntype = "local"\npath = "{tmp_path / "store"}"\n\n'
        f'[encryption]\nrecipients = ["{RECIPIENT}"]\n'
    )
    cfg.chmod(0o600)
    monkeypatch.setattr(init_module, "fetch_host_key", lambda *a, **kw: new)

    def no_connect(*a: Any) -> Any:
        raise AssertionError("connected to a host whose key was not trusted")

    monkeypatch.setattr("vkbackup.cli.context.AppContext.connect", no_connect)
    out = tmp_path / "prod.toml"
    res = CliRunner().invoke(
        cli,
        [
            "--config",
            str(cfg),
            "init",
            "root@203.0.113.7:2222",
            "--known-hosts",
            str(kh),
            "--yes",
            "--out",
            str(out),
        ],
        standalone_mode=False,
    )
    assert isinstance(res.exception, HostKeyError), res.output
    assert NAME in str(res.exception) and str(kh) in str(res.exception)
    assert "--accept-host-key" in (res.exception.hint or "")
    assert kh.read_text() == line(NAME, known)
    assert not out.exists()


# -- [signing] ------------------------------------------------------------------------------


def test_init_creates_a_signing_key_beside_the_config_and_configures_it(tmp_path: Path) -> None:
    import tomllib

    from vkbackup.actions.init import signing_toml
    from vkbackup.cli.init_cmd import _signing
    from vkbackup.config import parse_config
    from vkbackup.config.model import SigningConfig
    from vkbackup.signing import Trust

    out = tmp_path / "etc" / "vkbackup.toml"
    signing, public = _signing(SigningConfig(), None, str(out))
    key = tmp_path / "etc" / "signing_ed25519"
    assert signing.key == key and key.stat().st_mode & 0o777 == 0o600
    assert public is not None and public.startswith("ssh-ed25519 AAAA")
    text = signing_toml(signing, public)
    assert public in text  # shown, as a comment, for the machines that restore
    cfg = parse_config(tomllib.loads(text), "<generated>")
    assert cfg.signing.key == key and cfg.signing.trusted == ()
    trust = Trust.from_config(cfg.signing)
    assert trust.key is not None
    # run again: the key is kept, not replaced
    again, public2 = _signing(SigningConfig(), None, str(out))
    assert again.key == key and public2 is not None
    assert public2.split()[:2] == public.split()[:2]


def test_init_keeps_the_current_signing_config(tmp_path: Path) -> None:
    from vkbackup.cli.init_cmd import _signing
    from vkbackup.config.model import SigningConfig

    current = SigningConfig(key=tmp_path / "k", trusted=("ssh-ed25519 AAAA x",))
    assert _signing(current, None, str(tmp_path / "x.toml")) == (current, None)
    assert not (tmp_path / "signing_ed25519").exists()
