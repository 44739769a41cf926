"""Shared helpers for the crypto tests: stock age binaries, a pty driver, streams.

Tests that need /usr/bin/age (or age-keygen), or stock age 1.3.2 for the
post-quantum interop (tests/unit/crypto/age13.py), fail in CI when it is
missing, and skip with the reason otherwise (tests/realparts.py).
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import select
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.realparts import require
from tests.unit.crypto.age13 import age13_tool

AGE = "/usr/bin/age"
AGE_KEYGEN = "/usr/bin/age-keygen"


def _need(path: str) -> str:
    if os.path.exists(path) and os.access(path, os.X_OK):
        return path
    require(f"{path} not installed (apt-get install age) - interop test skipped")


@pytest.fixture(scope="session")
def age_bin() -> str:
    return _need(AGE)


@pytest.fixture(scope="session")
def age_keygen_bin() -> str:
    return _need(AGE_KEYGEN)


def clean_env() -> dict[str, str]:
    """The environment for child processes, without any passphrase variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VKBACKUP_")}
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


@dataclass
class TtyResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    transcript: str  # what the program wrote on its terminal


_PROMPT = re.compile(r"passphrase[^:\n]*: ?", re.IGNORECASE)


def run_with_tty(
    argv: Sequence[str],
    answers: Sequence[str],
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> TtyResult:
    """Run *argv* with a pseudo-terminal as its controlling terminal.

    Standard input/output stay plain files (binary data); every time the
    program prints a passphrase prompt on its terminal, the next answer is
    typed. This is how stock `age -p` and `age -d` read passphrases
    (/dev/tty), and how vkbackup's prompt is exercised.
    """
    master, slave = pty.openpty()
    slave_name = os.ttyname(slave)
    os.close(slave)

    def become_session_leader() -> None:
        os.setsid()
        fd = os.open(slave_name, os.O_RDWR)  # first tty opened: the controlling terminal
        os.close(fd)

    with (
        tempfile.TemporaryFile() as fin,
        tempfile.TemporaryFile() as fout,
        tempfile.TemporaryFile() as ferr,
    ):
        fin.write(stdin)
        fin.seek(0)
        proc = subprocess.Popen(
            list(argv),
            stdin=fin,
            stdout=fout,
            stderr=ferr,
            env=env if env is not None else clean_env(),
            preexec_fn=become_session_leader,
        )
        transcript = b""
        sent = 0
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None or select.select([master], [], [], 0)[0]:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"{argv[0]} timed out; terminal said: {transcript!r}")
                ready, _, _ = select.select([master], [], [], 0.05)
                if ready:
                    try:
                        data = os.read(master, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        if proc.poll() is not None:
                            break
                        continue
                    transcript += data
                prompts = len(_PROMPT.findall(transcript.decode("utf-8", "replace")))
                if prompts > sent and sent < len(answers):
                    time.sleep(0.05)  # let the program switch echo off first
                    os.write(master, answers[sent].encode() + b"\r")
                    sent += 1
            proc.wait(timeout=timeout)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
        fout.seek(0)
        ferr.seek(0)
        return TtyResult(
            proc.returncode, fout.read(), ferr.read(), transcript.decode("utf-8", "replace")
        )


class PatternReader:
    """A Readable producing *size* deterministic pseudo-random bytes without storing them.

    It returns at most *max_read* bytes per call (short reads, like a pipe),
    and records the sha256 of everything it produced.
    """

    def __init__(self, size: int, seed: int = 0, max_read: int | None = None) -> None:
        import random

        self._block = random.Random(seed).randbytes(1 << 20)
        self._left = size
        self._pos = 0
        self._max_read = max_read
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            n = self._left
        if self._max_read is not None:
            n = min(n, self._max_read)
        n = min(n, self._left, len(self._block) - self._pos)
        out = self._block[self._pos : self._pos + n]
        self._pos = (self._pos + n) % len(self._block)
        self._left -= n
        self.sha256.update(out)
        return out


class ChunkyReader:
    """A Readable over bytes that returns short reads of the given sizes, cycling."""

    def __init__(self, data: bytes, sizes: Sequence[int]) -> None:
        self._data = data
        self._pos = 0
        self._sizes = [max(1, s) for s in sizes] or [1]
        self._i = 0

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            n = len(self._data) - self._pos
        k = min(n, self._sizes[self._i % len(self._sizes)])
        self._i += 1
        out = self._data[self._pos : self._pos + k]
        self._pos += len(out)
        return out


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def age13_bin() -> str:
    """Stock age 1.3.2 (post-quantum keys), unpacked by .ci/setup."""
    return age13_tool("age")


@pytest.fixture(scope="session")
def age13_keygen_bin() -> str:
    return age13_tool("age-keygen")
