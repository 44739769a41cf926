"""The hostile-host suite (issue 16): the prod host is compromised, and lies to
the backup. Wrappers around `stat` and `tar` on prod add paths outside the
configured patterns; containers carry hostile compose labels and the database
server holds hostile database names. Nothing lands outside the configured paths
on the new host, no name becomes a command (on prod, on the target, or on the
backup machine), and every refusal names the host and what it refused.

Each test restores prod afterwards (wrappers removed, hostile objects dropped),
so the rest of the suite sees the lab as it was.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.api import Lab

MARKERS = "/tmp/vk-pwned*"


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def no_markers(lab: Lab) -> None:
    """No hostile name ran as a command anywhere: prod, fresh, this machine."""
    for host in ("prod", "fresh"):
        found = lab.ssh(host, f"ls -d {MARKERS} 2>/dev/null || true").stdout.strip()
        assert found == "", f"{host}: {found}"
    assert list(Path("/tmp").glob("vk-pwned*")) == []


@pytest.fixture
def cfg(lab: Lab, tmp_path: Path) -> Path:
    text = lab.config_path.read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{tmp_path / "store"}"', text, count=1)
    p = tmp_path / "vkbackup.toml"
    p.write_text(text)
    p.chmod(0o600)
    return p


@pytest.fixture
def wrappers(lab: Lab) -> Iterator[None]:
    yield
    lab.ssh("prod", "rm -f /usr/local/bin/stat /usr/local/bin/tar /usr/local/sbin/vk-evil")
    lab.ssh("fresh", "rm -f /usr/local/sbin/vk-evil /tmp/vk-pwned*", check=False)
    lab.ssh("prod", "rm -f /tmp/vk-pwned*")


STAT_WRAPPER = r"""#!/bin/bash
# a compromised host: every `stat -c` also reports a file no pattern names
if [ "$1" = "-c" ]; then
  printf '755 0 0 40 1700000000 %s /usr/local/sbin/vk-evil\n' "$(printf x | sha256sum | cut -c1-64)"
fi
exec /usr/bin/stat "$@"
"""

TAR_WRAPPER = r"""#!/bin/bash
# a compromised host: every archive it creates also carries a file no pattern names
case " $* " in
  *" -cf "*) exec /usr/bin/tar "$@" usr/local/sbin/vk-evil ;;
