"""`vkbackup verify --deep --on HOST`: restore each PostgreSQL dump of a snapshot into a
throwaway server on a host you name, and compare every table's row count with the
counts recorded in the same MVCC snapshot as the dump.

The throwaway server is a new container from the image the database ran at
snapshot time (recorded in the manifest), with no network, a random password, and
an anonymous data volume; it is removed afterwards whatever happens. Nothing is
written to the host's existing containers or volumes.

Interface:
    make_deep_check(host, connect) -> DeepCheck      (the hook verify.verify_snapshot calls)
    deep_check_source(t, storage, identities, manifest, source, meta) -> list[BadObject]
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from vkbackup.actions.restore import open_object, read_object
from vkbackup.actions.verify import BadObject, DeepCheck
from vkbackup.config.model import HostConfig
from vkbackup.crypto import Identity
from vkbackup.errors import VkError
from vkbackup.logs import get_logger, register_secret
from vkbackup.manifest import Manifest, open_private
from vkbackup.sources import postgres
from vkbackup.storage.base import Storage
from vkbackup.transport.base import Transport, pipeline_argv

log = get_logger("verify.deep")


def deep_check_source(
    t: Transport,
    storage: Storage,
    identities: Sequence[Identity],
    manifest: Manifest,
    source: str,
    meta: dict[str, Any],
) -> list[BadObject]:
    objs = {o.role: o for o in manifest.objects if o.source == source}
    dump = objs.get("pg-dump")
    if dump is None:
        return [BadObject("", source, "deep", f"source {source}: no dump object to restore")]
    server = meta.get("server") or {}
    image = str(server.get("image") or "")
    user = str(meta.get("user") or "postgres")
    want = {k: int(v) for k, v in (meta.get("row_counts") or {}).items()}
    if not image:
        return [BadObject(dump.key, source, "deep", f"{dump.key}: no server image recorded")]
    name = f"vkbackup-verify-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    register_secret(password)
    q = shlex.quote
    try:
        t.run(
            pipeline_argv(
                f"docker run -d --name {q(name)} --network none "
                f"-e POSTGRES_PASSWORD={q(password)} -e POSTGRES_USER={q(user)} "
                f"{q(image)} >/dev/null"
            )
        )
        t.run(pipeline_argv(postgres.wait_ready_script(name, user, 120)))
        num = int(t.run(postgres.server_major_argv(name, user)).stdout.decode().strip())
        major = num // 10000 if num >= 100000 else num // 100
        if server.get("major") and int(server["major"]) != major:
            return [
                BadObject(
                    dump.key, source, "deep",
                    f"{dump.key}: image {image} now runs PostgreSQL {major}, "
                    f"the dump is from {server['major']}",
                )
            ]  # fmt: skip
        if "pg-globals" in objs:
            sql = postgres.prepare_globals(
                read_object(storage, objs["pg-globals"], identities), user
            )
            t.run(postgres.restore_globals_argv(name, user), input=sql)
        restore = f"docker exec -i {q(name)} pg_restore -U {q(user)} -d postgres -C --exit-on-error"
        t.feed(pipeline_argv(restore), open_object(storage, dump, identities))
        database = str(meta.get("database"))
        res = t.run(postgres.psql_argv(name, user, database, postgres.COUNTS_SQL))
        got = postgres.parse_counts(res.stdout.decode())
        diff = sorted(
            f"{k}: recorded {want.get(k)}, restored {got.get(k)}"
            for k in set(want) | set(got)
            if want.get(k) != got.get(k)
        )
        if diff:
            return [
                BadObject(
                    dump.key, source, "deep",
                    f"{dump.key}: restored into a throwaway server, row counts differ: "
                    + "; ".join(diff[:10]),
                )
            ]  # fmt: skip
        log.info(
            "deep: %s restored on %s, %d tables, %d rows match",
            dump.key, t.name, len(want), sum(want.values()),
        )  # fmt: skip
        return []
    except VkError as e:
        return [BadObject(dump.key, source, "deep", f"{dump.key}: deep restore failed: {e}")]
    finally:
        t.run(["docker", "rm", "-f", "-v", name], check=False)


def make_deep_check(host: HostConfig, connect: Callable[[HostConfig], Transport]) -> DeepCheck:
    """A verify hook restoring every PostgreSQL source of a snapshot on *host*."""

    def check(
        manifest: Manifest, storage: Storage, identities: Sequence[Identity]
    ) -> list[BadObject]:
        private = open_private(manifest, identities)
        ok = {s.name for s in manifest.sources if s.status == "ok"}
        bad: list[BadObject] = []
        pg = {
            name: info
            for name, info in (private.get("sources") or {}).items()
            if info.get("type") == "postgres" and name in ok
        }
        if not pg:
            return bad
        t = connect(host)
        try:
            for name, info in pg.items():
                meta = dict(info.get("meta") or {})
                bad += deep_check_source(t, storage, identities, manifest, name, meta)
        finally:
            t.close()
        return bad

    return check
