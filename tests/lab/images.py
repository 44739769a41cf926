"""Base images for the lab, built from Debian with debootstrap and cached in the outer engine.

Two images, built in parallel on a cold machine:
    vklab-host:<hash>  sshd + Docker Engine + docker-compose (v1, Debian's): a "VPS"
    vklab-app:<hash>   PostgreSQL 15, Redis, Caddy, python3: the base of every app image
                       built inside prod (tagged there as `debian-lab:bookworm`)

The tag is a hash of the recipe (suite, mirror, package list, cleanup version), so a
second run finds the image and skips the build; changing the recipe rebuilds it.
Downloaded .debs are kept in the cache directory ($VKBACKUP_LAB_CACHE, default
~/.cache/vkbackup-lab) so a rebuild after a recipe change does not download again.

Interface:
    IMAGES: dict[str, ImageSpec]            "host" and "app"
    ImageSpec.tag -> str                    e.g. "vklab-host:3f2a9c1d0b7e"
    ensure_images(build_dir, log_dir, cache_dir) -> dict[str, str]   kind -> tag
    image_exists(tag) -> bool
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.sh import LabError, docker, docker_bin, log

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
RECIPE_VERSION = 3  # bump when the cleanup or the image config below changes

COMMON = ("python3", "tar", "gzip", "zstd", "procps", "iproute2", "curl", "ca-certificates")

SSHD_CONF = """\
# vkbackup lab: root by key only
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
MaxSessions 32
MaxStartups 32:30:100
ClientAliveInterval 30
"""


@dataclass(frozen=True)
class ImageSpec:
    """One base image: its name, Debian packages and what is removed after install."""

    name: str
    packages: tuple[str, ...]
    remove: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)

    @property
    def digest(self) -> str:
        recipe = {
            "v": RECIPE_VERSION,
            "suite": SUITE,
            "mirror": MIRROR,
            "packages": sorted(self.packages),
            "remove": list(self.remove),
            "files": self.files,
            "env": list(self.env),
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"vklab-{self.name}:{self.digest}"


_CLEAN = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "etc/ssh/ssh_host_*",
    "dev/*",
)

IMAGES: dict[str, ImageSpec] = {
    "host": ImageSpec(
        name="host",
        packages=(*COMMON, "openssh-server", "docker.io", "docker-compose", "iptables", "less"),
        remove=_CLEAN,
        files={"etc/ssh/sshd_config.d/lab.conf": SSHD_CONF},
    ),
    "app": ImageSpec(
        name="app",
        packages=(*COMMON, "postgresql-15", "redis-server", "caddy"),
        remove=(
            *_CLEAN,
            # the JIT provider (and LLVM) is optional: PostgreSQL runs without it
            "usr/lib/x86_64-linux-gnu/libLLVM-14.so*",
            "usr/lib/postgresql/15/lib/llvmjit*",
            "usr/lib/postgresql/15/lib/bitcode",
            # the cluster the package's postinst created: the lab image runs its own initdb
            "var/lib/postgresql/15",
            "etc/postgresql/15",
        ),
        env=(
            "PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
        ),
    ),
}


def image_exists(tag: str) -> bool:
    """Return True when the outer engine has *tag*."""
    return docker("image", "inspect", tag, check=False).returncode == 0


def _build(spec: ImageSpec, build_dir: Path, log_dir: Path, cache_dir: Path) -> None:
    build_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    debs = cache_dir / f"debs-{spec.name}"
    debs.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"rootfs-{spec.name}-", dir=build_dir))
    logfile = log_dir / f"debootstrap-{spec.name}.log"
    t0 = time.monotonic()
    try:
        with logfile.open("wb") as lf:
            cp = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--cache-dir={debs}",
                    f"--include={','.join(spec.packages)}",
                    SUITE,
                    str(root),
                    MIRROR,
                ],
                stdout=lf,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if cp.returncode != 0:
            tail = logfile.read_bytes()[-1500:].decode("utf-8", "replace")
            raise LabError(f"debootstrap of {spec.name} failed (log {logfile}):\n{tail}")
        for pattern in spec.remove:
            for p in root.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        for rel, text in spec.files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        log(f"debootstrap {spec.name}: {time.monotonic() - t0:.0f}s; importing as {spec.tag}")
        changes: list[str] = []
        for e in spec.env:
            changes += ["--change", f"ENV {e}"]
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-c", "."],
            stdout=subprocess.PIPE,
        )
        assert tar.stdout is not None
        imp_p = subprocess.Popen(
            [docker_bin(), "import", *changes, "-", spec.tag],
            stdin=tar.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        tar.stdout.close()
        _, err = imp_p.communicate()
        if tar.wait() != 0 or imp_p.returncode != 0:
            raise LabError(f"docker import of {spec.tag} failed: {err.decode()[-1000:]}")
        log(f"image {spec.tag} ready after {time.monotonic() - t0:.0f}s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _drop_old_tags(spec: ImageSpec) -> None:
    cp = docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"vklab-{spec.name}", check=False)
    for line in cp.stdout.decode().split():
        if line != spec.tag:
            docker("rmi", line, check=False)


def ensure_images(build_dir: Path, log_dir: Path, cache_dir: Path) -> dict[str, str]:
    """Build the missing base images (in parallel) and return kind -> tag."""
    missing = [s for s in IMAGES.values() if not image_exists(s.tag)]
    if missing:
        if shutil.which("debootstrap") is None and not os.access("/usr/sbin/debootstrap", os.X_OK):
            raise LabError("debootstrap is not installed (apt-get install debootstrap)")
        log(f"building base images {', '.join(s.tag for s in missing)} (debootstrap, ~2 min)")
        errors: list[BaseException] = []

        def work(spec: ImageSpec) -> None:
            for attempt in (1, 2):  # one retry: a mirror hiccup should not fail CI
                try:
                    _build(spec, build_dir, log_dir, cache_dir)
                    _drop_old_tags(spec)
                    return
                except LabError as e:
                    if attempt == 2:
                        errors.append(e)
                    else:
                        log(f"building {spec.tag} failed, retrying once: {str(e)[:300]}")
                except BaseException as e:
                    errors.append(e)
                    return

        threads = [threading.Thread(target=work, args=(s,)) for s in missing]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    return {k: s.tag for k, s in IMAGES.items()}
