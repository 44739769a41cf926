"""Security without the lab: keys that are wrong, missing, or locked with a wrong
passphrase (SSH and age) give a clear error and exit code from the CLI; an identity
or SSH key file readable by others is refused with the chmod that fixes it;
no `.env` value reaches a log (-vv, --log-json), a temp file or storage in
plaintext; storage credentials and the identity never reach the backed-up host."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.reliability.conftest import (
    SECRET_VALUES,
    Box,
    files_under,
    make_box,
    run_cli,
)
from tests.integration.transport.conftest import Sshd
from tests.lab.s3 import S3Server
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.actions.verify import run_verify
from vkbackup.catalog import list_snapshots
from vkbackup.config.model import HostConfig, StorageConfig
from vkbackup.crypto import format_identity_file, generate_identity, write_identity_file
from vkbackup.storage import open_storage
from vkbackup.streams import Readable
from vkbackup.transport.base import Completed
from vkbackup.transport.local import LocalTransport
from vkbackup.transport.ssh import SshTransport, connect


@pytest.fixture
def small(tmp_path: Path) -> Box:
    return make_box(tmp_path, big_mib=2)


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True
    )
    return path


def authorize(sshd: Sshd, key: Path) -> None:
    with open(sshd.dir / "authorized_keys", "a") as f:
        f.write(Path(f"{key}.pub").read_text())


def clean(err: str) -> None:
    assert "Traceback" not in err and 'File "' not in err


# -- SSH identities and host keys -------------------------------------------------------------


def _case_wrong_key(sshd: Sshd, box: Box, d: Path) -> tuple[dict[str, Any], dict[str, str]]:
    return box.host(sshd.port, sshd.known_hosts, keygen(d / "stranger")), {}


def _case_missing_key(sshd: Sshd, box: Box, d: Path) -> tuple[dict[str, Any], dict[str, str]]:
    return box.host(sshd.port, sshd.known_hosts, d / "no-such-key"), {}


def _case_locked_no_pass(sshd: Sshd, box: Box, d: Path) -> tuple[dict[str, Any], dict[str, str]]:
    k = keygen(d / "locked", "right-horse-battery")
    authorize(sshd, k)
    return box.host(sshd.port, sshd.known_hosts, k), {}


def _case_locked_wrong_pass(sshd: Sshd, box: Box, d: Path) -> tuple[dict[str, Any], dict[str, str]]:
    k = keygen(d / "locked", "right-horse-battery")
    authorize(sshd, k)
    host = box.host(sshd.port, sshd.known_hosts, k, key_passphrase_env="VK_SSH_PASS")
    return host, {"VK_SSH_PASS": "wrong-horse-battery"}


def _case_unknown_host(sshd: Sshd, box: Box, d: Path) -> tuple[dict[str, Any], dict[str, str]]:
    (d / "empty_known_hosts").write_text("")
    return box.host(sshd.port, d / "empty_known_hosts", sshd.client_key), {}


def _case_changed_host_key(sshd: Sshd, box: Box, d: Path) -> tuple[dict[str, Any], dict[str, str]]:
    other = keygen(d / "other_host_key")
    pub = Path(f"{other}.pub").read_text().split()
    (d / "kh").write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    return box.host(sshd.port, d / "kh", sshd.client_key), {}


SSH_CASES: dict[str, tuple[Callable[..., tuple[dict[str, Any], dict[str, str]]], list[str]]] = {
    "wrong key": (_case_wrong_key, ["the server refused every key offered", "authorized_keys"]),
    "missing key file": (_case_missing_key, ["no-such-key: SSH key file not found"]),
    "passphrase key, no passphrase": (
        _case_locked_no_pass,
        ["SSH key is passphrase-protected", "key_passphrase_env"],
    ),
    "passphrase key, wrong passphrase": (
        _case_locked_wrong_pass,
        ["cannot decrypt the SSH key: wrong passphrase in $VK_SSH_PASS"],
    ),
    "unknown host key": (_case_unknown_host, ["refusing to connect to an unknown host", "SHA256:"]),
    "changed host key": (_case_changed_host_key, ["HOST KEY CHANGED", "ssh-keygen -R"]),
}


@pytest.mark.parametrize("case", sorted(SSH_CASES))
def test_ssh_identity_and_host_key_problems_are_clear(
    sshd: Sshd, small: Box, tmp_path: Path, case: str
) -> None:
    make, expected = SSH_CASES[case]
    host, env = make(sshd, small, tmp_path)
    cfg = small.write_config(host)
    r = run_cli(cfg, "snapshot", "box", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    for text in expected:
        assert text in r.stderr, r.stderr
    # the error names what is at fault: the host, or the key file
    assert re.search(rf"127\.0\.0\.1\]?:{sshd.port}", r.stderr) or host["key_file"] in r.stderr
    clean(r.stderr)
    if case == "changed host key":  # both fingerprints, as OpenSSH shows them
        assert len(set(re.findall(r"SHA256:[A-Za-z0-9+/]{43}", r.stderr))) == 2
    if case == "passphrase key, wrong passphrase":
        assert "wrong-horse-battery" not in r.stderr + r.stdout
    assert list_snapshots(open_storage(StorageConfig(path=small.store)), "box") == []


# -- age identities ---------------------------------------------------------------------------


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


@pytest.fixture
def snapped(small: Box) -> Box:
    host = small.host(22, small.root / "kh", small.root / "key")
    r = run_snapshot(
        small.config(host), "box", storage=open_storage(StorageConfig(path=small.store)),
        connect=local,
    )  # fmt: skip
    assert r.status == "complete"
    return small


def verify_with(box: Box, identity: Path, env: dict[str, str] | None = None) -> Any:
    host = box.host(22, box.root / "kh", box.root / "key")
    doc_cfg = box.write_config(host, name="verify.toml")
    text = doc_cfg.read_text().replace(str(box.identity_path), str(identity))
    doc_cfg.write_text(text)
    return run_cli(doc_cfg, "verify", "--all", env=env)


def test_age_identity_problems_are_clear(snapped: Box, tmp_path: Path) -> None:
    box = snapped
    missing = verify_with(box, tmp_path / "nowhere.txt")
    assert missing.returncode == 1 and "cannot read identity file" in missing.stderr
    assert str(tmp_path / "nowhere.txt") in missing.stderr
    clean(missing.stderr)

    other = tmp_path / "other.txt"
    stranger = generate_identity()
    write_identity_file(other, stranger)
    wrong = verify_with(box, other)
    assert wrong.returncode == 12, wrong.stderr  # ExitCode.WRONG_KEY
    # names the manifest, the key tried and the identity file at fault
    assert "(private part): no identity matches any of its 1 recipient stanza(s)" in wrong.stderr
    assert f"tried the identity of {stranger.recipient()}" in wrong.stderr
    assert f"hint: the identity file used: {other} (encryption.identity in " in wrong.stderr
    clean(wrong.stderr)
    # a wrong key proves nothing about the data: no failed verify is recorded
    assert not any(f.startswith("verify/") for f in files_under(box.store))

    locked = tmp_path / "locked.txt"
    write_identity_file(locked, box.ident, passphrase="correct horse")
    bad_pass = verify_with(box, locked, env={"VKBACKUP_PASSPHRASE": "wrong horse"})
    assert bad_pass.returncode == 12, bad_pass.stderr  # ExitCode.WRONG_KEY
    assert f"{locked}: incorrect passphrase" in bad_pass.stderr
    assert "wrong horse" not in bad_pass.stderr + bad_pass.stdout
    clean(bad_pass.stderr)

    no_pass = verify_with(box, locked)  # no TTY, no variable, no --passphrase-file
    assert no_pass.returncode == 1 and "passphrase" in no_pass.stderr
    clean(no_pass.stderr)

    good = verify_with(box, locked, env={"VKBACKUP_PASSPHRASE": "correct horse"})
    assert good.returncode == 0, good.stderr


def test_identity_and_ssh_key_readable_by_others_are_refused_with_the_fix(
    snapped: Box, sshd: Sshd, tmp_path: Path
) -> None:
    box = snapped
    loose = tmp_path / "loose-identity.txt"
    loose.write_text(format_identity_file(box.ident))
    loose.chmod(0o644)
    r = verify_with(box, loose)
    assert r.returncode == 2, r.stderr
    assert f"{loose}: identity file is readable by group or others (mode 0644)" in r.stderr
    assert f"chmod 600 {loose}" in r.stderr
    loose.chmod(0o600)
    ok = verify_with(box, loose)
    assert ok.returncode == 0 and "readable by group" not in ok.stderr, ok.stderr

    key = tmp_path / "loose-key"
    key.write_bytes(sshd.client_key.read_bytes())
    key.chmod(0o640)
    cfg = box.write_config(box.host(sshd.port, sshd.known_hosts, key), name="ssh.toml")
    before = list_snapshots(open_storage(StorageConfig(path=box.store)), "box")
    s = run_cli(cfg, "snapshot", "box")
    assert s.returncode == 2, s.stderr
    assert f"{key}: SSH key file is readable by group or others (mode 0640)" in s.stderr
    assert f"chmod 600 {key}" in s.stderr
    assert list_snapshots(open_storage(StorageConfig(path=box.store)), "box") == before
    key.chmod(0o600)
    again = run_cli(cfg, "snapshot", "box")
    assert again.returncode == 0, again.stderr


# -- secrets never leak -----------------------------------------------------------------------


def _needles(box: Box) -> list[bytes]:
    values = [v.split("=", 1)[1] for v in SECRET_VALUES]
    return [v.encode() for v in (*SECRET_VALUES, *values)]


def _tmp_snapshot() -> dict[str, float]:
    out: dict[str, float] = {}
    for dirpath, _dirs, files in os.walk("/tmp"):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = st.st_mtime
    return out


def _scan(path: Path, needles: list[bytes]) -> list[str]:
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 256 * 1024 * 1024:
            return []
        data = path.read_bytes()
    except OSError:
        return []
    return [f"{path}: {n[:12]!r}..." for n in needles if n in data]


def test_no_env_value_in_logs_temp_files_or_storage(sshd: Sshd, small: Box) -> None:
    box = small
    needles = _needles(box)
    cfg = box.write_config(box.host(sshd.port, sshd.known_hosts, sshd.client_key))
    before = _tmp_snapshot()
    t0 = time.time()
    runs = [
        run_cli(cfg, "-vv", "--log-json", "snapshot", "box", "--json"),
        run_cli(cfg, "-vv", "snapshot", "box"),  # human log lines too (the second reuses)
        run_cli(cfg, "-vv", "--log-json", "verify", "--all", "--json"),
        run_cli(cfg, "-vv", "--log-json", "show", "latest", "--json"),
        run_cli(cfg, "-vv", "list"),
    ]
    for r in runs:
        assert r.returncode == 0, [*r.args[-3:], r.stderr[-2000:]]
    assert any('"level": "debug"' in r.stderr for r in runs)  # -vv really logged
    leaks: list[str] = []
    for r in runs:
        for n in needles:
            if n.decode() in r.stdout + r.stderr:
                leaks.append(f"{' '.join(r.args[-3:])}: output holds {n[:12]!r}...")
    for f in files_under(box.store):
        leaks += _scan(box.store / f, needles)
    after = _tmp_snapshot()
    tree = str(box.tree) + os.sep
    scanned = 0
    for p, mtime in after.items():
        if p.startswith(tree):
            continue  # the source files themselves
        if p not in before or mtime > before[p] or mtime >= t0:
            leaks += _scan(Path(p), needles)
            scanned += 1
    assert leaks == []
    assert scanned >= 4  # at least the storage's files and the sshd log
    assert _scan(box.env_file, needles)  # the scan does find the values where they are
    assert len(files_under(box.store)) >= 4  # objects and manifests were scanned


class RecordingTransport:
    """Wraps a transport and keeps every argv and every byte sent to the host."""

    def __init__(self, inner: SshTransport, log: list[bytes]) -> None:
        self._inner = inner
        self._log = log
        self.name = inner.name

    def start(self, argv: list[str]) -> Any:
        self._log.append("\0".join(argv).encode())
        proc = self._inner.start(argv)
        write = proc.write

        def recording_write(data: bytes) -> None:
            self._log.append(bytes(data))
            write(data)

        proc.write = recording_write  # type: ignore[method-assign]
        return proc

    def run(self, argv: list[str], *, input: bytes = b"", check: bool = True,
            timeout: float | None = None) -> Completed:  # fmt: skip
        self._log.append("\0".join(argv).encode() + b"\0" + input)
        return self._inner.run(argv, input=input, check=check, timeout=timeout)

    def feed(self, argv: list[str], src: Readable) -> Completed:
        self._log.append("\0".join(argv).encode())
        log = self._log

        class Tee:
            def read(self, n: int = -1, /) -> bytes:
                data = src.read(n)
                log.append(data)
                return data

        return self._inner.feed(argv, Tee())

    def close(self) -> None:
        self._inner.close()


def test_storage_credentials_and_identity_never_reach_the_host(
    sshd: Sshd,
    small: Box,
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Callable[..., StorageConfig],
) -> None:
    """A snapshot into S3 and its verify, every command and byte sent to the host
    recorded: neither the S3 keys nor the age identity nor the SSH private key is in it.
    (The lab test does the same for a restore: tests/e2e/test_reliability.py.)"""
    box = small
    sent: list[bytes] = []

    def recording(h: HostConfig) -> RecordingTransport:
        return RecordingTransport(connect(h), sent)

    scfg = s3_config(s3_bucket)
    storage = open_storage(scfg)
    cfg = box.config(box.host(sshd.port, sshd.known_hosts, sshd.client_key))
    r = run_snapshot(cfg, "box", storage=storage, connect=recording)
    assert r.status == "complete"
    assert all(v.ok for v in run_verify(storage, [("box", r.id)], identities=[box.ident]))
    secrets = {
        "S3 secret key": (scfg.secret_access_key or "").encode(),
        "S3 access key": (scfg.access_key_id or "").encode(),
        "age identity": next(
            line
            for line in format_identity_file(box.ident).splitlines()
            if line.startswith("AGE-SECRET-KEY-")
        ).encode(),
        "SSH private key": sshd.client_key.read_bytes().split(b"\n")[1],
    }
    assert all(len(v) >= 16 for v in secrets.values()), secrets.keys()
    assert sent and sum(len(s) for s in sent) > 0
    found = [name for name, v in secrets.items() for s in sent if v in s]
    assert found == []
    # and with -vv against S3, the secret key is in no log line
    s3_doc = {
        "type": "s3", "bucket": s3_bucket, "endpoint_url": scfg.endpoint_url,
        "region": scfg.region, "addressing_style": "path",
        "access_key_id": scfg.access_key_id, "secret_access_key": scfg.secret_access_key,
    }  # fmt: skip
    path = box.write_config(
        box.host(sshd.port, sshd.known_hosts, sshd.client_key), s3_doc, name="s3.toml"
    )
    logs = run_cli(path, "-vv", "--log-json", "snapshot", "box")
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert '"logger": "botocore' in logs.stderr  # the library's debug log was on
    assert secrets["S3 secret key"].decode() not in logs.stderr + logs.stdout


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # keys come from the config only
    yield
