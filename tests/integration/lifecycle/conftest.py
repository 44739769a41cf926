"""Real snapshots of `files` sources taken on this machine (LocalTransport ->
age -> local storage), and a config file for running the CLI against them.

    env          a LifecycleEnv: config file, storage, identity, source tree, snap()
    make_env(dir) the same, in a directory of your choice (module-scoped fixtures)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from vkbackup.actions.snapshot import SnapshotResult, run_snapshot
from vkbackup.config import load_config
from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import X25519Identity, generate_identity, write_identity_file
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.local import LocalTransport


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


@dataclass
class LifecycleEnv:
    root: Path
    config_path: Path
    cfg: Config
    storage: LocalStorage
    identity: X25519Identity
    tree: Path

    def snap(self) -> SnapshotResult:
        r = run_snapshot(self.cfg, "box", storage=self.storage, connect=local)
        assert r.status == "complete", r.to_json()
        return r

    def path(self, key: str) -> Path:
        return self.storage.root.joinpath(*key.split("/"))


def write_config(
    path: Path, store: Path, recipient: str, tree: Path, identity: Path | None
) -> None:
    ident = f'identity = "{identity}"\n' if identity else ""
    path.write_text(
        f"""
[storage]
type = "local"
path = "{store}"

[encryption]
recipients = ["{recipient}"]
{ident}
[retention]
keep_last = 1

[hosts.box]
address = "127.0.0.1"

[[hosts.box.sources]]
type = "files"
name = "etc"
paths = ["{tree}/*"]
secret = true
"""
    )


def make_env(tmp_path: Path) -> LifecycleEnv:
    ident = generate_identity()
    id_path = tmp_path / "identity.txt"
    write_identity_file(id_path, ident)
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "app.env").write_text("TOKEN=not-in-any-listing\n")
    os.chmod(tree / "app.env", 0o600)
    (tree / "Caddyfile").write_text("example.test { reverse_proxy app:8080 }\n")
    config_path = tmp_path / "vkbackup.toml"
    write_config(config_path, tmp_path / "store", str(ident.recipient()), tree, id_path)
    cfg = load_config(config_path)
    return LifecycleEnv(tmp_path, config_path, cfg, LocalStorage(tmp_path / "store"), ident, tree)


@pytest.fixture
def env(tmp_path: Path) -> LifecycleEnv:
    return make_env(tmp_path)
