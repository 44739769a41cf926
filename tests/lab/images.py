"""Base images for the lab, built from Debian with debootstrap and cached in the outer engine.

Three images, built in parallel on a cold machine:
    vklab-server:<hash>  Debian 13 (trixie) as a VPS runs it: systemd as PID 1, sshd,
                         Docker Engine 26 with Compose v2, Caddy and UFW from Debian's
                         packages. The production host.
    vklab-bare:<hash>    what a new server is: Debian 13 with systemd and sshd, and no
                         Docker, no Caddy, no UFW. The host restores go to.
    vklab-app:<hash>     Debian 12 with PostgreSQL 15, Redis, Caddy, python3: the base of
                         every app image built inside prod (`debian-lab:bookworm`)

Both hosts get their packages from the lab's own mirror (`mirror.py`, made from the
.debs debootstrap downloaded for the server image), as a Hetzner server uses a nearby
mirror: a restore installs Docker, Caddy and UFW without reaching the internet.

The tag is a hash of the recipe (suite, mirror, package list, cleanup version), so a
second run finds the image and skips the build; changing the recipe rebuilds it.
Downloaded .debs are kept in the cache directory ($VKBACKUP_LAB_CACHE, default
~/.cache/vkbackup-lab) so a rebuild after a recipe change does not download again.
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

MIRROR = "http://deb.debian.org/debian"
RECIPE_VERSION = 4  # bump when the cleanup or the image config below changes
LAB_MIRROR = "http://vklab-mirror"  # the lab's apt mirror, as the hosts reach it

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
    suite: str = "bookworm"
    remove: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    chroot: tuple[str, ...] = ()  # shell commands run in the new root before import

    @property
    def digest(self) -> str:
        recipe = {
            "v": RECIPE_VERSION,
            "suite": self.suite,
            "chroot": list(self.chroot),
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

# Boot-time set-up of a lab host, run by systemd before sshd and Docker: the pinned
# host keys and the lab's authorized key come from /lab (a read-only mount).
LAB_INIT_UNIT = """\
[Unit]
Description=vkbackup lab: host keys and authorized key from /lab
DefaultDependencies=no
After=local-fs.target
Before=ssh.service docker.service sysinit.target
ConditionPathExists=/lab/init.sh

[Service]
Type=oneshot
ExecStart=/bin/bash /lab/init.sh
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
"""

# Docker inside a lab host (a container itself): IPv6 cannot be disabled on the nested
# containers' interfaces, and each host's containers get their own cgroup parent so
# `down` can remove what they leave. A lab-only accommodation a real server does not
# need; it is laid into both images in advance (the bare host gets Docker later, from
# the restore), and the host-specific part comes from /lab/docker.env.
DOCKER_DROPIN = """\
[Service]
Environment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1
EnvironmentFile=-/lab/docker.env
ExecStart=
ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $VKLAB_DOCKERD_OPTS
"""  # noqa: E501

DEBIAN_SOURCES = f"""\
# vkbackup lab: the lab's own Debian mirror (a copy of the .debs the server image uses)
Types: deb
URIs: {LAB_MIRROR}/debian
Suites: trixie
Components: main
Trusted: yes
"""

SYSTEMD_HOST = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "cron", "less", "kmod",
)  # fmt: skip
_HOST_FILES = {
    "etc/ssh/sshd_config.d/lab.conf": SSHD_CONF,
    "etc/systemd/system/vklab-init.service": LAB_INIT_UNIT,
    "etc/systemd/system/docker.service.d/vklab.conf": DOCKER_DROPIN,
    "etc/apt/sources.list.d/debian.sources": DEBIAN_SOURCES,
    "etc/apt/sources.list": "",
}
_HOST_CHROOT = (
    "systemctl enable vklab-init.service",
    # no console in a container: getty would respawn forever
    "systemctl mask getty@tty1.service console-getty.service systemd-modules-load.service",
)

IMAGES: dict[str, ImageSpec] = {
    "server": ImageSpec(
        name="server",
        suite="trixie",
        packages=(
            *COMMON,
            *SYSTEMD_HOST,
            "docker.io",
            "docker-cli",
            "docker-compose",
            "caddy",
            "ufw",
            "iptables",
        ),
        remove=_CLEAN,
        files=_HOST_FILES,
        chroot=_HOST_CHROOT,
    ),
    "bare": ImageSpec(
        name="bare",
        suite="trixie",
        packages=(*COMMON, *SYSTEMD_HOST),
        remove=_CLEAN,
        files=_HOST_FILES,
        chroot=_HOST_CHROOT,
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
                    spec.suite,
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
        for command in spec.chroot:
            cp = subprocess.run(
                ["chroot", str(root), "/bin/sh", "-c", command],
                capture_output=True,
                check=False,
            )
            if cp.returncode != 0:
                raise LabError(
                    f"{spec.name}: `{command}` in the new root failed: "
                    f"{cp.stderr.decode(errors='replace')[-800:]}"
                )
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
