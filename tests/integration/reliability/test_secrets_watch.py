"""Issue 16, Secrets: no secret leaves vkbackup, in plaintext, base64 or hex, through
any command's output or any file it writes, even one it deletes before it exits.

What runs: the real CLI, one subprocess per command, every one at -vv, each both
as human lines and with --log-json:

    snapshot x2 (the second reuses the first's objects), verify --all x2,
    show latest x2, list x2, init x2 (against the sshd host; the first one meets
    it for the first time and writes a known_hosts), restore --dry-run x2,
    restore x2 and drill x2 for real (the full derived plan), onto a scratch
    target: this machine again, through a second sshd of the test's own.

Files come back at their recorded paths, so before each real restore or drill
the source files are moved away; after it, the restored bytes must equal the
originals (the secret really was decrypted and streamed), then they and the
target's resume state (/var/lib/vkbackup/restore/<id>.json, scanned first) are
removed, so the next one restores again instead of resuming into a no-op.
The plan is checked first (restore --dry-run --json) to hold only preflight,
ensure-docker, files, health and dns: nothing on this machine is started (a
machine whose compose projects would be is no scratch target: require()).
The ensure-docker step needs Docker Engine (it is asked, read-only) and a
compose; where this machine has none (CI's Debian 12 has none), the scratch
sshd's PATH carries a stand-in `docker-compose` that answers `version` and
refuses anything else, and the test asserts it was asked nothing else. The
snapshot has no compose project, so compose has nothing else to do.

What is watched, four nets:

1. every run is started with filewatch/ on PYTHONPATH, whose sitecustomize
   installs an audit hook: every path the process opens for writing is
   recorded; a file's content is copied BEFORE it is removed, renamed away or
   over, truncated or rmtree'd, and the removed inode is held and copied again
   at exit; every written path still present is copied at exit; anonymous
   files and child processes are logged (see its docstring);
2. a before/after scan of every regular file new or changed in the runs'
   TMPDIR, /tmp, /var/tmp, the runs' working directory and HOME, and
   /var/lib/vkbackup (the target side's state, on this machine): it also sees
   what other processes wrote (sshd and the target's shell and tar);
3. every object in storage at the end, and each resume state file;
4. standard output and standard error of every run.

Each is searched for every secret (the three .env values, fresh for each run,
and the age identity) as raw bytes, hex (lower and upper), and base64, standard
and URL-safe, at each of the 3 alignments a value can have inside a larger
base64 text (and once more with white space removed, for wrapped base64).

A canary (filewatch/vkwatch_canary.py), run under the same watch, hides the
secret by every route above, each in its own form; the test asserts each is
found where it was hidden, so a watch gone blind cannot pass quietly.

What cannot be seen: a file another process writes and deletes (sshd, the
target's bash and tar: only what they leave is scanned); a file written by
native code that calls open(2) itself; an anonymous O_TMPFILE file (there is no
name to copy; the watch logs its creation, and the test refuses one in any
vkbackup run); a local child process (logged, and refused: vkbackup reaches
hosts with paramiko in-process and runs nothing locally); memory and swap.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.reliability.conftest import Box, files_under, make_box
from tests.integration.transport.conftest import SSHD, Sshd
from tests.realparts import require
from vkbackup.catalog import list_snapshots
from vkbackup.config.model import StorageConfig
from vkbackup.crypto import format_identity_file
from vkbackup.restore.target import state_path
from vkbackup.storage import open_storage

FILEWATCH = Path(__file__).with_name("filewatch")
ENV_KEYS = ("SECRET_KEY_BASE", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
MAX_SCAN = 256 * 1024 * 1024
# what a plan of this snapshot may do to this machine: nothing is started here
SAFE_KINDS = {"preflight", "ensure-docker", "files", "health", "dns"}
CLI_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"

# -- needles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Needle:
    secret: str  # which secret: an .env key, or "age identity"
    form: str  # raw, hex, HEX, base64+K, base64url+K (K: the alignment, 0-2)
    text: bytes


def encoded_forms(value: bytes) -> dict[str, bytes]:
    """Given a secret, return each form it may take inside a larger text: raw, hex
    (lower, upper) and base64 (standard, URL-safe) at each alignment K. A value that
    starts K bytes (mod 3) into a base64-encoded text shows as the encoding of K
    leading bytes plus the value, less the characters that mix in its neighbours:
    the first ceil(8K/6) and everything past the last full 6 bits of the value."""
    out = {"raw": value, "hex": value.hex().encode(), "HEX": value.hex().upper().encode()}
    for name, enc in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for k in range(3):
            full = enc(b"\0" * k + value)
            out[f"{name}+{k}"] = full[-(-8 * k // 6) : 8 * (k + len(value)) // 6]
    return out


def make_needles(values: dict[str, bytes]) -> list[Needle]:
    return [Needle(s, f, t) for s, v in values.items() for f, t in encoded_forms(v).items()]


def find(data: bytes, needles: list[Needle]) -> set[Needle]:
    """The needles in *data*; base64 ones also with all white space removed (wrapped)."""
    hits = {n for n in needles if n.text in data}
    if b"\n" in data or b"\r" in data:
        flat = re.sub(rb"\s+", b"", data)
        hits |= {n for n in needles if n.form.startswith("base64") and n.text in flat}
    return hits


def test_needles_find_a_secret_at_every_alignment_and_form() -> None:
    value = b"pg-" + secrets.token_urlsafe(18).encode()
    needles = make_needles({"v": value})
    for pad in range(7):
        blob = os.urandom(pad) + b"PASSWORD=" + value + os.urandom(5)
        for enc, form in ((base64.b64encode, "base64"), (base64.urlsafe_b64encode, "base64url")):
            k = (pad + len(b"PASSWORD=")) % 3
            assert any(n.form == f"{form}+{k}" for n in find(enc(blob), needles)), (pad, form)
            wrapped = b"\n".join(enc(blob)[i : i + 16] for i in range(0, len(enc(blob)), 16))
            assert find(wrapped, needles), (pad, form, "wrapped")
        assert {n.form for n in find(blob.hex().encode(), needles)} == {"hex"}
        assert {n.form for n in find(blob.hex().upper().encode(), needles)} == {"HEX"}
        assert {n.form for n in find(blob, needles)} == {"raw"}
    assert not find(os.urandom(1 << 16), needles)


# -- the scratch target: this machine through an sshd of the test's own ------------------------

COMPOSE_STANDIN = """#!/bin/sh
# vkbackup test stand-in (tests/integration/reliability/test_secrets_watch.py): this
# machine has no Docker Compose, and the snapshot restored has no compose project, so
# restore and drill only ask compose for its version. Anything else is refused.
echo "$*" >> "$(dirname "$0")/../compose-calls.log"
if [ "$1" = version ]; then
  if [ "$2" = --short ]; then echo 2.26.1; else echo "Docker Compose version v2.26.1"; fi
  exit 0
