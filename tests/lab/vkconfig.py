"""Write the vkbackup configs that point at the lab.

Two files, same hosts and sources, same signing key, different storage:
    <lab>/vkbackup.toml      local directory storage in <lab>/storage
    <lab>/vkbackup-s3.toml   the lab's SeaweedFS (bucket `vkbackup`), holds its keys: mode 0600

Interface:
    render(paths, recipient, storage) -> str     storage: a TOML [storage] body as a dict
    write_configs(paths, recipient, s3) -> tuple[Path, Path]
        s3: {"endpoint": ..., "access_key": ..., "secret_key": ..., "region": ...} or None
        (without S3 the second file is not written)
    SOURCES: the prod host's sources, as (table) dicts in config order
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.lab import database
from tests.lab.paths import BUCKET, HOSTS, LabPaths
from tests.lab.prod import IMAGES

SOURCES: list[dict[str, object]] = [
    {
        "type": "postgres",
        "name": "chatwoot-db",
        "container": "chatwoot-postgres-1",
        "database": database.DATABASE,
        "user": "postgres",
    },
    {
        "type": "files",
        "name": "secrets",
        "paths": [
            "/opt/platform-api/.env",
            "/opt/vk-agent/.env",
            "/opt/chatwoot/.env",
            "/opt/janus/.env",
            "/opt/janus/config/*.jcfg",
        ],
        "secret": True,
    },
    {
        "type": "files",
        "name": "config",
        # the CDN's static files are served by Caddy from the host's disk
        "paths": ["/etc/caddy/Caddyfile", "/opt/*/docker-compose.yml", "/var/www/cdn"],
    },
    {
        "type": "docker-volume",
        "name": "chatwoot-storage",
        "volume": "chatwoot_storage_data",
        "stop": ["chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1"],
    },
    {
        "type": "docker-volume",
        "name": "redis-data",
        "volume": "chatwoot_redis_data",
        # a stopped redis has written its dump: the copy is consistent (paused, it
        # would hold its last background save: README, "quiesce")
        "stop": ["chatwoot-redis-1"],
        "quiesce": "stop",
        "stop_timeout": 30,
    },
    {"type": "docker-image", "name": "images", "images": list(IMAGES)},
    # the server itself: packages, units, /etc, users, firewall, Caddy's certificates
    {"type": "host", "name": "host"},
]


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _table(header: str, body: dict[str, object]) -> str:
    lines = [header] + [f"{k} = {_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def render(paths: LabPaths, recipient: str, storage: dict[str, object]) -> str:
    """Return the TOML text of a lab config with the given [storage] table."""
    parts = [
        "# vkbackup config for the test lab. Written by `python -m tests.lab up`; do not edit.\n",
        _table("[storage]", storage),
        _table(
            "[encryption]",
            {"recipients": [recipient], "identity": str(paths.identity)},
        ),
        _table("[signing]", {"key": str(paths.signing_key)}),
        _table("[snapshot]", {"parallel": 2}),
        _table("[retention]", {"keep_last": 3, "keep_daily": 7}),
    ]
    for name, spec in HOSTS.items():
        parts.append(
            _table(
                f"[hosts.{name}]",
                {
                    "address": "127.0.0.1",
                    "port": spec.port,
                    "user": "root",
                    "key_file": str(paths.key_file),
                    "known_hosts": str(paths.known_hosts),
                    "connect_timeout": 15,
                },
            )
        )
        if name == "prod":
            for src in SOURCES:
                parts.append(_table(f"[[hosts.{name}.sources]]", src))
    return "\n".join(parts)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def write_configs(
    paths: LabPaths, recipient: str, s3: dict[str, str] | None
) -> tuple[Path, Path | None]:
    """Write <lab>/vkbackup.toml (local storage) and, given S3, <lab>/vkbackup-s3.toml."""
    paths.storage.mkdir(parents=True, exist_ok=True)
    _write_private(
        paths.config, render(paths, recipient, {"type": "local", "path": str(paths.storage)})
    )
    if s3 is None:
        paths.s3_config.unlink(missing_ok=True)
        return paths.config, None
    _write_private(
        paths.s3_config,
        render(
            paths,
            recipient,
            {
                "type": "s3",
                "bucket": BUCKET,
                "prefix": "lab",
                "endpoint_url": s3["endpoint"],
                "region": s3["region"],
                "addressing_style": "path",
                "access_key_id": s3["access_key"],
                "secret_access_key": s3["secret_key"],
            },
        ),
    )
    return paths.config, paths.s3_config
