"""Where the lab keeps its state, and the fixed names, ports and addresses it uses.

Interface:
    LabPaths(repo, root, cache)       every file the lab writes, as properties
    lab_paths() -> LabPaths           root = $VKBACKUP_LAB_DIR or <repo>/.lab;
                                      cache = $VKBACKUP_LAB_CACHE or ~/.cache/vkbackup-lab
    HostSpec(name, container, port, hostname) and HOSTS: {"prod": ..., "fresh": ...}
    NETWORK, LABEL, S3_PORT, BUCKET, LOCKED_BUCKET, DOMAIN
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NETWORK = "vklab"
LABEL = "vklab"  # every outer container, volume and network of the lab carries label vklab=1
S3_PORT = 8333
BUCKET = "vkbackup"
LOCKED_BUCKET = "vkbackup-locked"
DOMAIN = "visualkit.live"


@dataclass(frozen=True)
class HostSpec:
    """A lab host: an outer Docker-in-Docker container reachable over SSH on 127.0.0.1."""

    name: str
    container: str
    port: int
    hostname: str
    image: str  # the base image kind: "server" (prod) or "bare" (a new server)

    @property
    def docker_volume(self) -> str:
        """The outer volume that holds this host's /var/lib/docker."""
        return f"{self.container}-docker"

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"


HOSTS: dict[str, HostSpec] = {
    "prod": HostSpec(
        name="prod", container="vklab-prod", port=2222, hostname="prod", image="server"
    ),
    "fresh": HostSpec(
        name="fresh", container="vklab-fresh", port=2223, hostname="fresh", image="bare"
    ),
}


@dataclass(frozen=True)
class LabPaths:
    """Files and directories of one lab instance."""

    repo: Path
    root: Path
    cache: Path

    @property
    def key_file(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def identity(self) -> Path:
        return self.root / "identity.txt"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing_ed25519"

    @property
    def config(self) -> Path:
        return self.root / "vkbackup.toml"

    @property
    def s3_config(self) -> Path:
        return self.root / "vkbackup-s3.toml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def s3_data(self) -> Path:
        return self.root / "s3"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def build(self) -> Path:
        return self.root / "build"

    def host_dir(self, name: str) -> Path:
        """Mounted read-only at /lab in the host container: init script, keys."""
        return self.root / "hosts" / name


def lab_paths() -> LabPaths:
    """Return the paths of this checkout's lab (honouring the environment overrides)."""
    repo = Path(__file__).resolve().parents[2]
    root = Path(os.environ.get("VKBACKUP_LAB_DIR") or repo / ".lab").resolve()
    cache = Path(
        os.environ.get("VKBACKUP_LAB_CACHE") or Path.home() / ".cache" / "vkbackup-lab"
    ).resolve()
    return LabPaths(repo=repo, root=root, cache=cache)