fi
echo "compose stand-in: refusing: $*" >&2
exit 1
"""


@dataclass
class Scratch:
    port: int
    known_hosts_line: str
    dir: Path
    standin: bool

    def compose_calls(self) -> list[str]:
        log = self.dir / "compose-calls.log"
        return log.read_text().splitlines() if log.exists() else []


def _ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_ok() -> bool:
    return shutil.which("docker") is not None and _ok(["docker", "info"])


def compose_here() -> bool:
    return _ok(["docker", "compose", "version"]) or _ok(["docker-compose", "version"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scratch(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    """A second sshd on this machine (the same keys are authorized as for `sshd`), whose
    sessions find the compose stand-in first on PATH when this machine has no compose."""
    d = tmp_path_factory.mktemp("scratch-sshd")
    os.chmod(d, 0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True
    )
    (d / "bin").mkdir()
    standin = not compose_here()
    if standin:
        (d / "bin" / "docker-compose").write_text(COMPOSE_STANDIN)
        (d / "bin" / "docker-compose").chmod(0o755)
    port = free_port()
    path = f"{d}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\n"
        f"AuthorizedKeysFile {sshd.dir}/authorized_keys\nPidFile {d}/sshd.pid\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"MaxSessions 50\nMaxStartups 50\nSetEnv PATH={path}\n"
    )
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"scratch sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
    pub = (d / "host.pub").read_text().split()
    yield Scratch(port, f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n", d, standin)
    proc.terminate()
    proc.wait(timeout=10)


# -- running commands under the watch ---------------------------------------------------------


@dataclass
class Run:
    name: str
    argv: list[str]
    proc: subprocess.CompletedProcess[bytes]
    watch: Path
    seconds: float

    @property
    def out(self) -> str:
        return self.proc.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.proc.stderr.decode(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for f in sorted(self.watch.glob("events-*.jsonl"))
            for line in f.read_text().splitlines()
        ]

    def captures(self) -> Iterator[tuple[str, str, Path]]:
        """(reason, the file's path, the copy) of every capture."""
        for e in self.events():
            if e["event"] == "capture":
                yield e["reason"], e["path"], self.watch / e["copy"]


class Rig:
    """Runs commands with their own working directory, TMPDIR and HOME, each under
    the file watch with a watch directory of its own."""

    def __init__(self, root: Path, config: Path) -> None:
        self.config = config
        self.work, self.tmp, self.home, self.watch = (
            root / n for n in ("work", "tmp", "home", "watch")
        )
        for d in (self.work, self.tmp, self.home, self.watch):
            d.mkdir(parents=True)
        self.runs: list[Run] = []

    def run(self, name: str, argv: list[str], stdin: bytes = b"") -> Run:
        watch = self.watch / f"{len(self.runs):02d}-{name}"
        watch.mkdir()
        env = {
            "PATH": CLI_PATH,
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "PYTHONPATH": str(FILEWATCH),
            "VKWATCH_DIR": str(watch),
        }
        t0 = time.monotonic()
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, cwd=self.work, env=env, timeout=180
        )
        run = Run(name, argv, proc, watch, time.monotonic() - t0)
        self.runs.append(run)
        return run

    def vk(self, name: str, *args: str) -> Run:
        run = self.run(
            name, [sys.executable, "-m", "vkbackup", "--config", str(self.config), *args]
        )
        assert run.proc.returncode == 0, f"{name}: exit {run.proc.returncode}\n{run.err[-3000:]}"
        return run


