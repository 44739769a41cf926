"""Progress on long work: a line per second on a TTY, nothing under cron.

Each stream being moved has its own Counter, written by one thread only, so
counting needs no lock; the display thread only reads the counters.
"""

from __future__ import annotations

import sys
import threading
import time

from vkbackup.streams import Readable


def human_bytes(n: float) -> str:
    """Given a byte count, return it short in binary units: "512 B", "3.2 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Counter:
    """Bytes moved so far by one stream (one writer per counter)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bytes = 0
        self.done = False

    def add(self, n: int) -> None:
        self.bytes += n


class CountingReader:
    """Pass-through reader that adds the size of every read to *counter*."""

    def __init__(self, src: Readable, counter: Counter) -> None:
        self._src = src
        self._c = counter

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        self._c.add(len(data))
        return data


class Progress:
    """The progress line on stderr, refreshed every *interval* seconds between
    start() and stop(). *enabled* defaults to whether stderr is a TTY."""

    def __init__(self, enabled: bool | None = None, interval: float = 1.0) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.interval = interval
        self.counters: list[Counter] = []
        self._stop = threading.Event()
        self._t: threading.Thread | None = None
        self._t0 = time.monotonic()

    def counter(self, label: str) -> Counter:
        c = Counter(label)
        self.counters.append(c)
        return c

    def start(self) -> None:
        if self.enabled and self._t is None:
            self._t = threading.Thread(target=self._loop, daemon=True)
            self._t.start()

    def _line(self) -> str:
        total = sum(c.bytes for c in self.counters)
        secs = max(time.monotonic() - self._t0, 1e-6)
        active = [c for c in self.counters if not c.done and c.bytes]
        parts = ", ".join(f"{c.label} {human_bytes(c.bytes)}" for c in active[:3])
        return f"{human_bytes(total)} at {human_bytes(total / secs)}/s  {parts}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            sys.stderr.write("\r\x1b[K" + self._line()[:200])
            sys.stderr.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._t is not None:
            self._t.join(timeout=5)
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
