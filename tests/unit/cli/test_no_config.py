"""No config file found (issue 17): every command that reads or writes snapshots
exits 2 and says where it looked, instead of answering from embedded defaults
("No snapshots"); keys, encrypt, decrypt, init and config check still run.

Run as a user would: a real process, HOME and the working directory empty
temporary directories, $VKBACKUP_CONFIG unset. /etc/vkbackup/vkbackup.toml is
the last place looked in; on a machine that has one, the test-only seam
$VKBACKUP_TEST_SYSTEM_CONFIG points that step at a path that does not exist
(vkbackup/config/load.py), so the test runs everywhere and never skips.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vkbackup.config.load import SYSTEM_CONFIG, SYSTEM_CONFIG_TEST_ENV
from vkbackup.crypto import generate_identity, write_identity_file

REPO = Path(__file__).resolve().parents[3]


class Empty:
    def __init__(self, root: Path) -> None:
        self.cwd = root / "cwd"
        self.home = root / "home"
        self.cwd.mkdir()
        self.home.mkdir()
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "PYTHONPATH": str(REPO)}
        self.system = SYSTEM_CONFIG
        if SYSTEM_CONFIG.exists():  # this machine has one: look elsewhere instead
            self.system = root / "no-etc" / "vkbackup.toml"
            self.env[SYSTEM_CONFIG_TEST_ENV] = str(self.system)
        assert "VKBACKUP_CONFIG" not in self.env

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "vkbackup", *args],
            input=stdin,
            capture_output=True,
            cwd=self.cwd,
            env=self.env,
            timeout=60,
        )

    def looked_in(self) -> list[str]:
        system = (
            "/etc/vkbackup/vkbackup.toml: no such file"
            if self.system == SYSTEM_CONFIG
            else f"/etc/vkbackup/vkbackup.toml: {self.system}: no such file"
        )
        return [
            "--config: not given",
            "$VKBACKUP_CONFIG: not set",
            f"./vkbackup.toml: {self.cwd}/vkbackup.toml: no such file",
            f"~/.config/vkbackup/config.toml: {self.home}/.config/vkbackup/config.toml: "
            "no such file",
            system,
        ]


@pytest.fixture
def empty(tmp_path: Path) -> Empty:
    return Empty(tmp_path)


def test_list_prod_without_a_config_exits_2_naming_where_it_looked(empty: Empty) -> None:
    r = empty.run("list", "prod")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert r.stdout == b""  # no "No snapshots"
    assert "vkbackup: error: no config file found (`vkbackup list` needs one" in err
    lines = [ln.strip() for ln in err.splitlines()]
    for place in empty.looked_in():
        assert place in lines, (place, err)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["snapshot"],
        ["snapshot", "prod", "--dry-run"],
        ["list"],
        ["show", "latest"],
        ["verify", "--latest"],
        ["restore", "latest", "--to", "root@192.0.2.1", "--dry-run"],
        ["prune", "--dry-run"],
        ["drill", "--to", "root@192.0.2.1"],
        ["storage", "check"],
        ["check"],
    ],
    ids=lambda a: " ".join(a),
)
def test_every_command_on_snapshots_needs_a_config(empty: Empty, args: list[str]) -> None:
    r = empty.run(*args)
    err = r.stderr.decode()
    assert r.returncode == 2, (args, err)
    assert "no config file found" in err and "Looked in, in order:" in err
    assert empty.looked_in()[2] in err  # the working directory's ./vkbackup.toml
    assert not (empty.cwd / "vkbackup.toml").exists()


def test_config_check_without_a_config_says_where_it_looked_and_exits_2(empty: Empty) -> None:
    r = empty.run("config", "check")
    err = r.stderr.decode()
    assert r.returncode == 2
    assert "no config file found. Looked in, in order:" in err
    for place in empty.looked_in():
        assert place in err
    js = empty.run("config", "check", "--json")
    assert js.returncode == 2
    assert b'"file": null' in js.stdout and b"looked_in" in js.stdout


def test_config_check_says_which_file_it_loaded_and_how(empty: Empty) -> None:
    (empty.home / ".config" / "vkbackup").mkdir(parents=True)
    found = empty.home / ".config" / "vkbackup" / "config.toml"
    found.write_text('[storage]\npath = "/tmp/vk-nowhere"\n')
    r = empty.run("config", "check")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert f"config OK: {found}" in out
    assert "found by: ~/.config/vkbackup/config.toml (before it: --config: not given; " in out
    assert f"./vkbackup.toml: {empty.cwd}/vkbackup.toml: no such file)" in out


def test_keys_encrypt_decrypt_and_init_run_without_a_config(empty: Empty) -> None:
    ident_path = empty.home / "id.txt"
    r = empty.run("keys", "generate", "--out", str(ident_path))
    assert r.returncode == 0, r.stderr
    recipient = r.stdout.decode().strip()
    assert recipient.startswith("age1")
    enc = empty.run("encrypt", "-r", recipient, stdin=b"hello")
    assert enc.returncode == 0, enc.stderr
    dec = empty.run("decrypt", "-i", str(ident_path), stdin=enc.stdout)
    assert dec.returncode == 0 and dec.stdout == b"hello", dec.stderr
    # init gets past the config (none needed) to the host, which refuses on port 1
    init = empty.run("init", "root@127.0.0.1:1", "-r", recipient, "--yes")
    err = init.stderr.decode()
    assert init.returncode == 1, err
    assert "no config file found" not in err and "127.0.0.1" in err


def test_decrypt_with_a_wrong_identity_exits_12(tmp_path: Path, empty: Empty) -> None:
    """decrypt is break-glass: no config, and only the -i it is given."""
    other = tmp_path / "other.txt"
    write_identity_file(other, generate_identity())
    enc = empty.run("encrypt", "-r", str(generate_identity().recipient()), stdin=b"x")
    dec = empty.run("decrypt", "-i", str(other), stdin=enc.stdout)
    assert dec.returncode == 12, dec.stderr  # ExitCode.WRONG_KEY
    assert b"<stdin>: no identity matches" in dec.stderr