def watch_problems(run: Run, canary: bool = False) -> list[str]:
    """What keeps a run's watch from vouching for it: not loaded, no exit copy, its own
    errors, a copy cut short; and, for vkbackup, anything it cannot see."""
    ev = run.events()
    kinds = [e["event"] for e in ev]
    out = []
    if kinds.count("start") != 1 or kinds.count("exit") != 1:
        out.append(
            f"{run.name}: watch start/exit events {kinds.count('start')}/{kinds.count('exit')}"
        )
    out += [f"{run.name}: watch error {e}" for e in ev if e["event"] == "watch-error"]
    out += [f"{run.name}: copy cut at {e['size']}: {e['path']}" for e in ev if e.get("capped")]
    if not canary:
        out += [f"{run.name}: unwatched child process {e}" for e in ev if e["event"] == "child"]
        out += [
            f"{run.name}: anonymous file in {e['dir']}" for e in ev if e["event"] == "anonymous"
        ]
    return out


# -- the before/after net ---------------------------------------------------------------------

FileState = tuple[int, int, int, int]


def tree_state(roots: list[Path], skip: list[Path]) -> dict[str, FileState]:
    """Every regular file below *roots* (not below *skip*): path -> (mtime, ctime, size,
    inode)."""
    out: dict[str, FileState] = {}
    skips = [os.path.realpath(s) for s in skip]
    seen: set[str] = set()
    for root in roots:
        for dirpath, dirs, files in os.walk(os.path.realpath(root)):
            if dirpath in seen or any(
                dirpath == s or dirpath.startswith(s + os.sep) for s in skips
            ):
                dirs[:] = []
                continue
            seen.add(dirpath)
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out[p] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    return out


