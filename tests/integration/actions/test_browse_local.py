"""ls / dump / restore --into through real snapshots on this machine: LocalTransport
(bash, GNU tar, gzip or zstd) -> age -> local storage; then read back by
vkbackup.actions.browse, and `restore --into` extracted by the LocalTransport into
a temp dir. A docker-volume chain (full + incrementals) runs when a Docker Engine
is available, as tests/integration/sources/test_volume_chain.py does."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realparts import require
from vkbackup import catalog
from vkbackup.actions.browse import (
    dump_path,
    list_sources,
    load_tree,
    open_source,
    restore_into,
    select,
)
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.errors import IntegrityError, RestoreError, UsageError
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.local import LocalTransport


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


def config(tmp: Path, recipient: str, source: dict[str, Any]) -> Config:
    return parse_config(
        {
            "storage": {"path": str(tmp / "store")},
            "encryption": {"recipients": [recipient]},
            "snapshot": {"max_chain": 6, "full_every_days": 7},
            "hosts": {"box": {"address": "127.0.0.1", "sources": [source]}},
        },
        "test.toml",
    )


def dump(storage: LocalStorage, ident: X25519Identity, ref: str, source: str, path: str) -> bytes:
    m = catalog.resolve(storage, ref, "box")
    view = open_source(storage, m, [ident], source)
    tree = load_tree(storage, view, [ident])
    out = io.BytesIO()
    dump_path(storage, view, [ident], tree, path, out.write)
    return out.getvalue()


@pytest.fixture
def files_env(tmp_path: Path) -> tuple[Path, Config, LocalStorage, X25519Identity]:
    tree = tmp_path / "srv"
    (tree / "app" / "conf.d").mkdir(parents=True)
    (tree / "app" / "app.env").write_text("TOKEN=one\n")
    os.chmod(tree / "app" / "app.env", 0o600)
    (tree / "app" / "conf.d" / "site.conf").write_text("server {}\n")
    (tree / "app" / "current").symlink_to("conf.d/site.conf")
    (tree / "other.txt").write_text("not selected\n")
    ident = generate_identity()
    src = {"type": "files", "name": "etc", "paths": [str(tree / "app"), str(tree / "other.txt")]}
    cfg = config(tmp_path, str(ident.recipient()), src)
    return tree, cfg, LocalStorage(cfg.storage.path), ident


def test_files_source_ls_dump_and_into(files_env: Any, tmp_path: Path) -> None:
    tree, cfg, storage, ident = files_env
    first = run_snapshot(cfg, "box", storage=storage, connect=local)
    time.sleep(1.1)  # a new snapshot id
    (tree / "app" / "app.env").write_text("TOKEN=two, longer\n")
    second = run_snapshot(cfg, "box", storage=storage, connect=local)
    m, rows = list_sources(storage, "latest", "box")
    assert m.id == second.id and [(r.name, r.type) for r in rows] == [("etc", "files")]

    view = open_source(storage, m, [ident], "etc")
    t = load_tree(storage, view, [ident])
    rel = str(tree / "app").lstrip("/")
    listed = {e.path: e for e in select(view, t, str(tree / "app"))}
    assert set(listed) == {rel, f"{rel}/app.env", f"{rel}/conf.d", f"{rel}/conf.d/site.conf",
                           f"{rel}/current"}  # fmt: skip
    env = listed[f"{rel}/app.env"]
    assert (env.type, env.mode, env.size) == ("file", 0o600, len("TOKEN=two, longer\n"))
    assert listed[f"{rel}/current"].link == "conf.d/site.conf"
    assert view.shown(env.path) == str(tree / "app" / "app.env")

    # each snapshot's own version of the file
    assert dump(storage, ident, first.id, "etc", str(tree / "app/app.env")) == b"TOKEN=one\n"
    assert dump(storage, ident, "latest", "etc", str(tree / "app/app.env")) == (
        b"TOKEN=two, longer\n"
    )
    # a directory: a tar of it as the snapshot has it
    data = dump(storage, ident, "latest", "etc", str(tree / "app" / "conf.d"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = sorted(tf.getnames())
    assert names == [f"{rel}/conf.d", f"{rel}/conf.d/site.conf"]

    # a missing path names snapshot, source and path
    with pytest.raises(RestoreError) as e:
        dump(storage, ident, "latest", "etc", str(tree / "app" / "nope"))
    assert m.id in str(e.value) and "'etc'" in str(e.value) and "app/nope" in str(e.value)
    with pytest.raises(UsageError):
        open_source(storage, m, [ident], "nosuch")

    # --into: only the selected paths appear under DIR, nothing else is written
    into = tmp_path / "restored" / "here"
    (tree / "app" / "app.env").write_text("live, untouched\n")
    res = restore_into(
        storage, view, [ident], t, [str(tree / "app" / "app.env"), f"/{rel}/conf.d"],
        str(into), LocalTransport(),
    )  # fmt: skip
    assert res.entries == 3
    found = {str(p.relative_to(into)) for p in into.rglob("*")}
    want = {f"{rel}/app.env", f"{rel}/conf.d", f"{rel}/conf.d/site.conf"}
    parts = Path(rel).parts
    ancestors = {str(Path(*parts[:i])) for i in range(1, len(parts) + 1)}  # made by tar -x
    assert found == want | ancestors
    assert (into / rel / "app.env").read_text() == "TOKEN=two, longer\n"
    assert (into / rel / "app.env").stat().st_mode & 0o777 == 0o600
    assert (tree / "app" / "app.env").read_text() == "live, untouched\n"
    assert not (into / rel / "current").exists() and not (into / "other.txt").exists()


def test_a_hard_link_without_its_target_dumps_and_restores_as_a_file(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    (tree / "x").mkdir(parents=True)
    (tree / "y").mkdir()
    body = b"one content, two names\n" * 50
    (tree / "x" / "f").write_bytes(body)
    os.link(tree / "x" / "f", tree / "y" / "g")
    ident = generate_identity()
    cfg = config(tmp_path, str(ident.recipient()), {"type": "files", "name": "etc",
                                                    "paths": [str(tree)]})  # fmt: skip
    storage = LocalStorage(cfg.storage.path)
    run_snapshot(cfg, "box", storage=storage, connect=local)
    m = catalog.resolve(storage, "latest", "box")
    view = open_source(storage, m, [ident], "etc")
    t = load_tree(storage, view, [ident])
    # whichever name the tar holds as the hard link: its directory without the other
    link = next(e for e in t.entries.values() if e.type == "hardlink")
    parent = "/" + link.path.rsplit("/", 1)[0]
    data = dump(storage, ident, "latest", "etc", parent)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-tf", "-"], input=data, check=True, capture_output=True)
    subprocess.run(["tar", "-xpf", "-"], input=data, cwd=out, check=True)
    assert (out / link.path).read_bytes() == body
    into = tmp_path / "into"
    res = restore_into(storage, view, [ident], t, [parent], str(into), LocalTransport())
    assert (into / link.path).read_bytes() == body and res.bytes == len(body)
    res = restore_into(storage, view, [ident], t, [str(tree)], str(tmp_path / "all"),
                       LocalTransport())  # fmt: skip
    assert res.bytes == len(body)  # two names, one content
    rel = str(tree).lstrip("/")
    a, b = tmp_path / "all" / rel / "x" / "f", tmp_path / "all" / rel / "y" / "g"
    assert a.read_bytes() == b.read_bytes() == body and a.stat().st_ino == b.stat().st_ino


def test_into_refuses_root_and_relative(files_env: Any) -> None:
    tree, cfg, storage, ident = files_env
    run_snapshot(cfg, "box", storage=storage, connect=local)
    m = catalog.resolve(storage, "latest", "box")
    view = open_source(storage, m, [ident], "etc")
    t = load_tree(storage, view, [ident])
    for bad in ("/", "//", "relative/dir", "/tmp/../"):
        with pytest.raises(UsageError):
            restore_into(storage, view, [ident], t, [str(tree)], bad, LocalTransport())


def test_a_damaged_object_fails_the_listing(files_env: Any) -> None:
    _, cfg, storage, ident = files_env
    run_snapshot(cfg, "box", storage=storage, connect=local)
    m = catalog.resolve(storage, "latest", "box")
    obj = m.objects[0]
    path = storage.root.joinpath(*obj.key.split("/"))
    raw = bytearray(path.read_bytes())
    raw[-40] ^= 1
    path.write_bytes(bytes(raw))
    view = open_source(storage, m, [ident], "etc")
    with pytest.raises(IntegrityError):
        load_tree(storage, view, [ident])


# -- a docker volume's incremental chain ----------------------------------------------


def docker_ok() -> bool:
    return shutil.which("docker") is not None and (
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


@pytest.fixture
def volume() -> Iterator[str]:
    if not docker_ok():
        require("no running Docker Engine")
    name = f"vkbackup-test-browse-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "volume", "create", name], check=True, capture_output=True)
    yield name
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)
    shutil.rmtree(f"/var/lib/vkbackup/snar/{name}", ignore_errors=True)


def mountpoint(volume: str) -> Path:
    out = subprocess.run(
        ["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


def state(v: int) -> str:
    return f'{{"v": {v}, "pad": "{"x" * v}"}}'


def test_volume_chain_each_snapshot_has_its_own_version(volume: str, tmp_path: Path) -> None:
    root = mountpoint(volume)
    (root / "db").mkdir()
    (root / "db" / "state.json").write_text(state(0))
    (root / "gone.txt").write_text("deleted later")
    (root / "big.bin").write_bytes(os.urandom(200_000))
    ident = generate_identity()
    src = {"type": "docker-volume", "name": "data", "volume": volume, "stop": []}
    cfg = config(tmp_path, str(ident.recipient()), src)
    storage = LocalStorage(cfg.storage.path)
    ids = [run_snapshot(cfg, "box", storage=storage, connect=local).id]
    for v in (1, 2):
        time.sleep(1.1)
        (root / "db" / "state.json").write_text(state(v))
        if v == 1:
            (root / "gone.txt").unlink()
            (root / "added").mkdir()
            (root / "added" / "n.txt").write_text("new at 1")
        ids.append(run_snapshot(cfg, "box", storage=storage, connect=local).id)
    m = catalog.resolve(storage, "latest", "box")
    assert sorted(o.chain for o in m.objects) == [0, 1, 2]
    for v, sid in enumerate(ids):
        assert dump(storage, ident, sid, "data", "db/state.json") == state(v).encode()
    view = open_source(storage, m, [ident], "data")
    t = load_tree(storage, view, [ident])
    assert "gone.txt" not in t.entries and "added/n.txt" in t.entries
    assert t.entries["big.bin"].level == 0 and t.entries["db/state.json"].level == 2
    assert dump(storage, ident, ids[0], "data", "gone.txt") == b"deleted later"
    assert dump(storage, ident, "latest", "data", "/big.bin") == (root / "big.bin").read_bytes()
    with pytest.raises(RestoreError):
        dump(storage, ident, "latest", "data", "gone.txt")
    # --into: a file of level 0 and a directory of level 1, under DIR
    into = tmp_path / "into"
    restore_into(storage, view, [ident], t, ["big.bin", "added"], str(into), LocalTransport())
    assert sorted(str(p.relative_to(into)) for p in into.rglob("*")) == [
        "added", "added/n.txt", "big.bin",
    ]  # fmt: skip
    assert (into / "big.bin").read_bytes() == (root / "big.bin").read_bytes()
