"""Fixtures for the reliability tests (issue 10) that need no lab: this machine's
own sshd on loopback (the `sshd` fixture of tests/integration/transport), the TCP
proxy, SeaweedFS, tmpfs mounts and the real CLI in a subprocess.

    sshd                    a real OpenSSH server on 127.0.0.1 (session)
    box                     a Box: a source tree with a big random file and a .env,
                            an age identity on disk, a storage directory
    Box.config(...) -> Config              a parsed config for the API (run_snapshot)
    Box.write_config(...) -> Path          the same as a TOML file (mode 0600) for the CLI
    Box.host(port, known_hosts) -> dict    a [hosts.box] table
    known_hosts_for(sshd, port, path) -> Path   a known_hosts line naming *port*
    run_cli(config, *args, env=None, timeout=300) -> CompletedProcess[str]
    start_cli(config, *args, env=None) -> Popen[str]
    wait_for(pred, timeout, what)           poll until pred() is true
    files_under(root) -> list[str]          every file below root (relative, sorted)
    SECRET_VALUES                           what the .env holds (scanned for in logs)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.transport.conftest import Sshd, sshd  # noqa: F401 - the fixture
from vkbackup.config import load_config, parse_config
from vkbackup.config.model import Config
from vkbackup.crypto import X25519Identity, generate_identity, write_identity_file

REPO = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024
SECRET_VALUES = (
    "SECRET_KEY_BASE=9f4c1e0b7d2a58c3e6f1a4b7c0d3e6f9",
    "POSTGRES_PASSWORD=pg-Reliab1lity-Pass-77",
    "REDIS_PASSWORD=redis-Reliab1lity-Pass-42",
)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML text for the nested dict shapes these tests use (tables, arrays of tables)."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        scalars = {
            k: v
            for k, v in body.items()
            if not isinstance(v, dict | list)
            or (isinstance(v, list) and not (v and isinstance(v[0], dict)))
        }
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in scalars.items())
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{prefix}.{k}]]")
                    lines.extend(f"{ik} = {_toml(iv)}" for ik, iv in item.items())

    for k, v in doc.items():
        table(k, v)
    return "\n".join(lines) + "\n"


@dataclass
class Box:
    root: Path
    tree: Path
    big: Path
    env_file: Path
    ident: X25519Identity
    identity_path: Path
    store: Path

    @property
    def recipient(self) -> str:
        return str(self.ident.recipient())

    def host(self, port: int, known_hosts: Path, key_file: Path, **extra: Any) -> dict[str, Any]:
        return {
            "address": "127.0.0.1",
            "port": port,
            "user": "root",
            "key_file": str(key_file),
            "known_hosts": str(known_hosts),
            "connect_timeout": 10,
            "sources": [
                {"type": "files", "name": "app", "paths": [str(self.big)]},
                {"type": "files", "name": "secrets", "paths": [str(self.env_file)], "secret": True},
            ],
            **extra,
        }

    def doc(
        self, host: dict[str, Any], storage: dict[str, Any] | None = None, identity: bool = True
    ) -> dict[str, Any]:
        enc: dict[str, Any] = {"recipients": [self.recipient]}
        if identity:
            enc["identity"] = str(self.identity_path)
        return {
            "storage": storage or {"type": "local", "path": str(self.store)},
            "encryption": enc,
            "snapshot": {"parallel": 2},
            "hosts": {"box": host},
        }

    def config(self, host: dict[str, Any], storage: dict[str, Any] | None = None) -> Config:
        return parse_config(self.doc(host, storage), "reliability.toml")

    def write_config(
        self,
        host: dict[str, Any],
        storage: dict[str, Any] | None = None,
        name: str = "vkbackup.toml",
        identity: bool = True,
    ) -> Path:
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(to_toml(self.doc(host, storage, identity)))
        load_config(path)  # never hand the CLI a config we would reject
        return path


def make_box(root: Path, big_mib: int = 64) -> Box:
    tree = root / "tree"
    tree.mkdir(parents=True)
    big = tree / "big.bin"
    with open(big, "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(MIB))
    env_file = tree / ".env"
    env_file.write_text("\n".join(SECRET_VALUES) + "\n")
    env_file.chmod(0o600)
    ident = generate_identity()
    identity_path = root / "identity.txt"
    write_identity_file(identity_path, ident)
    return Box(root, tree, big, env_file, ident, identity_path, root / "store")


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return make_box(tmp_path)


def known_hosts_for(server: Sshd, port: int, path: Path) -> Path:
    path.write_text(f"[127.0.0.1]:{port} {server.host_pub}\n")
    return path


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": os.environ.get("HOME", "/root")}
    env.update(extra or {})
    return env


def run_cli(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(env),
        timeout=timeout,
    )


def start_cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vkbackup", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=cli_env(env),
    )


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def files_under(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