def read_for_scan(path: Path | str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_SCAN)
    except OSError:
        return None


# -- the test ---------------------------------------------------------------------------------


def fresh_secrets(box: Box) -> dict[str, bytes]:
    """Give the box's .env values of this run's own (another test's files in /tmp
    hold the shared ones) and return them."""
    values = {
        "SECRET_KEY_BASE": secrets.token_hex(32),
        "POSTGRES_PASSWORD": "pg-" + secrets.token_urlsafe(18),
        "REDIS_PASSWORD": "redis-" + secrets.token_urlsafe(18),
    }
    box.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return {k: v.encode() for k, v in values.items()}


def canary_texts(key: str, value: bytes) -> tuple[dict[str, str], dict[str, tuple[str, str, str]]]:
    """What the canary hides, by route, and where the scan must find each:
    route -> (where: a capture reason, "on disk" or "stderr"; file name; form)."""
    line = f"{key}=".encode() + value  # the value starts len(key) + 1 bytes in
    shift = (len(key) + 1) % 3

    def b64(k: int, urlsafe: bool = False) -> str:
        """base64 of the line with padding so that the value sits at alignment k."""
        enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
        return enc(b"#" * ((k - shift) % 3) + line + b"\n").decode()

    flat = b64(0)
    texts = {
        "remove": line.decode(),
        "rename": b64(1),
        "rmtree": line.hex().upper(),
        "truncate": b64(2, urlsafe=True),
        "ftruncate": "\n".join(flat[i : i + 16] for i in range(0, len(flat), 16)),
        "unlinked": line.hex(),
        "kept": b64(0, urlsafe=True),
        "child": line.decode(),
        "stderr": b64(2),
        "anonymous": line.decode(),
    }
    expect = {
        "remove": ("remove", "canary-remove.txt", "raw"),
        "rename": ("rename-from", "canary.part", "base64+1"),
        "rename-over": ("rename-over", "canary.final", "base64+1"),
        "rmtree": ("rmtree", "blob", "HEX"),
        "truncate": ("truncate", "canary-truncate.txt", "base64url+2"),
        "ftruncate": ("truncate", "canary-ftruncate.txt", "base64+0"),
        "unlinked": ("held", "canary-unlinked.txt", "hex"),
        "kept": ("exit", "canary-kept.txt", "base64url+0"),
        "kept on disk": ("on disk", "canary-kept.txt", "base64url+0"),
        "child": ("on disk", "canary-child.txt", "raw"),
        "stderr": ("stderr", "", "base64+2"),
    }
    return texts, expect