esac
exec /usr/bin/tar "$@"
"""

EVIL = "#!/bin/sh\ntouch /tmp/vk-pwned-evil\n"


def install(lab: Lab, path: str, text: str) -> None:
    lab.ssh("prod", f"cat > {path} && chmod 755 {path}", input=text)


def test_a_stat_wrapper_listing_paths_outside_the_patterns_refuses_the_source(
    lab: Lab, cfg: Path, wrappers: None
) -> None:
    install(lab, "/usr/local/sbin/vk-evil", EVIL)
    install(lab, "/usr/local/bin/stat", STAT_WRAPPER)
    r = run(cfg, "snapshot", "prod", "--only", "config", "--json")
    assert r.returncode != 0
    doc = json.loads(r.stdout)
    (src,) = doc["sources"]
    assert src["status"] == "failed"
    assert (
        "the host listed '/usr/local/sbin/vk-evil', which no configured path matches"
        in (src["error"])
    )
    assert "root@127.0.0.1" in src["error"] or "prod" in src["error"]
    assert run(cfg, "list", "prod", "--json").stdout.strip() in ("[]", "")
    no_markers(lab)


def test_a_tar_wrapper_adding_a_member_is_refused_on_restore_and_nothing_lands(
    fresh_lab: Lab, cfg: Path, wrappers: None
) -> None:
    lab = fresh_lab
    install(lab, "/usr/local/sbin/vk-evil", EVIL)
    install(lab, "/usr/local/bin/tar", TAR_WRAPPER)
    snap = run(cfg, "snapshot", "prod", "--only", "config", "--json")
    assert snap.returncode == 0, snap.stderr  # the snapshot cannot see inside the tar
    sid = json.loads(snap.stdout)["id"]
    r = run(cfg, "restore", sid, "--to", "fresh", "--only", "files:config", "--json")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert f"data/prod/{sid}/config/" in out
    assert "usr/local/sbin/vk-evil" in out
    found = lab.ssh("fresh", "ls /usr/local/sbin/vk-evil 2>&1 || true").stdout
    assert "No such file" in found
    no_markers(lab)


@pytest.fixture
def hostile_names(lab: Lab) -> Iterator[list[str]]:
    names = [
        "vk$(touch /tmp/vk-pwned-db)",
        "vk`touch /tmp/vk-pwned-bt`",
        "vk'; touch /tmp/vk-pwned-q; '",
        "vk\nretention.keep_last = 1",
    ]
    for n in names:
        quoted = '"' + n.replace('"', '""') + '"'
        lab.psql("prod", f"CREATE DATABASE {quoted};", database_name="postgres")
    labels = [
        "--label", "com.docker.compose.project=vk$(touch /tmp/vk-pwned-label)",
        "--label", "com.docker.compose.service=svc`touch /tmp/vk-pwned-svc`",
        "--label", "com.docker.compose.project.working_dir=/opt/x$(touch /tmp/vk-pwned-wd)",
        "--label", "com.docker.compose.project.config_files=/opt/x;touch /tmp/vk-pwned-cf",
    ]  # fmt: skip
    lab.ssh(
        "prod",
        "docker run -d --name vk-hostile-labels "
        + " ".join(f"{a} {_sq(v)}" if a == "--label" else a for a, v in _pairs(labels))
        + " redis:lab >/dev/null",
    )
    yield names
    lab.ssh("prod", "docker rm -f vk-hostile-labels >/dev/null 2>&1 || true")
    for n in names:
        quoted = '"' + n.replace('"', '""') + '"'
        lab.psql("prod", f"DROP DATABASE IF EXISTS {quoted};", database_name="postgres")
    lab.ssh("prod", "rm -f /tmp/vk-pwned*")


def _sq(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _pairs(argv: list[str]) -> list[tuple[str, str]]:
    return list(zip(argv[::2], argv[1::2], strict=True))


def test_init_and_snapshot_treat_hostile_names_as_data(
    lab: Lab, cfg: Path, tmp_path: Path, hostile_names: list[str]
) -> None:
    known = tmp_path / "known_hosts"
    out = tmp_path / "prod.toml"
    r = run(
        cfg, "init", "root@127.0.0.1:2222", "--name", "prod", "--key-file", str(lab.key_file),
        "--known-hosts", str(known), "--yes", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    doc = tomllib.loads(text)  # parses: no name ended a string or a comment
    assert doc.get("retention", {}).get("keep_last") != 1
    databases = [s.get("database") for s in doc["hosts"]["prod"]["sources"]]
    assert "chatwoot_production" in databases
    for n in hostile_names:  # left out, each named (escaped) in a warning
        assert n not in databases
        assert f"not a valid PostgreSQL database name: {n!a}" in r.stderr, n
    # the container with hostile compose labels is left out too, named
    assert "left out of the host facts" in r.stderr
    assert "vk-hostile-labels" not in text
    assert run(out, "config", "check").returncode == 0
    no_markers(lab)
    # a snapshot leaves the labels out of its facts (a warning names the label), so
    # its restore plan holds no trace of them and nothing of them runs
    snap = run(cfg, "snapshot", "prod", "--only", "config", "--json")
    assert snap.returncode == 0, snap.stderr
    assert "compose project label: not a valid compose project name" in snap.stderr
    sid = json.loads(snap.stdout)["id"]
    plan = run(cfg, "restore", sid, "--to", "fresh", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert "vk-hostile-labels" not in plan.stdout and "pwned" not in plan.stdout
    no_markers(lab)
