"""A typed handle on an up lab, for tests and benchmarks (the e2e `lab` fixture returns one).

Interface:
    get_lab(bring_up=True) -> Lab
        Use the lab recorded in <lab>/state.json when it is up; else bring it up
        (`tests.lab.lab.up`), unless bring_up is False (then LabError).
    lab_unavailable() -> str | None
        Why this machine cannot run the lab at all (no Docker, not root, missing
        tools), or None.
    Lab
        paths: LabPaths; state: dict (state.json)
        root, key_file, known_hosts, identity, recipient, config_path, s3_config_path,
        storage_dir: Path / str
        hosts: dict[str, LabHost]            "prod", "fresh"
        secrets: dict[str, dict[str, str]]   project -> .env secret name -> value
        secret_values: list[str]             every secret value (to scan logs and storage)
        row_counts: dict[str, int]           "schema.table" -> seeded rows (prod)
        scale: float; database: str; containers, volumes: dict[str, str]; images: list[str]
        s3: S3Info (endpoint, access_key, secret_key, region, bucket, locked_bucket)
        ssh_argv(host, known_hosts=None) -> list[str]        OpenSSH, strict host keys
        ssh(host, cmd, *, input=None, check=True, timeout=120) -> CompletedProcess[str]
        ssh_bytes(host, cmd, ...) -> CompletedProcess[bytes]
        psql(host, sql, *, database=..., user="postgres", container=...) -> str
        table_row_counts(host) -> dict[str, int]; table_checksums(host) -> dict[str, str]
        health(host) -> dict[str, int]       URL -> HTTP status (curl on the host)
        running_containers(host) -> list[str]
        reset_fresh() -> float               recreate the fresh host empty
        vkbackup(*args, s3=False, check=False, timeout=1800) -> CompletedProcess[str]
        s3_client() -> boto3 S3 client
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab import database, prod
from tests.lab.paths import HOSTS, LabPaths, lab_paths
from tests.lab.sh import LabError, docker_available


@dataclass(frozen=True)
class LabHost:
    """One lab host as the tests see it."""

    name: str
    container: str
    address: str
    port: int
    user: str
    hostname: str


@dataclass(frozen=True)
class S3Info:
    """The lab's S3 endpoint and credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    locked_bucket: str


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