def test_no_secret_in_any_output_file_or_object_of_any_command(
    sshd: Sshd, scratch: Scratch, tmp_path: Path
) -> None:
    if not docker_ok():
        require("no running Docker Engine: restore and drill check for one on their target")
    box = make_box(tmp_path / "box", big_mib=2)
    values = fresh_secrets(box)
    age_key = next(
        ln
        for ln in format_identity_file(box.ident).splitlines()
        if ln.startswith("AGE-SECRET-KEY-")
    )
    needles = make_needles({**values, "age identity": age_key.encode()})
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts.read_text() + scratch.known_hosts_line)
    cfg = box.write_config(box.host(sshd.port, kh, sshd.client_key))
    rig = Rig(tmp_path / "rig", cfg)
    orig = tmp_path / "orig"  # the source files, moved out of the way of each restore
    storage = open_storage(StorageConfig(path=box.store))
    target = f"root@127.0.0.1:{scratch.port}"
    roots = [rig.tmp, rig.work, rig.home, Path("/tmp"), Path("/var/tmp"), Path("/var/lib/vkbackup")]
    skip = [rig.watch]
    leaks: list[str] = []
    texts, expect = canary_texts("POSTGRES_PASSWORD", values["POSTGRES_PASSWORD"])
    ids: list[str] = []
    t0 = time.monotonic()
    before = tree_state(roots, skip)
    try:
        canary = rig.run(
            "canary", [sys.executable, "-m", "vkwatch_canary"], json.dumps(texts).encode()
        )
        assert canary.proc.returncode == 0, canary.err

        snap = rig.vk("snapshot-json", "-vv", "--log-json", "snapshot", "box", "--json")
        assert json.loads(snap.out)["status"] == "complete"
        rig.vk("snapshot", "-vv", "snapshot", "box")
        ids = [sid for _, sid in list_snapshots(storage, "box")]
        assert len(ids) == 2
        rig.vk("verify-json", "-vv", "--log-json", "verify", "--all", "--json")
        rig.vk("verify", "-vv", "verify", "--all")
        rig.vk("show-json", "-vv", "--log-json", "show", "latest", "--json")
        rig.vk("show", "-vv", "show", "latest")
        rig.vk("list-json", "-vv", "--log-json", "list", "--json")
        rig.vk("list", "-vv", "list")
        init = [
            f"root@127.0.0.1:{sshd.port}", "--name", "found", "-r", box.recipient,
            "--key-file", str(sshd.client_key), "--known-hosts", str(rig.work / "init_known_hosts"),
        ]  # fmt: skip
        rig.vk("init", "-vv", "init", *init, "--yes", "--out", str(rig.work / "init.toml"))
        rig.vk("init-json", "-vv", "--log-json", "init", *init)

        dry = ["restore", "--to", target, "--dry-run"]
        plan = rig.vk("restore-plan-json", "-vv", "--log-json", *dry, "--json")
        kinds = {s["kind"] for s in json.loads(plan.out)["steps"]}
        assert "files" in kinds, kinds
        if not kinds <= SAFE_KINDS:  # compose projects run here: restoring would touch them
            require(
                f"this machine is no harmless scratch target: its plan has {kinds - SAFE_KINDS}"
            )
        rig.vk("restore-plan", "-vv", *dry)

        orig.mkdir()
        for p in (box.env_file, box.big):
            os.replace(p, orig / p.name)
        real_runs = [
            ("restore-json", ["-vv", "--log-json", "restore", "--to", target, "--yes", "--json"]),
            ("restore", ["-vv", "restore", "--to", target, "--yes"]),
            (
                "drill-json",
                ["-vv", "--log-json", "drill", "--to", target, "--host", "box", "--json"],
            ),
            ("drill", ["-vv", "drill", "--to", target, "--host", "box"]),
        ]
        for name, args in real_runs:
            run = rig.vk(name, *args)
            if name.endswith("-json"):
                doc = json.loads(run.out)
                steps = doc["steps"] if "steps" in doc else doc["restore"]["steps"]
                assert doc["status"] == "ok", doc
                done = {s["id"]: s["status"] for s in steps}
                assert done["files:secrets"] == done["files:app"] == "done", done
            for p in (box.env_file, box.big):  # it came back: decrypted and streamed
                assert p.read_bytes() == (orig / p.name).read_bytes(), f"{name}: {p}"
                p.unlink()
            for sid in ids:  # the target's resume state: scanned, then gone (a fresh restore)
                state = Path(state_path(sid))
                data = read_for_scan(state)
                if data is not None:
                    leaks += [
                        f"{name}: {state}: {n.secret} as {n.form}" for n in find(data, needles)
                    ]
                    state.unlink()
    finally:
        for sid in ids:
            Path(state_path(sid)).unlink(missing_ok=True)
    after = tree_state(roots, skip)
    ran = time.monotonic() - t0

    # the watch vouches for every run
    problems = [p for r in rig.runs for p in watch_problems(r, canary=r is canary)]
    assert problems == []
    if scratch.standin:  # the stand-in was asked its version and nothing else
        calls = scratch.compose_calls()
        assert calls and all(c.startswith("version") for c in calls), calls

    # -vv really logged, libraries included: paramiko's debug lines on every SSH run
    for r in rig.runs:
        if (
            r.name.split("-")[0] in ("snapshot", "init", "restore", "drill")
            and "plan" not in r.name
        ):
            marker = '"logger": "paramiko' if "--log-json" in r.argv else "debug: "
            assert marker in r.err, f"{r.name}: no debug lines at -vv"

    # where the canary's hidden secret was found
    found: set[tuple[str, str, str]] = set()
    for reason, path, copy in canary.captures():
        data = copy.read_bytes()
        found |= {(reason, Path(path).name, n.form) for n in find(data, needles)}
    found |= {("stderr", "", n.form) for n in find(canary.proc.stderr, needles)}

    # nets 1 and 4: every vkbackup run's copies and output
    copies = 0
    for r in rig.runs:
        if r is canary:
            continue
        for stream, data in (("stdout", r.proc.stdout), ("stderr", r.proc.stderr)):
            leaks += [f"{r.name}: {stream}: {n.secret} as {n.form}" for n in find(data, needles)]
        for reason, path, copy in r.captures():
            copies += 1
            hits = find(copy.read_bytes(), needles)
            leaks += [f"{r.name}: {path} ({reason} copy): {n.secret} as {n.form}" for n in hits]

    # net 2: every file new or changed in the watched directories, whoever wrote it
    legit = {os.path.realpath(box.env_file), os.path.realpath(box.big)}  # source, restored
    changed = [f for f, st in after.items() if before.get(f) != st and f not in legit]
    changed = [f for f in changed if not f.startswith(os.path.realpath(orig) + os.sep)]
    canary_dirs = {os.path.realpath(rig.tmp), os.path.realpath(rig.work)}
    for f in changed:
        data = read_for_scan(f)
        hits = find(data, needles) if data is not None else set()
        if Path(f).name.startswith("canary") and os.path.dirname(f) in canary_dirs:
            found |= {("on disk", Path(f).name, n.form) for n in hits}
        else:
            leaks += [f"{f} (on disk): {n.secret} as {n.form}" for n in hits]

    # net 3: everything in storage
    stored = files_under(box.store)
    for rel in stored:
        leaks += [
            f"storage {rel}: {n.secret} as {n.form}"
            for n in find((box.store / rel).read_bytes(), needles)
        ]

    # the canary proves each net can see
    missing = {route: place for route, place in expect.items() if place not in found}
    assert missing == {}, (
        f"the watch missed the canary's {sorted(missing)}; it found {sorted(found)}"
    )
    canary_events = [e["event"] for e in canary.events()]
    assert "child" in canary_events
    # an anonymous file has no name to copy: the watch says one was made (where the
    # file system has no O_TMPFILE, tempfile falls back to a named one, which is copied)
    assert "anonymous" in canary_events or any(
        f[0] == "held" and not f[1].startswith("canary") for f in found
    )

    # the product side was really watched: objects written, renamed, a lock removed
    first = next(r for r in rig.runs if r.name == "snapshot-json")
    snap_caps = {(reason, Path(p).name) for reason, p, _ in first.captures()}
    assert ("remove", "box.lock") in snap_caps, sorted(snap_caps)
    assert any(reason == "rename-from" for reason, _ in snap_caps), sorted(snap_caps)
    assert copies >= 20 and len(changed) >= 10 and len(stored) >= 6, (copies, len(changed))
    assert any(r.name == "drill" for r in rig.runs)
    assert any((rig.work / "vkbackup-drills").glob("drill-box-*.md"))

    timings = ", ".join(f"{r.name} {r.seconds:.1f}s" for r in rig.runs)
    assert leaks == [], f"secrets leaked (runs: {timings}; {ran:.0f}s in all)"
