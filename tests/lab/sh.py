"""Process helpers for the lab: run argv lists, find and start Docker.

Interface:
    LabError                      the one exception the lab raises
    run(argv, *, input=None, check=True, timeout=None, capture=True) -> CompletedProcess[bytes]
    out(argv, ...) -> str         stdout of a successful run, decoded and stripped
    docker_bin() -> str           /usr/bin/docker (matches Debian's dockerd) or docker on PATH
    docker(*args, ...) -> CompletedProcess[bytes]
    dexec(container, argv, *, input=None, user=None, ...) -> CompletedProcess[bytes]
                                  `docker exec -i` into an outer container (never a tty)
    inner(host_container, argv, ...) -> CompletedProcess[bytes]
                                  run argv inside a lab host (where `docker` is its own engine)
    docker_available() -> str | None   None when usable, else why not
    ensure_dockerd(timeout=60) -> None start the outer dockerd when it is not answering
    log(msg)                      progress line on stderr
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DOCKERD_LOG = Path("/var/log/dockerd.log")


class LabError(RuntimeError):
    """Something in the lab could not be built, started or reached."""


def log(msg: str) -> None:
    """Print one progress line on stderr (stdout stays for results)."""
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def _tail(data: bytes | None, n: int = 2000) -> str:
    if not data:
        return ""
    return data[-n:].decode("utf-8", "replace").strip()


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    capture: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run *argv*; raise LabError with the stderr tail when it fails and *check*."""
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)[:300]}") from e
    except FileNotFoundError as e:
        raise LabError(f"command not found: {argv[0]}") from e
    if check and cp.returncode != 0:
        raise LabError(
            f"exit {cp.returncode}: {' '.join(argv)[:300]}\n"
            f"stderr: {_tail(cp.stderr)}\nstdout: {_tail(cp.stdout, 500)}"
        )
    return cp


def out(argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None) -> str:
    """Return the stripped stdout of a successful run of *argv*."""
    return run(argv, input=input, timeout=timeout).stdout.decode("utf-8", "replace").strip()


def docker_bin() -> str:
    """Prefer Debian's client (same version as Debian's dockerd); else whatever is on PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if not found:
        raise LabError("no docker client found (apt-get install docker.io)")
    return found


def docker(
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run the outer docker client."""
    return run([docker_bin(), *args], input=input, check=check, timeout=timeout, capture=capture)


def dexec(
    container: str,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    user: str | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`docker exec -i` *argv* in *container* of the outer engine (never with a tty)."""
    args = ["exec", "-i"]
    if user is not None:
        args += ["-u", user]
    for k, v in (env or {}).items():
        args += ["-e", f"{k}={v}"]
    return docker(*args, container, *argv, input=input, check=check, timeout=timeout)


def inner(
    host_container: str,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run *argv* on a lab host (its `docker` talks to the host's own engine)."""
    return dexec(host_container, argv, input=input, check=check, timeout=timeout)


def docker_available() -> str | None:
    """Return None when the outer Docker Engine can be used or started, else the reason."""
    try:
        client = docker_bin()
    except LabError as e:
        return str(e)
    cp = run([client, "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30)
    if cp.returncode == 0:
        return None
    if shutil.which("dockerd") is None and not os.access("/usr/sbin/dockerd", os.X_OK):
        return "docker daemon not running and dockerd not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "docker daemon not running and not root (cannot start dockerd)"
    return None


def ensure_dockerd(timeout: float = 60) -> None:
    """Start the outer dockerd (no systemd here) unless `docker info` already answers."""
    client = docker_bin()
    if run([client, "info"], check=False, timeout=30).returncode == 0:
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.access(dockerd, os.X_OK):
        raise LabError("dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise LabError("docker daemon is not running and only root can start it")
    pidfile = Path("/var/run/docker.pid")
    try:
        old_pid = int(pidfile.read_text().strip())
        os.kill(old_pid, 0)
    except (OSError, ValueError):
        old_pid = 0
    deadline = time.monotonic() + timeout
    if old_pid:
        # a dockerd is starting or shutting down: let it finish before starting another
        log(f"dockerd (pid {old_pid}) exists but does not answer yet; waiting")
        while time.monotonic() < deadline:
            if run([client, "info"], check=False, timeout=30).returncode == 0:
                return
            try:
                os.kill(old_pid, 0)
            except OSError:
                break
            time.sleep(0.5)
    log(f"starting {dockerd} (log: {DOCKERD_LOG})")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as logf:
        proc = subprocess.Popen(
            [dockerd],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run([client, "info"], check=False, timeout=30).returncode == 0:
            return
        if proc.poll() is not None:
            tail = DOCKERD_LOG.read_bytes()[-1500:].decode("utf-8", "replace")
            raise LabError(f"dockerd exited with {proc.returncode}:\n{tail}")
        time.sleep(0.5)
    raise LabError(f"dockerd did not answer within {timeout}s; see {DOCKERD_LOG}")


def wait_for(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    """Call *probe* until it returns True; raise LabError after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except LabError:
            pass
        if time.monotonic() >= deadline:
            raise LabError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)
