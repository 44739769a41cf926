"""The lab's hosts: containers that boot like a VPS, with systemd as PID 1, sshd, and
(on prod) Docker Engine, Caddy and UFW as systemd services.

No --privileged (it fails on these machines); the flags are the ones LAB-FACTS measured
for Docker-in-Docker, plus a tmpfs /run and /run/lock and /sbin/init for systemd.
Host keys are generated here, once per lab, mounted read-only at /lab/hostkeys and
pinned in <lab>/known_hosts as `[127.0.0.1]:PORT TYPE KEY`, so recreating a host
(reset-fresh) keeps its identity and strict host-key checking keeps working.

Interface:
    ensure_keys(paths) -> None        lab SSH key, age identity, host keys, authorized_keys
    write_known_hosts(paths) -> None
    ensure_network() -> None
    ensure_host(spec, image, paths) -> bool   True when the container was (re)created
    wait_ready(spec, paths, timeout=90) -> None   inner dockerd answers, ssh works
    remove_host(spec) -> None          container, its /var/lib/docker volume, leftover cgroups
    host_running(spec) -> bool
    ssh_argv(paths, spec, known_hosts=None) -> list[str]   OpenSSH client, strict checking
    ssh(paths, spec, command, *, input=None, check=True, timeout=120) -> CompletedProcess[bytes]
    age_recipient(paths) -> str
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

from tests.lab.paths import HOSTS, LABEL, NETWORK, HostSpec, LabPaths
from tests.lab.sh import LabError, docker, log, out, run, wait_for

FILES = Path(__file__).resolve().parent / "files"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")

DIND_FLAGS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--device-cgroup-rule",
    "a *:* rwm",
    "--cgroupns",
    "host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "--stop-signal",
    "SIGRTMIN+3",
    "--env",
    "container=docker",
)


def _keygen(path: Path, typ: str, comment: str) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["ssh-keygen", "-q", "-t", typ, "-N", "", "-C", comment, "-f", str(path)]
    if typ == "rsa":
        args[4:4] = ["-b", "3072"]
    run(args)
    path.chmod(0o600)


def ensure_keys(paths: LabPaths) -> None:
    """Create the lab's client key, signing key, age identity and per-host host keys
    (kept if present)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    _keygen(paths.key_file, "ed25519", "vkbackup-lab")
    # the backup machine's signing key: a stock OpenSSH key ([signing] key)
    _keygen(paths.signing_key, "ed25519", "vkbackup-lab-signing")
    if not paths.identity.exists():
        run(["age-keygen", "-o", str(paths.identity)])
        paths.identity.chmod(0o600)
    pub = paths.key_file.with_suffix(".pub").read_text()
    for spec in HOSTS.values():
        d = paths.host_dir(spec.name)
        (d / "hostkeys").mkdir(parents=True, exist_ok=True)
        for typ in HOST_KEY_TYPES:
            _keygen(d / "hostkeys" / f"ssh_host_{typ}_key", typ, f"root@{spec.hostname}")
        (d / "authorized_keys").write_text(pub)
        shutil.copyfile(FILES / "host-init.sh", d / "init.sh")
        # read by the docker.service drop-in both images carry (see images.DOCKER_DROPIN)
        (d / "docker.env").write_text(f"VKLAB_DOCKERD_OPTS=--cgroup-parent=/{spec.container}\n")
    write_known_hosts(paths)


def age_recipient(paths: LabPaths) -> str:
    """Return the public key (age1...) of the lab identity."""
    return out(["age-keygen", "-y", str(paths.identity)])


def write_known_hosts(paths: LabPaths) -> None:
    """Pin every host key of every lab host as `[127.0.0.1]:PORT TYPE KEY`."""
    lines = []
    for spec in HOSTS.values():
        for typ in HOST_KEY_TYPES:
            pub = paths.host_dir(spec.name) / "hostkeys" / f"ssh_host_{typ}_key.pub"
            keytype, key = pub.read_text().split()[:2]
            lines.append(f"{spec.known_hosts_name} {keytype} {key}\n")
    paths.known_hosts.write_text("".join(lines))


def ensure_network() -> None:
    """Create the outer bridge network the hosts live on."""
    if docker("network", "inspect", NETWORK, check=False).returncode != 0:
        docker("network", "create", "--label", f"{LABEL}=1", NETWORK)


def _inspect(container: str) -> dict[str, object] | None:
    cp = docker("container", "inspect", container, check=False)
    if cp.returncode != 0:
        return None
    data: list[dict[str, object]] = json.loads(cp.stdout)
    return data[0] if data else None


