"""Bandwidth limits (issue 17): RateLimiter / RateLimitedReader on a fake clock
(the long-run rate, the largest burst, smooth reads), one limiter shared by
threads, and ThrottledStorage pacing put and open. No test here measures real
time."""

from __future__ import annotations

import io
import itertools
import os
import threading
from pathlib import Path

import pytest

from vkbackup.config.model import TransferConfig
from vkbackup.storage.local import LocalStorage
from vkbackup.storage.throttled import KIB, ThrottledStorage, effective_kib, throttle
from vkbackup.streams import (
    CHUNK,
    MIN_BURST,
    BytesReader,
    RateLimitedReader,
    RateLimiter,
    iter_chunks,
)

MIB = 1024 * 1024


class FakeClock:
    """time.monotonic and time.sleep for one thread: sleeping moves the time on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.slept += seconds


class Zeros:
    """An endless source of zero bytes (the content does not matter here)."""

    def __init__(self, total: int) -> None:
        self.left = total

    def read(self, n: int = -1, /) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def deliveries(reader: RateLimitedReader, clock: FakeClock, size: int) -> list[tuple[float, int]]:
    """(time handed out, bytes) of each read of *size* until EOF."""
    out = []
    for chunk in iter_chunks(reader, size):
        out.append((clock.now, len(chunk)))
    return out


def max_window(events: list[tuple[float, int]], window: float) -> int:
    """The most bytes handed out in any *window* seconds (a window starting at a delivery
    is the worst case)."""
    best = 0
    j = 0
    total = 0
    for i in range(len(events)):
        while j < len(events) and events[j][0] < events[i][0] + window:
            total += events[j][1]
            j += 1
        best = max(best, total)
        total -= events[i][1]
    return best


def test_default_bucket_is_100ms_or_one_64k_chunk_whichever_is_larger() -> None:
    assert RateLimiter(MIB).burst == max(MIB // 10, MIN_BURST)
    assert RateLimiter(100 * KIB).burst == MIN_BURST == 64 * KIB
    assert RateLimiter(40 * MIB).burst == 4 * MIB
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_10_mib_at_1_mib_per_s_takes_10_s_of_fake_time_and_no_second_carries_more() -> None:
    clock = FakeClock()
    total = 10 * MIB
    reader = RateLimitedReader(Zeros(total), MIB, clock=clock, sleep=clock.sleep)
    burst = reader.limiter.burst
    start = clock.now
    events = deliveries(reader, clock, CHUNK)
    elapsed = clock.now - start
    assert sum(n for _, n in events) == total
    # the bucket starts full: exactly (total - burst) / rate seconds
    assert elapsed == pytest.approx((total - burst) / MIB, rel=1e-9)
    assert 9.8 < elapsed <= 10.0
    # smooth: each read hands out at most one bucket, and any 1 s at most rate + bucket
    assert max(n for _, n in events) <= burst
    assert max_window(events, 1.0) <= MIB + burst
    # and not in bursts with long pauses: a quarter second never goes without data
    times = [t for t, _ in events]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 0.25


def test_a_slow_consumer_regains_at_most_one_bucket() -> None:
    clock = FakeClock()
    reader = RateLimitedReader(Zeros(4 * MIB), MIB, clock=clock, sleep=clock.sleep)
    burst = reader.limiter.burst
    assert len(reader.read(CHUNK)) == burst  # from the full bucket, no sleep
    clock.now += 60  # an idle minute does not bank 60 MiB
    t0 = clock.now
    events = deliveries(reader, clock, CHUNK)
    got = sum(n for _, n in events)
    assert clock.now - t0 == pytest.approx((got - burst) / MIB)
    assert max_window(events, 1.0) <= MIB + burst


def test_read_all_is_still_paced_and_small_reads_pass_through() -> None:
    clock = FakeClock()
    reader = RateLimitedReader(Zeros(3 * MIB), MIB, clock=clock, sleep=clock.sleep)
    assert reader.read(10) == bytes(10)
    rest = reader.read()
    assert len(rest) == 3 * MIB - 10
    assert clock.now - 1000.0 == pytest.approx((3 * MIB - reader.limiter.burst) / MIB)
    assert reader.read(5) == b""


def test_the_bytes_are_unchanged_and_close_passes_through() -> None:
    data = os.urandom(300 * KIB)
    clock = FakeClock()

    class Closing(io.BytesIO):
        pass

    src = Closing(data)
    with RateLimitedReader(src, 100 * KIB, clock=clock, sleep=clock.sleep) as r:
        assert b"".join(iter_chunks(r)) == data
    assert src.closed


def test_one_limiter_shared_by_two_streams_counts_both() -> None:
    """With the clock frozen, the second stream's wait includes the first's bytes:
    the total, not each stream, keeps to the limit."""
    clock = FakeClock()
    waits: list[float] = []
    shared = RateLimiter(MIB, clock=clock, sleep=waits.append)
    a = RateLimitedReader(Zeros(MIB), shared)
    b = RateLimitedReader(Zeros(MIB), shared)
    burst = shared.burst
    a.read(burst)  # the full bucket: no wait
    b.read(burst)
    a.read(burst)
    assert waits == pytest.approx([burst / MIB, 2 * burst / MIB])
    # separate limiters would each have waited nothing yet
    own = RateLimiter(MIB, clock=clock, sleep=waits.append)
    RateLimitedReader(Zeros(MIB), own).read(burst)
    assert len(waits) == 2


def test_shared_limiter_is_thread_safe() -> None:
    """8 threads hammer one limiter: no charge is lost (the debt is exactly every
    byte beyond the bucket), and the waits handed out add up to it."""

    class Frozen:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.waits: list[float] = []

        def sleep(self, s: float) -> None:
            with self.lock:
                self.waits.append(s)

    frozen = Frozen()
    limiter = RateLimiter(MIB, burst=64 * KIB, clock=lambda: 5.0, sleep=frozen.sleep)
    per_thread, n_threads, size = 400, 8, 4096
    barrier = threading.Barrier(n_threads)

    def work() -> None:
        barrier.wait()
        r = RateLimitedReader(Zeros(per_thread * size), limiter)
        while r.read(size):
            pass

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = per_thread * size * n_threads
    debt = total - 64 * KIB
    # each wait is the debt at that moment: the largest is the whole debt
    assert max(frozen.waits) == pytest.approx(debt / MIB)
    assert len(frozen.waits) == total // size - (64 * KIB) // size


def test_real_threads_share_the_limit_lower_bound_only() -> None:
    """Real time, lower bound only (a limiter cannot make anything faster): 4
    streams of 192 KiB through one 1 MiB/s limiter cannot end before
    (768 KiB - bucket) / rate."""
    import time

    limiter = RateLimiter(MIB)
    t0 = time.monotonic()

    def work() -> None:
        r = RateLimitedReader(Zeros(192 * KIB), limiter)
        while r.read(CHUNK):
            pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 >= (768 * KIB - limiter.burst) / MIB - 0.01


# -- storage -------------------------------------------------------------------------------


def test_throttled_storage_paces_put_and_open(tmp_path: Path) -> None:
    clock = FakeClock()
    up = RateLimiter(MIB, clock=clock, sleep=clock.sleep)
    down = RateLimiter(2 * MIB, clock=clock, sleep=clock.sleep)
    store = ThrottledStorage(LocalStorage(tmp_path), upload=up, download=down)
    data = os.urandom(3 * MIB)
    t0 = clock.now
    info = store.put("data/a", BytesReader(data))
    assert info.size == len(data)
    assert clock.now - t0 == pytest.approx((3 * MIB - up.burst) / MIB)
    t1 = clock.now
    with store.open("data/a") as f:
        assert b"".join(iter_chunks(f)) == data
    assert clock.now - t1 == pytest.approx((3 * MIB - down.burst) / (2 * MIB))
    assert store.head("data/a") is not None and store.describe() == str(tmp_path)
    store.delete("data/a")
    assert store.head("data/a") is None


def test_the_option_overrides_the_config_and_0_means_no_limit(tmp_path: Path) -> None:
    assert effective_kib(None, 0) == 0
    assert effective_kib(None, 512) == 512
    assert effective_kib(2048, 512) == 2048
    assert effective_kib(0, 512) == 0  # --limit-upload 0 lifts the configured limit
    base = LocalStorage(tmp_path)
    assert throttle(base, TransferConfig()) is base
    assert throttle(base, TransferConfig(limit_upload_kib=512), upload_kib=0) is base
    t = throttle(base, TransferConfig(limit_upload_kib=512, limit_download_kib=256))
    assert isinstance(t, ThrottledStorage)
    assert t.upload is not None and t.upload.rate == 512 * KIB
    assert t.download is not None and t.download.rate == 256 * KIB
    t = throttle(base, TransferConfig(limit_upload_kib=512), upload_kib=100, download_kib=300)
    assert isinstance(t, ThrottledStorage)
    assert t.upload is not None and t.upload.rate == 100 * KIB
    assert t.download is not None and t.download.rate == 300 * KIB
