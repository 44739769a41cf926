"""A fake host for hook tests: a Transport that records every command it is asked
to run, in order, and answers from a script (no process is started).

    Host(script={"exit-1-command": (1, b"", "why\\n")})
        .connect(host_config) -> FakeTransport     (a new connection, same record)
        .seen -> list[str]   "hook: CMD" for a hook, "run: ARGV", "start: ARGV",
                             "ended: ARGV" (a started command's wait), in order
        .hooks -> list[str]  the hook commands only
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vkbackup.config.model import HostConfig
from vkbackup.streams import Readable
from vkbackup.transport.base import Completed, failure

Answer = tuple[int, bytes, str]  # status, stdout, stderr


def label(argv: list[str]) -> str:
    """ "hook: CMD" for a hook's argv (timeout ... bash -c CMD), else the argv joined."""
    if argv[:1] == ["timeout"] and argv[-3:-1] == ["bash", "-c"]:
        return "hook: " + argv[-1]
    return " ".join(argv)


@dataclass
class Host:
    script: Mapping[str, Answer] = field(default_factory=dict)
    streams: Callable[[list[str]], Answer] | None = None  # what a started command gives
    name: str = "root@prod.test:22"
    seen: list[str] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event: str) -> None:
        with self.lock:
            self.seen.append(event)

    def answer(self, argv: list[str]) -> Answer:
        text = label(argv)
        key = text.removeprefix("hook: ")
        return self.script.get(key, (0, b"", ""))

    def connect(self, _: HostConfig | None = None) -> FakeTransport:
        with self.lock:
            self.connections += 1
        return FakeTransport(self)

    @property
    def hooks(self) -> list[str]:
        return [e.removeprefix("hook: ") for e in self.seen if e.startswith("hook: ")]


class FakeProcess:
    def __init__(self, host: Host, argv: list[str], answer: Answer) -> None:
        self._host = host
        self._argv = argv
        self.status, out, self.err = answer
        self._stdout = io.BytesIO(out)

    @property
    def stdout(self) -> Readable:
        return self._stdout

    def write(self, data: bytes) -> None:
        return None

    def close_stdin(self) -> None:
        return None

    def wait(self, check: bool = True) -> int:
        self._host.record("ended: " + label(self._argv))
        if check and self.status != 0:
            raise failure(self._host.name, self._argv, self.status, self.err)
        return self.status

    def stderr_tail(self) -> str:
        return self.err

    def kill(self) -> None:
        return None


class FakeTransport:
    def __init__(self, host: Host) -> None:
        self._host = host

    @property
    def name(self) -> str:
        return self._host.name

    def start(self, argv: list[str]) -> FakeProcess:
        self._host.record("start: " + label(argv))
        answer = self._host.streams(argv) if self._host.streams else self._host.answer(argv)
        return FakeProcess(self._host, argv, answer)

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        text = label(argv)
        self._host.record(text if text.startswith("hook: ") else "run: " + text)
        self._host.timeouts.append(timeout)
        status, out, err = self._host.answer(argv)
        if check and status != 0:
            raise failure(self._host.name, argv, status, err)
        return Completed(argv, status, out, err)

    def feed(self, argv: list[str], src: Readable) -> Completed:
        return self.run(argv)

    def close(self) -> None:
        return None