def _owner(info: dict[str, object]) -> str | None:
    config = info.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    owner = labels.get(f"{LABEL}.dir") if isinstance(labels, dict) else None
    return owner if isinstance(owner, str) else None


def host_running(spec: HostSpec) -> bool:
    """Return True when the host's container exists and runs."""
    info = _inspect(spec.container)
    if info is None:
        return False
    state = info.get("State")
    return isinstance(state, dict) and bool(state.get("Running"))


def ensure_host(spec: HostSpec, image: str, paths: LabPaths) -> bool:
    """Start the host's container, creating it when missing. Return True when created."""
    info = _inspect(spec.container)
    if info is not None and _owner(info) != str(paths.root):
        # left by another checkout's lab (other keys, other /lab mount): not ours to reuse
        log(f"{spec.container} belongs to the lab in {_owner(info)}: recreating it")
        remove_host(spec)
        info = None
    if info is not None:
        state = info.get("State")
        if isinstance(state, dict) and not state.get("Running"):
            log(f"starting stopped host {spec.container}")
            docker("start", spec.container)
        return False
    log(f"creating host {spec.container} (ssh 127.0.0.1:{spec.port})")
    docker("volume", "create", "--label", f"{LABEL}=1", spec.docker_volume)
    docker(
        "run",
        "-d",
        "--name",
        spec.container,
        "--hostname",
        spec.hostname,
        "--network",
        NETWORK,
        "--label",
        f"{LABEL}=1",
        "--label",
        f"{LABEL}.host={spec.name}",
        "--label",
        f"{LABEL}.dir={paths.root}",
        "--stop-timeout",
        "60",
        *DIND_FLAGS,
        "-v",
        f"{spec.docker_volume}:/var/lib/docker",
        "-v",
        f"{paths.host_dir(spec.name)}:/lab:ro",
        "-p",
        f"127.0.0.1:{spec.port}:22",
        image,
        "/sbin/init",
    )
    return True


def ssh_argv(paths: LabPaths, spec: HostSpec, known_hosts: Path | None = None) -> list[str]:
    """OpenSSH client argv for *spec* with the lab key and strict host-key checking."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(paths.key_file),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts or paths.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(spec.port),
        "root@127.0.0.1",
    ]


def ssh(
    paths: LabPaths,
    spec: HostSpec,
    command: str,
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[bytes]:
    """Run a shell *command* on the host over real SSH."""
    return run([*ssh_argv(paths, spec), command], input=input, check=check, timeout=timeout)


def wait_ready(spec: HostSpec, paths: LabPaths, timeout: float = 90) -> None:
    """Wait until the host's systemd finished booting, sshd lets the lab key in, and
    (on a host with Docker) its own dockerd answers."""

    def booted() -> bool:
        cp = docker("exec", spec.container, "systemctl", "is-system-running", check=False)
        return cp.stdout.decode().strip() in ("running", "degraded")

    def engine() -> bool:
        cp = docker("exec", spec.container, "docker", "info", "--format", "{{.ID}}", check=False)
        return cp.returncode == 0

    def sshd() -> bool:
        return ssh(paths, spec, "true", check=False, timeout=15).returncode == 0

    wait_for(f"{spec.container}: systemd booted", booted, timeout)
    if spec.image == "server":
        wait_for(f"{spec.container}: inner dockerd", engine, timeout)
    wait_for(f"{spec.container}: sshd on 127.0.0.1:{spec.port}", sshd, timeout)


def _leftover_cgroups(spec: HostSpec) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    found = [p for p in root.glob(f"*/{spec.container}") if p.is_dir()]
    if (root / spec.container).is_dir():
        found.append(root / spec.container)
    return found


def remove_host(spec: HostSpec) -> None:
    """Remove the host container, its Docker volume and the cgroups its engine left."""
    if _inspect(spec.container) is not None:
        log(f"removing host {spec.container}")
        docker("rm", "-f", "-v", spec.container)
    if docker("volume", "inspect", spec.docker_volume, check=False).returncode == 0:
        docker("volume", "rm", "-f", spec.docker_volume)
    for cg in _leftover_cgroups(spec):
        # empty cgroups of the inner containers: remove children first
        for sub in sorted(cg.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        try:
            cg.rmdir()
        except OSError as e:
            raise LabError(f"cannot remove leftover cgroup {cg}: {e}") from e
