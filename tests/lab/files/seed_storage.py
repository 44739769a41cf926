"""Fill a Chatwoot-like attachments tree with everything a careless tar loses.

Runs as root inside the lab's chatwoot container (stdlib only, Debian's python3):
    python3 - ROOT SCALE < seed_storage.py      prints a JSON summary on stdout

Deterministic for a given SCALE (seeded PRNG, fixed mtimes). Content:
    - ActiveStorage-style layout ROOT/xx/yy/<key>, 400*SCALE small files (1-48 KiB)
    - 3 large incompressible files of (2, 3, 4) MiB * SCALE
    - a sparse file (64 MiB apparent, 2 data extents)
    - hard links (within a directory and across directories)
    - symlinks: relative, absolute, to a directory, dangling, a loop
    - empty directories (nested too), a sticky 1777 dir, a setgid 2775 dir
    - private modes 0600/0700, odd modes 0444/0751
    - owners 0, 1000, 999, 65534 and an unnamed 12345:54321
    - names with spaces, a newline, a tab, quotes, a leading dash, UTF-8
      (accents, CJK, emoji), invalid UTF-8 bytes, a 255-byte name, 24-level nesting
The ROOT directory itself is left as the image made it (owner and mode).
"""

from __future__ import annotations

import json
import os
import random
import sys

MIB = 1024 * 1024
T0 = 1_700_000_000  # fixed mtimes: 2023-11-14


def _mtime(i: int) -> tuple[int, int]:
    t = T0 + i * 61  # stays in the past: i < 40000 is under a month
    return (t, t)


