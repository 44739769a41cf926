"""Benchmark: vkbackup's age readers against stock `age` on the same data, same run.

Usage:
    .venv/bin/python benchmarks/crypto_bench.py [--size 1G] [--small 128M] [--repeat 3]
                                                [--tmpdir DIR] [--age /usr/bin/age]

What it does:
  1. Writes --size bytes of random data to a temporary file, then syncs so
     that writeback does not run during the measurements (page cache warm).
  2. Encrypt: vkbackup's EncryptingReader (reading the file 1 MiB at a time, as
     the pipeline does, writing to /dev/null) vs `age -r` (< file > /dev/null).
  3. Decrypt: one ciphertext made by `age` (untimed) is decrypted by
     vkbackup's DecryptingReader and by `age -d -i`, both to /dev/null.
  4. Repeats each measurement --repeat times, alternating tools, and keeps the
     best run of each (the machine is shared; the best run is the least
     disturbed). Every run is a fresh child process; its peak RSS is measured
     by GNU time (%M, /usr/bin/time) around it; vkbackup's worker also
     reports its own VmHWM.
  5. Repeats the vkbackup and age runs at --small to show peak RSS is flat in
     the data size, and prints the worker's baseline RSS with no data (the
     interpreter and imports), so the streaming cost itself is visible.

Throughput for vkbackup is measured inside the worker over the streaming loop
(interpreter start-up and imports excluded, reported separately); for age it is
the child's wall time (its start-up is a few milliseconds). CPU seconds (user +
system) are printed too: on a shared, busy machine they are steadier than wall
time. Peak RSS is the largest seen over the runs. MB = 10^6 bytes.
This is a harness, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

READ = 1024 * 1024


def parse_size(text: str) -> int:
    """Given "1G", "128M", "64K" or a byte count, return bytes (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def vm_hwm_kib() -> int:
    """Return this process's peak resident set size (VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def worker(op: str, path: str, key_file: str) -> None:
    """Run one streaming operation in this process and print a JSON result line."""
    started = time.perf_counter()
    from vkbackup.crypto import (
        DecryptingReader,
        EncryptingReader,
        X25519Identity,
        load_identity_file,
    )
    from vkbackup.streams import BytesReader, Readable

    (identity,) = load_identity_file(Path(key_file))
    assert isinstance(identity, X25519Identity)
    imported = time.perf_counter()
    cpu_start = time.process_time()
    total = 0
    with open(path, "rb", buffering=0) as src, open(os.devnull, "wb") as sink:
        reader: Readable
        if op == "encrypt":
            reader = EncryptingReader(src, [identity.recipient()])
        elif op == "decrypt":
            reader = DecryptingReader(src, [identity], path)
        else:  # "idle": imports and key loading only, the interpreter's baseline
            reader = BytesReader(b"")
        while chunk := reader.read(READ):
            sink.write(chunk)
            total += len(chunk)
    done = time.perf_counter()
    cpu = time.process_time() - cpu_start
    print(
        json.dumps(
            {
                "stream_s": done - imported,
                "stream_cpu_s": cpu,
                "startup_s": imported - started,
                "bytes_out": total,
                "vm_hwm_kib": vm_hwm_kib(),
            }
        )
    )


@dataclass
class Run:
    seconds: float  # wall time of the streaming work
    wall: float  # child's whole life
    cpu: float  # CPU seconds (user + system) of the streaming work
    max_rss_kib: int
    vm_hwm_kib: int = 0  # vkbackup's worker only: its own /proc VmHWM


GNU_TIME = "/usr/bin/time"


def run_child(argv: list[str], stdin_path: str = os.devnull) -> tuple[Run, bytes]:
    """Run *argv* as a child with *stdin_path* as input; return its timing, RSS and stdout.

    Peak RSS comes from GNU time's %M (the measured program is time's child,
    so it starts from time's tiny address space). A direct child of this
    Python process would report this process's own RSS as its ru_maxrss
    (Linux carries the pre-exec high-water mark across exec).
    """
    with tempfile.NamedTemporaryFile("r") as rss_file, open(stdin_path, "rb") as stdin:
        wrapped = [GNU_TIME, "-f", "%M %U %S", "-o", rss_file.name, *argv]
        use_time = os.access(GNU_TIME, os.X_OK)
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped if use_time else argv, stdin=stdin, stdout=subprocess.PIPE)
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        rss_text = rss_file.read().strip().splitlines()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{argv[0]} failed with exit status {code}")
    cpu = usage.ru_utime + usage.ru_stime  # includes reaped grandchildren (time's child)
    if use_time and rss_text:
        rss, user, system = rss_text[-1].split()
        max_rss, cpu = int(rss), float(user) + float(system)
    else:
        max_rss = int(usage.ru_maxrss)
    return Run(wall, wall, cpu, max_rss), out


def vk_run(op: str, path: Path, key_file: Path) -> Run:
    argv = [sys.executable, __file__, "--worker", op, str(path), str(key_file)]
    run, out = run_child(argv)
    doc = json.loads(out.decode().strip().splitlines()[-1])
    run.seconds = float(doc["stream_s"])
    run.cpu = float(doc["stream_cpu_s"])
    run.vm_hwm_kib = int(doc["vm_hwm_kib"])
    return run


def age_run(age: str, op: str, path: Path, key_file: Path, recipient: str) -> Run:
    if op == "encrypt":
        argv = [age, "-e", "-r", recipient, "-o", os.devnull]
    else:
        argv = [age, "-d", "-i", str(key_file), "-o", os.devnull]
    run, _ = run_child(argv, stdin_path=str(path))
    return run


def make_data(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def best(runs: list[Run]) -> Run:
    """Return the fastest run by wall time, carrying the lowest CPU time seen."""
    fastest = min(runs, key=lambda r: r.seconds)
    return Run(
        fastest.seconds,
        fastest.wall,
        min(r.cpu for r in runs),
        max(r.max_rss_kib for r in runs),
        max(r.vm_hwm_kib for r in runs),
    )


def measure(
    size: int, repeat: int, tmp: Path, age: str, key_file: Path, recipient: str
) -> dict[str, Run]:
    plain = tmp / f"plain-{size}"
    sealed = tmp / f"sealed-{size}.age"
    make_data(plain, size)
    subprocess.run([age, "-e", "-r", recipient, "-o", str(sealed), str(plain)], check=True)
    os.sync()  # finish writeback first: it would steal CPU from whichever run comes next
    runs: dict[str, list[Run]] = {}
    for i in range(repeat):
        order = ["vk", "age"] if i % 2 == 0 else ["age", "vk"]
        for tool in order:
            for op, src in (("encrypt", plain), ("decrypt", sealed)):
                r = (
                    vk_run(op, src, key_file)
                    if tool == "vk"
                    else age_run(age, op, src, key_file, recipient)
                )
                runs.setdefault(f"{tool} {op}", []).append(r)
    plain.unlink()
    sealed.unlink()
    return {k: best(v) for k, v in runs.items()}


def report(size: int, results: dict[str, Run]) -> None:
    mb = size / 1e6
    print(f"\n== {size / (1 << 20):.0f} MiB of random data (best of runs)")
    print(
        f"{'':12} {'MB/s':>6} {'seconds':>8} {'wall s':>7} {'MB/cpu-s':>9} {'cpu s':>6}"
        f" {'peak RSS MiB':>13} {'VmHWM':>6}"
    )
    for key in ("vk encrypt", "age encrypt", "vk decrypt", "age decrypt"):
        r = results[key]
        print(
            f"{key:12} {mb / r.seconds:6.0f} {r.seconds:8.3f} {r.wall:7.3f} "
            f"{mb / r.cpu:9.0f} {r.cpu:6.2f} {r.max_rss_kib / 1024:13.1f} "
            + (f"{r.vm_hwm_kib / 1024:6.1f}" if r.vm_hwm_kib else "")
        )
    for op in ("encrypt", "decrypt"):
        vk, ag = results[f"vk {op}"], results[f"age {op}"]
        print(
            f"ratio vkbackup/age {op}: {ag.seconds / vk.seconds:.2f}x throughput (wall), "
            f"{ag.cpu / vk.cpu:.2f}x per CPU second"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1G", help="data size (default 1G)")
    parser.add_argument("--small", default="128M", help="second size, for RSS flatness")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmpdir", default=None, help="where the data files go")
    parser.add_argument("--age", default="/usr/bin/age")
    parser.add_argument("--worker", nargs=3, metavar=("OP", "FILE", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    from vkbackup.crypto import generate_identity, write_identity_file

    print(f"python {sys.version.split()[0]}, age at {args.age}, {os.cpu_count()} CPUs")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="vk-crypto-bench-") as d:
        tmp = Path(d)
        identity = generate_identity()
        key_file = tmp / "identity.txt"
        write_identity_file(key_file, identity)
        recipient = str(identity.recipient())
        sizes = [parse_size(args.size), parse_size(args.small)]
        all_results = {}
        for size in sizes:
            all_results[size] = measure(size, args.repeat, tmp, args.age, key_file, recipient)
            report(size, all_results[size])
        big, small = sizes
        idle = vk_run("idle", key_file, key_file)
        print("\n== peak RSS by data size (MiB): flat means bounded memory")
        print(f"vk baseline (python + imports, no data): {idle.max_rss_kib / 1024:.1f}")
        for key in ("vk encrypt", "vk decrypt", "age encrypt", "age decrypt"):
            a = all_results[small][key].max_rss_kib / 1024
            b = all_results[big][key].max_rss_kib / 1024
            print(f"{key:16} {small >> 20:>6} MiB: {a:7.1f}   {big >> 20:>6} MiB: {b:7.1f}")


if __name__ == "__main__":
    main()
