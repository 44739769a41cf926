"""Identity files and passphrases: the layout age-keygen writes, 0600, no overwrite."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vkbackup.crypto import (
    PassphraseSource,
    X25519Identity,
    decrypt_bytes,
    default_identity_path,
    encrypt_bytes,
    format_identity_file,
    generate_identity,
    load_identity_file,
    parse_identities,
    parse_identity,
    parse_recipient,
    read_passphrase,
    write_identity_file,
)
from vkbackup.crypto import keys as keys_module
from vkbackup.crypto.armor import BEGIN, armor_encode
from vkbackup.crypto.recipients import ScryptRecipient
from vkbackup.errors import ConfigError, CryptoError
from vkbackup.logs import redact


def pw(value: str = "open sesame 42") -> PassphraseSource:
    return PassphraseSource(environ={"VKBACKUP_PASSPHRASE": value})


def test_identity_file_layout_matches_age_keygen() -> None:
    ident = generate_identity()
    when = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    text = format_identity_file(ident, when)
    assert text == (
        f"# created: 2026-01-02T03:04:05Z\n# public key: {ident.recipient()}\n{ident.to_string()}\n"
    )
    assert parse_identities(text, "f") == [ident]


def test_identity_and_recipient_strings_round_trip() -> None:
    ident = generate_identity()
    assert ident.to_string().startswith("AGE-SECRET-KEY-1")
    assert ident.to_string() == ident.to_string().upper()
    assert parse_identity(ident.to_string()) == ident
    r = str(ident.recipient())
    assert r.startswith("age1") and len(r) == 62
    assert parse_recipient(r) == ident.recipient()


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("age1qqqqqqqqqqqqqqqqqqqq", "checksum|separator"),
        ("AGE1ZVKYG2LQZRAA2LNJVQEJ32NKUU0UES2S82HZRYE869XEEXVN73EQUNUJWJ", "not an age1"),
        ("age2zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj", "separator"),
        ("", "separator"),
    ],
)
def test_bad_recipient_strings_are_named_truncated(bad: str, why: str) -> None:
    with pytest.raises(CryptoError, match=why) as info:
        parse_recipient(bad)
    message = str(info.value)
    assert message.startswith("invalid age recipient")
    assert repr(bad[:24] + ("..." if len(bad) > 24 else "")) in message
    assert bad[30:] == "" or bad[30:] not in message


def test_lowercase_secret_key_is_refused_like_stock_age() -> None:
    with pytest.raises(CryptoError, match="malformed age secret key"):
        parse_identity(generate_identity().to_string().lower())


def test_parse_identities_skips_comments_and_blank_lines_and_names_bad_lines() -> None:
    a, b = generate_identity(), generate_identity()
    text = f"# comment\n\n{a.to_string()}\r\n  \n# x\n{b.to_string()}\n"
    assert parse_identities(text, "keys.txt") == [a, b]
    secret = a.to_string()
    broken = secret[:-1] + ("Q" if secret[-1] != "Q" else "P")
    with pytest.raises(CryptoError, match=r"^keys\.txt: line 3: malformed") as info:
        parse_identities(f"# c\n\n{broken}\n", "keys.txt")
    assert secret[20:] not in str(info.value)
    for line, why in [
        ("AGE-PLUGIN-YUBIKEY-1QQQ", "plugin identities are not supported"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "SSH or PEM keys"),
        ("hello", "line 1 is not an age identity"),
    ]:
        with pytest.raises(CryptoError, match=why):
            parse_identities(line + "\n", "keys.txt")
    with pytest.raises(CryptoError, match=r"keys\.txt: no identity found"):
        parse_identities("# only comments\n", "keys.txt")


def test_write_then_load_plain(tmp_path: Path) -> None:
    ident = generate_identity()
    path = tmp_path / "deep" / "er" / "identity.txt"
    old = os.umask(0)
    try:
        write_identity_file(path, ident)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_identity_file(path) == [ident]
    text = path.read_text()
    assert f"# public key: {ident.recipient()}\n" in text


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "identity.txt"
    path.write_text("precious")
    with pytest.raises(
        CryptoError, match=re.escape(f"{path}: already exists; refusing to overwrite")
    ):
        write_identity_file(path, generate_identity())
    assert path.read_text() == "precious"


def test_passphrase_protected_identity_file(tmp_path: Path) -> None:
    ident = generate_identity()
    path = tmp_path / "identity.age"
    write_identity_file(path, ident, passphrase="open sesame 42", work_factor=10)
    raw = path.read_bytes()
    assert raw.startswith(BEGIN + b"\n")
    assert ident.to_string().encode() not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    asked: list[str] = []

    def source() -> str:
        asked.append("x")
        return "open sesame 42"

    assert load_identity_file(path, source) == [ident]
    assert asked == ["x"]
    with pytest.raises(CryptoError, match=re.escape(f"{path}: incorrect passphrase")):
        load_identity_file(path, pw("wrong"))
    with pytest.raises(
        CryptoError, match=re.escape(f"{path}: the identity file is passphrase-encrypted")
    ):
        load_identity_file(path)


def test_binary_passphrase_identity_file_also_loads(tmp_path: Path) -> None:
    ident = generate_identity()
    path = tmp_path / "identity.age"
    content = format_identity_file(ident).encode()
    path.write_bytes(encrypt_bytes(content, [ScryptRecipient("open sesame 42", 10)]))
    path.chmod(0o600)
    assert load_identity_file(path, pw()) == [ident]


def test_encrypted_identity_file_with_an_x25519_recipient_is_refused(tmp_path: Path) -> None:
    other = generate_identity()
    path = tmp_path / "identity.age"
    content = format_identity_file(generate_identity()).encode()
    path.write_bytes(armor_encode(encrypt_bytes(content, [other.recipient()])))
    path.chmod(0o600)
    with pytest.raises(CryptoError, match=str(path)):
        load_identity_file(path, pw())


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(CryptoError, match=re.escape(f"{missing}: cannot read identity file")):
        load_identity_file(missing)
    big = tmp_path / "big.txt"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(CryptoError, match=re.escape(f"{big}: too large")):
        load_identity_file(big)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    binary.chmod(0o600)
    with pytest.raises(CryptoError, match=re.escape(f"{binary}: not an identity file")):
        load_identity_file(binary)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
@pytest.mark.parametrize("encrypted", [False, True])
def test_key_file_readable_by_others_is_refused_with_the_chmod(
    tmp_path: Path, mode: int, encrypted: bool
) -> None:
    """As OpenSSH refuses such a key, and the config file holding a credential."""
    path = tmp_path / "my identity.txt"
    content = format_identity_file(generate_identity()).encode()
    if encrypted:
        content = encrypt_bytes(content, [ScryptRecipient("open sesame 42", 10)])
    path.write_bytes(content)
    path.chmod(mode)
    asked: list[bool] = []

    def passphrase() -> str:
        asked.append(True)
        return "open sesame 42"

    with pytest.raises(ConfigError) as raised:
        load_identity_file(path, passphrase)
    assert f"{path}: identity file is readable by group or others (mode {mode:04o})" in str(
        raised.value
    )
    assert raised.value.hint is not None
    assert raised.value.hint.startswith(f"chmod 600 '{path}'")
    assert asked == []  # refused before a passphrase is asked for
    path.chmod(0o600)
    assert len(load_identity_file(path, passphrase)) == 1


def test_default_identity_path() -> None:
    env = {"HOME": "/home/ops"}
    assert default_identity_path(env) == Path("/home/ops/.config/vkbackup/identity.txt")
    assert default_identity_path(env, passphrase=True).name == "identity.age"
    xdg = {"HOME": "/home/ops", "XDG_CONFIG_HOME": "/cfg"}
    assert default_identity_path(xdg) == Path("/cfg/vkbackup/identity.txt")


def test_read_passphrase_sources_in_order(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_bytes(b"from-file-pass\n")
    env = {"VKBACKUP_PASSPHRASE": "from-env-pass"}
    assert read_passphrase(f, environ=env) == "from-file-pass"
    assert read_passphrase(None, environ=env) == "from-env-pass"
    assert read_passphrase(None, env_var="OTHER", environ={"OTHER": "other-pass"}) == "other-pass"
    f.write_bytes(b"keeps  spaces \r\n")
    assert read_passphrase(f, environ={}) == "keeps  spaces "
    f.write_bytes(b"two\nlines\n")
    assert read_passphrase(f, environ={}) == "two\nlines"
    # Registered as secrets: they never reach a log line.
    assert "from-env-pass" not in redact("x from-env-pass y")


def test_read_passphrase_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(CryptoError, match=re.escape(f"{empty}: passphrase file is empty")):
        read_passphrase(empty, environ={})
    with pytest.raises(CryptoError, match="cannot read passphrase file"):
        read_passphrase(tmp_path / "missing", environ={})
    monkeypatch.setattr(keys_module, "_TTY", str(tmp_path / "no-tty"))
    with pytest.raises(CryptoError, match="no terminal to ask it on") as info:
        read_passphrase(None, environ={})
    assert info.value.hint is not None and "VKBACKUP_PASSPHRASE" in info.value.hint


def test_passphrase_source_reads_once() -> None:
    env = {"VKBACKUP_PASSPHRASE": "cached-pass"}
    source = PassphraseSource(environ=env)
    assert source() == "cached-pass"
    env["VKBACKUP_PASSPHRASE"] = "changed"
    assert source() == "cached-pass"
    assert "cached-pass" not in repr(source)


def test_small_object_helpers() -> None:
    ident = generate_identity()
    doc = b'{"snapshot": "2026-01-01"}'
    assert decrypt_bytes(encrypt_bytes(doc, [ident.recipient()]), [ident]) == doc
    assert isinstance(ident, X25519Identity)
