"""The CLI entry: exit codes and error messages, run as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        timeout=60,
    )


def test_config_check_example_passes() -> None:
    r = run("config", "check", "--config", "examples/vkbackup.toml")
    assert r.returncode == 0, r.stderr
    assert "config OK: examples/vkbackup.toml" in r.stdout


def test_misspelled_key_exits_2_and_names_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    text = (REPO / "examples" / "vkbackup.toml").read_text().replace("keep_daily", "keep_dayly")
    bad.write_text(text)
    r = run("config", "check", "--config", str(bad))
    assert r.returncode == 2
    assert f"{bad}: retention.keep_dayly: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_global_config_option_works_before_the_command(tmp_path: Path) -> None:
    r = run("--config", str(tmp_path / "missing.toml"), "config", "check")
    assert r.returncode == 2
    assert "missing.toml: config file not found" in r.stderr


def test_usage_error_exits_2() -> None:
    r = run("no-such-command")
    assert r.returncode == 2


def test_json_output_of_config_check() -> None:
    import json

    r = run("config", "check", "--json", "--config", "examples/vkbackup.toml")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["storage"] == "s3"
    assert doc["hosts"]["prod"]["sources"][0] == "postgres:chatwoot-db"


def test_every_command_has_help() -> None:
    for cmd in (
        ["config", "check"],
        ["keys", "generate"],
        ["encrypt"],
        ["decrypt"],
        ["init"],
        ["snapshot"],
        ["list"],
        ["show"],
        ["verify"],
        ["restore"],
        ["prune"],
        ["drill"],
        ["storage", "check"],
    ):
        r = run(*cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert "Usage: vkbackup" in r.stdout


def test_snapshot_refuses_to_start_when_it_could_not_sign(tmp_path: Path) -> None:
    """[signing] with trusted keys only: the manifest could not be signed, so the
    snapshot stops before connecting or uploading anything."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[storage]\npath = "{tmp_path / "store"}"\n'
        '[encryption]\nrecipients = ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgp'
        'qyqszqgpqyqs3290gq"]\n'
        '[signing]\ntrusted = ["ssh-ed25519 '
        'AAAAC3NzaC1lZDI1NTE5AAAAIBvWVP3rhHrJ5eDRK+ajCUJsc3BsBp1ZUT8+mEaLQ1Qn"]\n'
        '[hosts.prod]\naddress = "203.0.113.7"\n'
        '[[hosts.prod.sources]]\ntype = "files"\nname = "etc"\npaths = ["/etc/hostname"]\n'
    )
    r = run("--config", str(cfg), "snapshot", "prod")
    assert r.returncode == 2, r.stderr
    assert f"{cfg}: [signing] lists trusted keys but no key" in r.stderr
    assert not (tmp_path / "store").exists()
