"""`vkbackup ls`, `dump` and `restore --into` as a user runs them (a subprocess, a
config file, local storage; `--into` over SSH to a real sshd on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.integration.transport.conftest import Sshd
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import load_config
from vkbackup.config.model import HostConfig
from vkbackup.crypto import generate_identity, write_identity_file
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.local import LocalTransport

REPO = Path(__file__).resolve().parents[3]


def vk(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", *args, "--config", str(config)],
        capture_output=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(config.parent)},
        timeout=120,
    )


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


@pytest.fixture
def env(tmp_path: Path, sshd: Sshd) -> tuple[Path, Path, list[str]]:
    """(config, source tree, [first id, second id]): app.env changes between them."""
    tree = tmp_path / "srv"
    (tree / "conf.d").mkdir(parents=True)
    (tree / "app.env").write_text("TOKEN=one\n")
    (tree / "conf.d" / "a\x1b[2Jb.conf").write_text("odd name\n")
    ident = generate_identity()
    write_identity_file(tmp_path / "identity.txt", ident)
    cfg = tmp_path / "vkbackup.toml"
    cfg.write_text(
        f"""
[storage]
path = "{tmp_path / "store"}"

[encryption]
recipients = ["{ident.recipient()}"]
identity = "{tmp_path / "identity.txt"}"

[hosts.box]
address = "127.0.0.1"
port = {sshd.port}
user = "{sshd.host().user}"
key_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"

[[hosts.box.sources]]
type = "files"
name = "etc"
paths = ["{tree}"]

[[hosts.box.sources]]
type = "files"
name = "secrets"
paths = ["{tree}/app.env"]
secret = true
"""
    )
    config = load_config(cfg)
    storage = LocalStorage(tmp_path / "store")
    ids = [run_snapshot(config, "box", storage=storage, connect=local).id]
    time.sleep(1.1)
    (tree / "app.env").write_text("TOKEN=two, longer\n")
    ids.append(run_snapshot(config, "box", storage=storage, connect=local).id)
    return cfg, tree, ids


def test_ls_sources_paths_and_json(env: tuple[Path, Path, list[str]]) -> None:
    cfg, tree, ids = env
    r = vk(cfg, "ls", "latest")
    assert r.returncode == 0, r.stderr
    assert b"etc" in r.stdout and b"files" in r.stdout and ids[1].encode() in r.stdout
    r = vk(cfg, "ls", ids[0][:13] if ids[0][:13] != ids[1][:13] else ids[0], "etc")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    env_line = next(ln for ln in lines if ln.endswith(f"{tree}/app.env"))
    assert env_line.startswith("-rw-") and " 10 " in env_line
    # a name with an escape sequence is printed escaped, never raw
    assert b"\x1b" not in r.stdout and any("a\\x1b[2Jb.conf" in ln for ln in lines)
    r = vk(cfg, "ls", "latest", "etc", str(tree / "app.env"), "--json")
    doc = json.loads(r.stdout)
    assert [e["path"] for e in doc["entries"]] == [f"{tree}/app.env".lstrip("/")]
    assert doc["entries"][0]["size"] == len("TOKEN=two, longer\n")


def test_dump_each_snapshot_and_missing_path(env: tuple[Path, Path, list[str]]) -> None:
    cfg, tree, ids = env
    assert vk(cfg, "dump", ids[0], "etc", str(tree / "app.env")).stdout == b"TOKEN=one\n"
    r = vk(cfg, "dump", "latest", "etc", str(tree / "app.env"))
    assert r.returncode == 0 and r.stdout == b"TOKEN=two, longer\n"
    out = cfg.parent / "out.tar"
    r = vk(cfg, "dump", "latest", "etc", str(tree / "conf.d"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tf:
        assert f"{tree}/conf.d/a\x1b[2Jb.conf".lstrip("/") in tf.getnames()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".part")]
    r = vk(cfg, "dump", "latest", "etc", str(tree / "nope"), "-o", str(cfg.parent / "no"))
    assert r.returncode == 1 and r.stdout == b""
    err = r.stderr.decode()
    assert ids[1] in err and "'etc'" in err and f"{tree}/nope" in err and "Traceback" not in err
    assert not (cfg.parent / "no").exists()
    assert vk(cfg, "dump", "latest", "etc").returncode == 2  # no PATH, no --table
    r = vk(cfg, "dump", "latest", "etc", "--table", "public.t")
    assert r.returncode == 2 and b"not a database" in r.stderr


def test_restore_into_over_ssh_puts_only_the_paths(
    env: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    cfg, tree, ids = env
    (tree / "app.env").write_text("live\n")
    into = tmp_path / "recovered"
    r = vk(cfg, "restore", ids[0], "--to", "box", "--only", "etc", "--path",
           str(tree / "app.env"), "--into", str(into))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rel = str(tree / "app.env").lstrip("/")
    assert (into / rel).read_text() == "TOKEN=one\n"
    assert (tree / "app.env").read_text() == "live\n"
    files = [p for p in into.rglob("*") if not p.is_dir()]
    assert files == [into / rel]
    # the same DIR again: it is not empty now, so it is refused, and left as it was
    r = vk(cfg, "restore", "latest", "--to", "box", "--only", "etc", "--path",
           str(tree / "app.env"), "--into", str(into))  # fmt: skip
    err = r.stderr.decode()
    assert r.returncode == 1 and str(into) in err and "not empty" in err, err
    assert (into / rel).read_text() == "TOKEN=one\n"
    # usage errors: --path without --into, no --only, "/" as DIR
    for args in (
        ["--only", "etc", "--path", "x"],
        ["--only", "etc", "--into", str(into)],
        ["--path", "x", "--into", str(into)],
        ["--only", "etc", "--path", "x", "--into", "/"],
        ["--only", "etc", "--path", "x", "--into", "rel"],
    ):
        r = vk(cfg, "restore", "latest", "--to", "box", *args)
        assert r.returncode == 2, (args, r.stderr)
    assert os.listdir(into) == [rel.split("/")[0]]


def test_dump_of_a_secret_source_goes_to_a_pipe_never_a_file(
    env: tuple[Path, Path, list[str]],
) -> None:
    cfg, tree, _ = env
    out = cfg.parent / "app.env.copy"
    r = vk(cfg, "dump", "latest", "secrets", str(tree / "app.env"), "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert b"'secrets' is secret" in r.stderr and b"| ssh HOST" in r.stderr
    assert not out.exists() and not [p for p in cfg.parent.iterdir() if ".part" in p.name]
    r = vk(cfg, "dump", "latest", "secrets", str(tree / "app.env"))  # to a pipe: allowed
    assert r.returncode == 0 and r.stdout == b"TOKEN=two, longer\n"