class Lab:
    """The running lab: paths, keys, configs, expected data, and ways to reach the hosts."""

    def __init__(self, paths: LabPaths, state: dict[str, Any], secrets_doc: dict[str, Any]):
        self.paths = paths
        self.state = state
        self._secrets_doc = secrets_doc
        self.root: Path = paths.root
        self.key_file: Path = paths.key_file
        self.known_hosts: Path = paths.known_hosts
        self.identity: Path = paths.identity
        self.recipient: str = state["recipient"]
        self.config_path: Path = Path(state["config"])
        self.s3_config_path: Path = Path(state["s3_config"])
        self.storage_dir: Path = Path(state["storage_dir"])
        self.hosts: dict[str, LabHost] = {
            name: LabHost(
                name=name,
                container=h["container"],
                address=h["address"],
                port=int(h["port"]),
                user=h["user"],
                hostname=h["hostname"],
            )
            for name, h in state["hosts"].items()
        }
        p = state["prod"]
        self.secrets: dict[str, dict[str, str]] = secrets_doc["env"]
        self.secret_values: list[str] = list(secrets_doc["values"])
        self.row_counts: dict[str, int] = {k: int(v) for k, v in p["row_counts"].items()}
        self.scale: float = float(p["scale"])
        self.database: str = p["database"]
        self.containers: dict[str, str] = dict(p["containers"])
        self.volumes: dict[str, str] = dict(p["volumes"])
        self.images: list[str] = list(p["images"])
        self.public_names: tuple[str, ...] = prod.PUBLIC_NAMES  # api, agent, ... .visualkit.live
        self.storage_summary: dict[str, Any] = dict(p.get("storage", {}))
        s3 = state["s3"]
        self.s3 = S3Info(
            endpoint=s3["endpoint"],
            access_key=secrets_doc["s3"]["access_key"],
            secret_key=secrets_doc["s3"]["secret_key"],
            region=s3["region"],
            bucket=s3["bucket"],
            locked_bucket=s3["locked_bucket"],
        )

    # -- reaching the hosts -------------------------------------------------------------
    def _spec(self, host: str) -> LabHost:
        try:
            return self.hosts[host]
        except KeyError:
            raise LabError(f"no lab host {host!r} (have {', '.join(self.hosts)})") from None

    def ssh_argv(self, host: str, known_hosts: Path | None = None) -> list[str]:
        """OpenSSH argv (no command) for *host*, lab key, strict host-key checking."""
        h = self._spec(host)
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key_file),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(h.port),
            f"{h.user}@{h.address}",
        ]

    def ssh_bytes(
        self,
        host: str,
        cmd: str,
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 120,
        known_hosts: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run shell *cmd* on *host* over SSH; bytes in and out."""
        cp = subprocess.run(
            [*self.ssh_argv(host, known_hosts), cmd],
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if check and cp.returncode != 0:
            raise LabError(
                f"ssh {host} {cmd[:200]!r}: exit {cp.returncode}\n"
                f"stderr: {_tail(cp.stderr.decode('utf-8', 'replace'))}"
            )
        return cp

    def ssh(
        self,
        host: str,
        cmd: str,
        *,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = 120,
        known_hosts: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run shell *cmd* on *host* over SSH; text (UTF-8, errors replaced) out."""
        data = input.encode() if isinstance(input, str) else input
        cp = self.ssh_bytes(
            host, cmd, input=data, check=check, timeout=timeout, known_hosts=known_hosts
        )
        return subprocess.CompletedProcess(
            cp.args,
            cp.returncode,
            cp.stdout.decode("utf-8", "replace"),
            cp.stderr.decode("utf-8", "replace"),
        )

    def psql(
        self,
        host: str,
        sql: str,
        *,
        database_name: str | None = None,
        user: str = "postgres",
        container: str = "chatwoot-postgres-1",
        timeout: float = 600,
    ) -> str:
        """Run *sql* with psql in *container* on *host* (docker exec over SSH); unaligned output."""
        db = database_name or self.database
        cmd = f"docker exec -i {container} psql -X -q -A -t -v ON_ERROR_STOP=1 -U {user} -d {db}"
        return self.ssh(host, cmd, input=sql, timeout=timeout).stdout.strip()

    def table_row_counts(self, host: str) -> dict[str, int]:
        """Return "schema.table" -> rows, counted now on *host*."""
        out = self.psql(host, database.COUNT_SQL)
        return {k: int(v) for k, v in (line.rsplit("|", 1) for line in out.splitlines())}

    def table_checksums(self, host: str) -> dict[str, str]:
        """Return "schema.table" -> md5 of all rows (tables and materialized views) on *host*."""
        out = self.psql(host, database.CHECKSUM_SQL)
        pairs = (line.rsplit("|", 1) for line in out.splitlines())
        return {name: digest for name, digest in pairs}

    def health(self, host: str = "prod") -> dict[str, int]:
        """Return URL -> HTTP status of every VisualKit health URL, curl run on *host*."""
        cp = self.ssh(host, prod.health_script(), check=False)
        return prod.parse_health(cp.stdout)

    def running_containers(self, host: str) -> list[str]:
        """Names of the running containers of *host*'s Docker Engine (a paused one
        is not running: `docker ps` alone would list it)."""
        out = self.ssh(host, "docker ps --filter status=running --format '{{.Names}}'").stdout
        return sorted(out.split())

    def reset_fresh(self) -> float:
        """Recreate the fresh host: empty engine, no /opt, same host keys. Return seconds."""
        from tests.lab import lab

        return lab.reset_fresh()

    # -- the tool and the storage ---------------------------------------------------------
    def env(self, *, s3: bool = False) -> dict[str, str]:
        """Environment for running vkbackup against the lab config."""
        env = dict(os.environ)
        env["VKBACKUP_CONFIG"] = str(self.s3_config_path if s3 else self.config_path)
        return env

    def vkbackup(
        self, *args: str, s3: bool = False, check: bool = False, timeout: float = 1800
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m vkbackup --config <lab config> ARGS`; text output."""
        config = self.s3_config_path if s3 else self.config_path
        argv = [sys.executable, "-m", "vkbackup", "--config", str(config), *args]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and cp.returncode != 0:
            raise LabError(f"vkbackup {' '.join(args)}: exit {cp.returncode}\n{_tail(cp.stderr)}")
        return cp

    def s3_client(self) -> Any:
        """A boto3 S3 client for the lab's SeaweedFS (path style, checksums when required)."""
        import boto3
        import botocore.config

        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            aws_access_key_id=self.s3.access_key,
            aws_secret_access_key=self.s3.secret_key,
            region_name=self.s3.region,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


def lab_unavailable() -> str | None:
    """Return why the lab cannot run on this machine, or None when it can."""
    reason = docker_available()
    if reason:
        return reason
    for tool in ("debootstrap", "ssh", "ssh-keygen", "age-keygen"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed"
    return None


def _load(paths: LabPaths) -> Lab | None:
    try:
        state = json.loads(paths.state.read_text())
        secrets_doc = json.loads(paths.secrets.read_text())
        if not state.get("prod", {}).get("complete"):
            return None
        return Lab(paths, state, secrets_doc)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def get_lab(bring_up: bool = True) -> Lab:
    """Return the up lab; bring it up first when needed (unless *bring_up* is False)."""
    from tests.lab import lab

    paths = lab_paths()
    loaded = _load(paths)
    if loaded is not None and lab.status().get("up"):
        return loaded
    if not bring_up:
        raise LabError("the lab is not up: run `python -m tests.lab up`")
    lab.up()
    loaded = _load(paths)
    if loaded is None:
        raise LabError(f"lab up finished but {paths.state} is incomplete")
    return loaded


__all__ = ["HOSTS", "Lab", "LabError", "LabHost", "S3Info", "get_lab", "lab_unavailable"]
