"""Exit codes 10 and 12 of issue 17, each produced by a real fault through the CLI
(a real process, a config file): the message names what is at fault.

    10  a local storage directory that does not exist; a SeaweedFS bucket that
        does not exist; an S3 endpoint on a closed port (after its retries)
    12  a restore with an identity that is not the snapshot's, or a wrong
        passphrase for the identity file

11 (two snapshots contending for the lock) is test_second_snapshot_refused_naming_the_holder
in tests/integration/reliability/test_signals_and_locks.py; 12 for verify is
test_age_identity_problems_are_clear in tests/integration/reliability/test_security.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.lifecycle.conftest import LifecycleEnv, make_env
from tests.lab.s3 import S3Server
from vkbackup.crypto import generate_identity, write_identity_file

REPO = Path(__file__).resolve().parents[3]


def vk(
    config: Path, *args: str, env: dict[str, str] | None = None, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home or config.parent), **(env or {})},
        timeout=120,
    )


def clean(err: str) -> None:
    assert "Traceback" not in err and 'File "' not in err


@pytest.fixture
def env(tmp_path: Path) -> LifecycleEnv:
    e = make_env(tmp_path)
    e.snap()
    return e


# -- 10: the local directory ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "box"],
        ["show", "latest"],
        ["verify", "--latest"],
        ["prune", "--dry-run"],
        ["restore", "latest", "--to", "root@192.0.2.1:22", "--dry-run"],
        ["check"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_missing_storage_directory_exits_10_naming_it(env: LifecycleEnv, args: list[str]) -> None:
    """The disk that holds the backups is not mounted: the directory is gone. Before,
    `list` said "No snapshots" and exited 0."""
    gone = env.root / "unmounted"
    env.storage.root.rename(gone)
    r = vk(env.config_path, *args)
    assert r.returncode == 10, (args, r.stdout, r.stderr)
    assert f"{env.storage.root}: the storage directory does not exist" in r.stderr
    assert "mount the disk" in r.stderr
    assert r.stdout == "" or args[0] == "check"
    clean(r.stderr)
    assert not env.storage.root.exists()  # a reader never creates it
    gone.rename(env.storage.root)
    assert vk(env.config_path, *args[:2] if args[0] == "list" else ["list"]).returncode == 0


# -- 10: S3 --------------------------------------------------------------------------------


def s3_config(
    path: Path, s3: S3Server, bucket: str, endpoint: str | None = None, attempts: int = 6
) -> Path:
    recipient = generate_identity().recipient()
    path.write_text(
        f"""
[storage]
type = "s3"
bucket = "{bucket}"
endpoint_url = "{endpoint or s3.endpoint}"
region = "{s3.region}"
addressing_style = "path"
access_key_id = "{s3.access_key}"
secret_access_key = "{s3.secret_key}"
max_attempts = {attempts}

[encryption]
recipients = ["{recipient}"]

[hosts.box]
address = "127.0.0.1"
port = 1

[[hosts.box.sources]]
type = "files"
name = "etc"
paths = ["/etc/hostname"]
"""
    )
    path.chmod(0o600)
    return path


def test_a_bucket_that_does_not_exist_exits_10_naming_it(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    cfg = s3_config(tmp_path / "vk.toml", s3_server, "vk-no-such-bucket")
    for args in (["list"], ["snapshot", "box"], ["prune", "--dry-run"]):
        r = vk(cfg, *args)
        assert r.returncode == 10, (args, r.stderr)
        assert "s3://vk-no-such-bucket/" in r.stderr, r.stderr
        assert f"bucket vk-no-such-bucket does not exist at {s3_server.endpoint}" in r.stderr
        assert "NoSuchBucket" in r.stderr and "create the bucket" in r.stderr
        clean(r.stderr)
    check = vk(cfg, "storage", "check")
    assert check.returncode == 10, check.stderr
    assert "bucket does not exist" in check.stdout
    # the same config on a bucket that exists: an empty list, exit 0
    ok = s3_config(tmp_path / "ok.toml", s3_server, s3_bucket)
    listed = vk(ok, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


def test_an_endpoint_on_a_closed_port_exits_10_after_its_retries(
    tmp_path: Path, s3_server: S3Server
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    cfg = s3_config(tmp_path / "vk.toml", s3_server, "vk-backups", endpoint, attempts=2)
    r = vk(cfg, "list")
    assert r.returncode == 10, r.stderr
    assert "s3://vk-backups/" in r.stderr and "failed after 2 attempt(s)" in r.stderr
    assert f"check that {endpoint} is reachable" in r.stderr
    assert "retry 1/1" in r.stderr  # it did retry before giving up
    clean(r.stderr)


# -- 12: restore ---------------------------------------------------------------------------


def test_restore_with_the_wrong_identity_exits_12_naming_it(
    env: LifecycleEnv, tmp_path: Path
) -> None:
    other = tmp_path / "stranger.txt"
    stranger = generate_identity()
    write_identity_file(other, stranger)
    target = ["restore", "latest", "--to", "root@192.0.2.1:22", "--dry-run"]
    r = vk(env.config_path, *target, env={"VKBACKUP_IDENTITY": str(other)})
    assert r.returncode == 12, r.stderr
    assert "(private part): no identity matches" in r.stderr
    assert f"tried the identity of {stranger.recipient()}" in r.stderr
    assert f"the identity file used: {other} ($VKBACKUP_IDENTITY)" in r.stderr
    clean(r.stderr)

    locked = tmp_path / "locked.txt"
    write_identity_file(locked, env.identity, passphrase="correct horse")
    bad = vk(env.config_path, *target, "-i", str(locked),
             env={"VKBACKUP_PASSPHRASE": "wrong horse"})  # fmt: skip
    assert bad.returncode == 12, bad.stderr
    assert f"{locked}: incorrect passphrase" in bad.stderr
    assert "wrong horse" not in bad.stderr + bad.stdout
    clean(bad.stderr)

    good = vk(env.config_path, *target, "-i", str(locked),
              env={"VKBACKUP_PASSPHRASE": "correct horse"})  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "restore plan for snapshot" in good.stdout