class Seeder:
    def __init__(self, root: bytes, scale: float) -> None:
        self.root = root
        self.scale = scale
        self.rng = random.Random(20240601)
        self.files = 0
        self.bytes = 0
        self.dirs: set[bytes] = set()
        self.special: dict[str, str] = {}
        self.n = 0

    def p(self, *parts: str | bytes) -> bytes:
        out = self.root
        for part in parts:
            out = os.path.join(out, part.encode() if isinstance(part, str) else part)
        return out

    def mkdir(self, path: bytes, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> bytes:
        os.makedirs(path, exist_ok=True)
        os.chown(path, *owner)
        os.chmod(path, mode)
        d = path
        while d != self.root and d not in self.dirs:
            self.dirs.add(d)
            d = os.path.dirname(d)
        return path

    def write(
        self,
        path: bytes,
        data: bytes,
        mode: int = 0o644,
        owner: tuple[int, int] = (0, 0),
    ) -> bytes:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            self.mkdir(parent)
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, *owner)
        os.chmod(path, mode)
        self.n += 1
        os.utime(path, _mtime(self.n))
        self.files += 1
        self.bytes += len(data)
        return path

    def big(self, path: bytes, size: int) -> None:
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = min(left, 4 * MIB)
                f.write(self.rng.randbytes(chunk))
                left -= chunk
        os.chown(path, 1000, 1000)
        os.chmod(path, 0o640)
        self.n += 1
        os.utime(path, _mtime(self.n))
        self.files += 1
        self.bytes += size

    def run(self) -> dict[str, object]:
        r = self.rng
        # ActiveStorage-like blobs
        count = max(20, int(400 * self.scale))
        keys: list[bytes] = []
        for i in range(count):
            key = f"{r.getrandbits(128):032x}"
            d = self.mkdir(self.p(key[:2], key[2:4]), 0o755, (1000, 1000))
            size = r.randint(1024, 48 * 1024)
            # half compressible text, half random
            if i % 2:
                data = r.randbytes(size)
            else:
                data = (f"attachment {i} {key}\n" * (size // 40 + 1)).encode()[:size]
            keys.append(self.write(os.path.join(d, key.encode()), data, 0o644, (1000, 1000)))
        # large files
        self.mkdir(self.p("large"), 0o755, (1000, 1000))
        for i, mib in enumerate((2, 3, 4)):
            self.big(self.p("large", f"video-{i}.mp4"), max(1, int(mib * self.scale * MIB)))
        # sparse file: 64 MiB apparent, data at 0 and at 40 MiB
        sparse = self.p("sparse", "disk.img")
        self.mkdir(self.p("sparse"))
        with open(sparse, "wb") as f:
            f.write(b"SPARSE-HEAD" * 100)
            f.seek(40 * MIB)
            f.write(b"SPARSE-MIDDLE" * 100)
            f.truncate(64 * MIB)
        os.chmod(sparse, 0o600)
        os.utime(sparse, _mtime(10_000))
        self.files += 1
        self.special["sparse"] = "sparse/disk.img"
        # hard links
        self.mkdir(self.p("links"))
        target = self.write(self.p("links", "original.txt"), b"hard linked content\n" * 50)
        os.link(target, self.p("links", "hardlink-same-dir.txt"))
        self.mkdir(self.p("links", "other"))
        os.link(target, self.p("links", "other", "hardlink-other-dir.txt"))
        os.link(keys[0], self.p("links", "hardlink-to-blob"))
        self.special["hardlinks"] = "links/original.txt"
        # symlinks
        os.symlink(b"original.txt", self.p("links", "relative-link"))
        os.symlink(b"/app/storage/links/original.txt", self.p("links", "absolute-link"))
        os.symlink(b"../large", self.p("links", "dir-link"))
        os.symlink(b"does-not-exist/anywhere", self.p("links", "dangling-link"))
        os.symlink(b"/nonexistent/absolute", self.p("links", "dangling-absolute"))
        os.symlink(b"loop-b", self.p("links", "loop-a"))
        os.symlink(b"loop-a", self.p("links", "loop-b"))
        for i, name in enumerate(
            (
                "relative-link",
                "absolute-link",
                "dir-link",
                "dangling-link",
                "dangling-absolute",
                "loop-a",
                "loop-b",
            )
        ):
            os.utime(self.p("links", name), _mtime(20_000 + i), follow_symlinks=False)
        os.lchown(self.p("links", "dangling-link"), 1000, 1000)
        # empty directories
        self.mkdir(self.p("empty"))
        self.mkdir(self.p("empty-nested", "a", "b", "c"), 0o750, (1000, 1000))
        self.mkdir(self.p("tmp-sticky"), 0o1777)
        self.mkdir(self.p("shared-setgid"), 0o2775, (1000, 999))
        self.write(self.p("tmp-sticky", "upload.part"), b"partial", 0o666, (65534, 65534))
        # private and odd modes, owners
        self.mkdir(self.p("private"), 0o700, (999, 999))
        self.write(self.p("private", "secret-note.txt"), b"private\n", 0o600, (999, 999))
        self.write(self.p("private", "key.pem"), b"-----BEGIN FAKE KEY-----\n", 0o400)
        self.mkdir(self.p("modes"), 0o751)
        self.write(self.p("modes", "readonly.txt"), b"ro\n", 0o444)
        self.write(self.p("modes", "executable.sh"), b"#!/bin/sh\necho hi\n", 0o755)
        self.write(self.p("modes", "nobody.txt"), b"nobody\n", 0o644, (65534, 65534))
        self.write(self.p("modes", "unnamed-owner.txt"), b"?\n", 0o664, (12345, 54321))
        # odd names
        odd = self.mkdir(self.p("odd names"), 0o755, (1000, 1000))
        names: list[bytes] = [
            b"with space.txt",
            b"line\nbreak.txt",
            b"tab\there.txt",
            b'quote\'s "double".txt',
            b"-leading-dash.txt",
            "café crème.txt".encode(),
            "日本語のファイル.txt".encode(),
            "emoji-🎉.txt".encode(),
            b"latin1-caf\xe9.txt",  # not valid UTF-8
            ("x" * 251 + ".txt").encode(),  # 255 bytes
            b"back\\slash.txt",
            b" leading-and-trailing-space ",
        ]
        for i, raw in enumerate(names):
            self.write(os.path.join(odd, raw), f"odd name {i}\n".encode(), 0o644, (1000, 1000))
        self.mkdir(os.path.join(odd, b"dir with space"), 0o755, (1000, 1000))
        self.write(os.path.join(odd, b"dir with space", "ünïcödé".encode()), b"nested odd\n")
        # deep nesting
        deep = self.p(*[f"level{i:02d}" for i in range(24)])
        self.mkdir(deep)
        self.write(os.path.join(deep, b"bottom.txt"), b"deep\n")
        # directory mtimes last, deepest first (creating entries changes them)
        for i, d in enumerate(sorted(self.dirs, key=lambda x: (-x.count(b"/"), x))):
            os.utime(d, _mtime(30_000 + i))
        return {
            "files": self.files,
            "bytes": self.bytes,
            "blobs": count,
            "special": self.special,
            "odd_names_hex": [n.hex() for n in names],  # raw bytes: one is not UTF-8
        }


def main() -> None:
    root = os.fsencode(sys.argv[1])
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    if os.listdir(root):
        raise SystemExit(f"{sys.argv[1]} is not empty; refusing to seed")
    summary = Seeder(root, scale).run()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
