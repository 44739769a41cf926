"""The lab's Debian mirror: the .debs the server image was built from, served over HTTP.

A new Hetzner server installs packages from a nearby mirror; the lab's hosts do the
same from `vklab-mirror`, a small container on the lab network. Its content is the
set of .debs debootstrap downloaded for the server image (Docker Engine, Compose v2,
Caddy, UFW and everything they need), indexed as an ordinary apt repository
(`dists/trixie/main/binary-amd64/Packages` and an unsigned `Release`; the hosts'
sources say `Trusted: yes`). So every restore test installs Docker, Caddy and UFW
on a bare host without reaching the internet, and without downloading them again.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.lab.paths import LABEL, NETWORK
from tests.lab.sh import LabError, docker, log, wait_for

CONTAINER = "vklab-mirror"
SUITE = "trixie"


def _control(deb: Path) -> str:
    cp = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, check=False)
    if cp.returncode != 0:
        raise LabError(f"mirror: cannot read {deb}: {cp.stderr.decode(errors='replace')}")
    return cp.stdout.decode().rstrip("\n")


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(debs: Path, root: Path) -> Path:
    """Given the directory of downloaded .debs, lay out an apt repository under
    *root*/debian (hard links, no copies) and return *root*. Rebuilt only when the
    set of .debs changed."""
    repo = root / "debian"
    pool = repo / "pool" / "main"
    index_dir = repo / "dists" / SUITE / "main" / "binary-amd64"
    files = sorted(p for p in debs.glob("*.deb") if p.is_file())
    if not files:
        raise LabError(f"mirror: no .debs in {debs} (build the server image first)")
    stamp = hashlib.sha256("\n".join(p.name for p in files).encode()).hexdigest()[:16]
    marker = repo / ".stamp"
    if marker.exists() and marker.read_text() == stamp:
        return root
    shutil.rmtree(repo, ignore_errors=True)
    pool.mkdir(parents=True)
    index_dir.mkdir(parents=True)
    stanzas = []
    for deb in files:
        target = pool / deb.name
        try:
            os.link(deb, target)
        except OSError:
            shutil.copyfile(deb, target)
        stanzas.append(
            _control(target)
            + f"\nFilename: pool/main/{deb.name}\nSize: {target.stat().st_size}"
            + f"\nMD5sum: {_digest(target, 'md5')}\nSHA256: {_digest(target, 'sha256')}\n"
        )
    packages = ("\n".join(stanzas)).encode()
    (index_dir / "Packages").write_bytes(packages)
    (index_dir / "Packages.gz").write_bytes(gzip.compress(packages, 6, mtime=0))
    lines = []
    for name in ("Packages", "Packages.gz"):
        p = index_dir / name
        lines.append(f" {_digest(p, 'sha256')} {p.stat().st_size} main/binary-amd64/{name}")
    (repo / "dists" / SUITE / "Release").write_text(
        f"Origin: vkbackup-lab\nLabel: vkbackup-lab\nSuite: {SUITE}\nCodename: {SUITE}\n"
        "Architectures: amd64\nComponents: main\nSHA256:\n" + "\n".join(lines) + "\n"
    )
    marker.write_text(stamp)
    log(f"mirror: {len(files)} packages indexed in {repo}")
    return root


def running() -> bool:
    cp = docker("container", "inspect", "-f", "{{.State.Running}}", CONTAINER, check=False)
    return cp.returncode == 0 and cp.stdout.decode().strip() == "true"


def ensure(root: Path, image: str) -> None:
    """Serve *root* as http://vklab-mirror/ on the lab network (started when not running)."""
    if running():
        return
    docker("rm", "-f", CONTAINER, check=False)
    docker(
        "run", "-d", "--name", CONTAINER, "--hostname", CONTAINER, "--network", NETWORK,
        "--label", f"{LABEL}=1", "-v", f"{root}:/srv/mirror:ro", "--init", image,
        "python3", "-m", "http.server", "80", "--bind", "0.0.0.0", "--directory", "/srv/mirror",
    )  # fmt: skip

    def answers() -> bool:
        cp = docker(
            "exec", CONTAINER, "python3", "-c",
            "import urllib.request as u; u.urlopen('http://127.0.0.1/debian/dists/"
            f"{SUITE}/Release', timeout=3).read()",
            check=False,
        )  # fmt: skip
        return cp.returncode == 0

    wait_for("vklab-mirror answers", answers, 30)


def remove() -> None:
    docker("rm", "-f", CONTAINER, check=False)
