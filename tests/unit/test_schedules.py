"""schedules/: the cron file and the systemd units.

- The cron file parses as /etc/cron.d expects (5 time fields, a user, a
  command), every job runs under `flock -n` with its own lock file, and every
  vkbackup command line is one the CLI accepts.
- The systemd units pass `systemd-analyze verify` (and `systemd-analyze
  security --offline` stays under an exposure of 2.5). `verify` checks that
  ExecStart's binary exists, so the test verifies copies of the units whose
  ExecStart points at a stub executable in a temporary directory instead of
  /usr/local/bin/vkbackup; nothing else is changed. Without systemd-analyze
  the test is skipped, and fails in CI (tests/realparts.py; apt-get install systemd).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realparts import require

REPO = Path(__file__).resolve().parents[2]
SCHEDULES = REPO / "schedules"
BIN = "/usr/local/bin/vkbackup"
SERVICES = ("snapshot", "verify", "prune", "drill")

# --- cron ---------------------------------------------------------------------------

FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def cron_field_ok(field: str, lo: int, hi: int) -> bool:
    """Given one cron time field and its range, say whether it is valid (numbers,
    '*', ranges, lists, steps)."""
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return False
        if base == "*":
            continue
        a, _, b = base.partition("-")
        if not a.isdigit() or (b and not b.isdigit()):
            return False
        first, last = int(a), int(b) if b else int(a)
        if not (lo <= first <= last <= hi):
            return False
    return True


def cron_jobs(text: str) -> list[tuple[list[str], str, str]]:
    """Given /etc/cron.d text, return (time fields, user, command) per job."""
    jobs = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or ENV_RE.match(s):
            continue
        parts = s.split(None, 6)
        assert len(parts) == 7, f"cron line needs 5 time fields, a user and a command: {line!r}"
        fields, user, command = parts[:5], parts[5], parts[6]
        for f, (lo, hi) in zip(fields, FIELD_RANGES, strict=True):
            assert cron_field_ok(f, lo, hi), f"bad cron field {f!r} in {line!r}"
        jobs.append((fields, user, command))
    return jobs


def accepted_by_cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `vkbackup ARGS --help`: click rejects an unknown command or option
    before it gets to --help, so exit 0 means the command line is valid."""
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", *argv, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_cron_file_is_valid_and_every_job_uses_flock() -> None:
    text = (SCHEDULES / "vkbackup.cron").read_text()
    assert text.endswith("\n")  # cron ignores a last line without a newline
    jobs = cron_jobs(text)
    by_verb: dict[str, list[str]] = {}
    locks: set[str] = set()
    for fields, user, command in jobs:
        assert user == "root"
        argv = shlex.split(command)
        assert argv[:2] == ["flock", "-n"], f"job without flock -n: {command}"
        locks.add(argv[2])
        assert argv[3] == BIN and "-q" in argv[4:], command
        verb = next(a for a in argv[4:] if not a.startswith("-"))
        by_verb[verb] = fields
        r = accepted_by_cli(argv[4:])
        assert r.returncode == 0, (command, r.stderr)
    assert len(locks) == len(jobs)  # each job has its own lock file
    assert by_verb["snapshot"] == ["15", "2", "*", "*", "*"]  # nightly 02:15
    assert by_verb["prune"][2:] == ["*", "*", "*"]  # daily
    assert by_verb["verify"][2:4] == ["*", "*"] and by_verb["verify"][4] in ("0", "7")
    assert by_verb["drill"][2:] == ["1", "1,4,7,10", "*"]  # quarterly
    assert "VKBACKUP_CONFIG=/etc/vkbackup/vkbackup.toml" in text


def test_cron_field_validator() -> None:
    assert cron_field_ok("*/15", 0, 59) and cron_field_ok("1-5,7", 0, 7)
    assert not cron_field_ok("60", 0, 59) and not cron_field_ok("*/0", 0, 59)
    assert not cron_field_ok("5-1", 0, 59) and not cron_field_ok("mon", 0, 7)


# --- systemd ------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """Given a unit file, return section -> key -> values (keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1]
            out.setdefault(section, {})
            continue
        key, _, value = s.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "read-only",
    "PrivateTmp": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "Nice": "19",
    "IOSchedulingClass": "best-effort",
}


@pytest.mark.parametrize("verb", SERVICES)
def test_units_are_oneshot_hardened_and_timed(verb: str) -> None:
    svc = unit_settings(SCHEDULES / f"vkbackup-{verb}.service")["Service"]
    assert svc["Type"] == ["oneshot"]
    [exec_start] = svc["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == BIN and argv[1] == "-q" and argv[2] == verb
    r = accepted_by_cli(argv[1:])
    assert r.returncode == 0, (exec_start, r.stderr)
    for key, value in HARDENING.items():
        assert svc.get(key) == [value], (verb, key, svc.get(key))
    rw = svc["ReadWritePaths"][0].split()
    assert "-/var/backups/vkbackup" in rw and "-/var/lib/node_exporter/textfile_collector" in rw
    timer = unit_settings(SCHEDULES / f"vkbackup-{verb}.timer")
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["RandomizedDelaySec"] and timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_wal_stream_unit_runs_all_the_time_hardened() -> None:
    svc = unit_settings(SCHEDULES / "vkbackup-wal-stream.service")["Service"]
    assert svc["Type"] == ["simple"] and svc["Restart"] == ["always"]
    [exec_start] = svc["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:3] == [BIN, "-q", "wal-stream"]
    r = accepted_by_cli(argv[1:])
    assert r.returncode == 0, (exec_start, r.stderr)
    for key, value in HARDENING.items():
        assert svc.get(key) == [value], ("wal-stream", key, svc.get(key))
    assert "PrivateDevices" not in svc  # the spool is in /dev/shm


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe:
        return exe
    require("systemd-analyze not installed (apt-get install systemd)")


@pytest.fixture
def unit_copies(tmp_path: Path) -> list[Path]:
    """The units, with ExecStart pointing at a stub vkbackup that exists."""
    stub = tmp_path / "bin" / "vkbackup"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    out = []
    for src in sorted(SCHEDULES.glob("vkbackup-*.*")):
        if src.suffix not in (".service", ".timer"):
            continue
        dst = tmp_path / src.name
        dst.write_text(src.read_text().replace(f"ExecStart={BIN} ", f"ExecStart={stub} "))
        out.append(dst)
    assert len(out) == 2 * len(SERVICES) + 1  # and the WAL stream's service, no timer
    return out


def test_units_pass_systemd_analyze_verify(unit_copies: list[Path]) -> None:
    exe = _systemd_analyze()
    r = subprocess.run(
        [exe, "verify", "--man=no", *map(str, unit_copies)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (r.stdout + r.stderr).strip() == ""  # not even a warning


def test_units_exposure_stays_low(unit_copies: list[Path]) -> None:
    exe = _systemd_analyze()
    probe = subprocess.run([exe, "security", "--help"], capture_output=True, text=True)
    if "--offline" not in probe.stdout:
        require("this systemd-analyze has no `security --offline` (systemd < 250)")
    for unit in unit_copies:
        if unit.suffix != ".service":
            continue
        r = subprocess.run(
            [exe, "security", "--offline=true", "--threshold=25", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, f"{unit.name}: exposure above 2.5\n{r.stdout[-600:]}"
