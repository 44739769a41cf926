"""`vkbackup list / show / verify / prune` as a user runs them: a real process,
a config file, real snapshots in a local storage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.lifecycle.conftest import LifecycleEnv, write_config
from vkbackup import catalog

REPO = Path(__file__).resolve().parents[3]


def run(
    env: LifecycleEnv, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config or env.config_path), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env.root)},
        timeout=120,
    )


@pytest.fixture
def two(env: LifecycleEnv) -> LifecycleEnv:
    env.snap()
    env.snap()  # unchanged: reuses the first one's object
    return env


def test_list_shows_new_and_reused_bytes_and_last_verified(two: LifecycleEnv) -> None:
    env = two
    r = run(env, "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["status"] for row in rows] == ["complete", "complete"]
    first, second = rows
    assert first["bytes_new"] == first["bytes"] > 0 and first["bytes_reused"] == 0
    assert second["bytes_new"] == 0 and second["bytes_reused"] == first["bytes"]
    assert second["sources_ok"] == second["sources_total"] == 1
    assert second["last_verified"] is None
    text = run(env, "list", "box").stdout
    assert "LAST VERIFIED" in text and text.count("never") == 2
    assert "TOKEN" not in r.stdout + text

    v = run(env, "verify", "--latest")
    assert v.returncode == 0, v.stderr
    assert f"box/{second['id']}: ok: 1 objects" in v.stdout
    text = run(env, "list").stdout
    line = next(ln for ln in text.splitlines() if ln.startswith(second["id"]))
    assert line.rstrip().endswith(" ok") and "never" not in line


def test_show_with_and_without_the_private_part(two: LifecycleEnv) -> None:
    env = two
    r = run(env, "show", "latest")
    assert r.returncode == 0, r.stderr
    assert "private part:" in r.stdout
    assert f"{env.tree}/app.env" in r.stdout  # the private part lists the files
    assert "2 files" in r.stdout and "secret" in r.stdout
    assert "TOKEN=not-in-any-listing" not in r.stdout
    first = catalog.list_snapshots(env.storage, "box")[0][1]
    assert f"(uploaded in {first})" in r.stdout
    doc = json.loads(run(env, "show", first[:17], "--json").stdout)
    assert doc["id"] == first and doc["bytes_new"] > 0
    files = doc["private_summary"]["sources"]["etc"]["files"]
    assert set(files) == {f"{env.tree}/Caddyfile", f"{env.tree}/app.env"}
    pub = run(env, "show", "latest", "--public")
    assert "private part: sealed: not opened (--public)" in pub.stdout
    assert str(env.tree) not in pub.stdout

    # a machine with only the public key: the private part stays sealed
    public_only = env.root / "public.toml"
    write_config(
        public_only, env.storage.root, str(env.identity.recipient()), env.tree, identity=None
    )
    sealed = run(env, "show", "latest", config=public_only)
    assert sealed.returncode == 0, sealed.stderr
    assert "encryption.identity is not set" in sealed.stdout
    assert str(env.tree) not in sealed.stdout


def test_verify_names_the_bad_object_and_exits_1(two: LifecycleEnv) -> None:
    env = two
    m = catalog.resolve(env.storage, "latest", "box")
    key = m.objects[0].key
    path = env.path(key)
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    r = run(env, "verify", "--all")
    assert r.returncode == 1
    assert "verify found 2 bad objects in 2 snapshots" in r.stderr  # shared: in both
    assert key in r.stderr and "sha256" in r.stderr
    assert "Traceback" not in r.stderr
    q = run(env, "-q", "verify", "--all", "--json")
    assert q.returncode == 1
    assert [res["ok"] for res in json.loads(q.stdout)] == [False, False]


def test_verify_light_mode_and_missing_identity(two: LifecycleEnv) -> None:
    env = two
    public_only = env.root / "public.toml"
    write_config(
        public_only, env.storage.root, str(env.identity.recipient()), env.tree, identity=None
    )
    r = run(env, "verify", config=public_only)
    assert r.returncode == 2
    assert "encryption.identity is not set" in r.stderr and "--no-decrypt" in r.stderr
    light = run(env, "verify", "--no-decrypt", "--all", config=public_only)
    assert light.returncode == 0, light.stderr
    assert "(no-decrypt," in light.stdout
    # --deep restores databases (tests/e2e/test_lifecycle.py): it needs the private key
    deep = run(env, "verify", "--deep", "--no-decrypt", config=public_only)
    assert deep.returncode == 2 and "--deep needs the private key" in deep.stderr


def test_prune_dry_run_then_prune(two: LifecycleEnv) -> None:
    env = two
    snaps = catalog.list_snapshots(env.storage, "box")
    dry = run(env, "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"drop  {snaps[0][1]}" in dry.stdout and f"keep  {snaps[1][1]}" in dry.stdout
    assert "would delete 1 manifests and 0 objects" in dry.stdout  # the object is reused
    assert catalog.list_snapshots(env.storage, "box") == snaps
    r = run(env, "prune", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["hosts"][0]["kept_shared_objects"] == 1
    assert catalog.list_snapshots(env.storage, "box") == snaps[1:]
    # the kept snapshot still verifies end to end
    assert run(env, "verify", "--all").returncode == 0


def test_bad_host_names_are_usage_errors(env: LifecycleEnv) -> None:
    for args in (["list", "../etc"], ["prune", "--host", "a/b"], ["verify", "--host", ".x"]):
        r = run(env, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert "is not a valid host name" in r.stderr and "Traceback" not in r.stderr
