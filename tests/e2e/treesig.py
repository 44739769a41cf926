"""Signatures of trees, files and databases on a lab host, for exact comparisons.

A volume tree's signature holds, per path: type, mode, owner, group, size,
symlink target, content sha256, mtime (regular files), whether it is sparse,
and the hard-link groups (paths sharing an inode). Everything a careless tar
loses shows up as a difference.
"""

from __future__ import annotations

from typing import Any

from tests.lab.api import Lab

TREE_SCRIPT = r"""
set -euo pipefail
cd "$(docker volume inspect -f '{{.Mountpoint}}' "$1")"
find . -printf '%y\0%m\0%U\0%G\0%s\0%l\0%i\0%b\0%Ts\0%p\0'
printf '\0--HASHES--\0'
find . -type f -print0 | xargs -0 -r sha256sum -z
"""


def volume_signature(lab: Lab, host: str, volume: str) -> dict[str, Any]:
    out = lab.ssh_bytes(host, f"bash -c {_q(TREE_SCRIPT)} x {_q(volume)}").stdout
    meta_part, _, hash_part = out.partition(b"\0\0--HASHES--\0")
    entries: dict[bytes, dict[str, Any]] = {}
    inodes: dict[str, list[bytes]] = {}
    fields = meta_part.split(b"\0")
    for i in range(0, len(fields) - 9, 10):
        typ, mode, uid, gid, size, link, inode, blocks, mtime, path = fields[i : i + 10]
        entries[path] = {
            "type": typ.decode(),
            "mode": mode.decode(),
            "uid": uid.decode(),
            "gid": gid.decode(),
            "size": int(size) if typ != b"d" else None,
            "link": link,
            "mtime": mtime.decode() if typ == b"f" else None,
            "sparse": typ == b"f" and int(blocks) * 512 < int(size),
        }
        if typ == b"f":
            inodes.setdefault(inode.decode(), []).append(path)
    for rec in hash_part.split(b"\0"):
        if rec:
            digest, _, path = rec.partition(b"  ")
            entries[path]["sha256"] = digest.decode()
    links = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    return {"entries": entries, "hardlinks": links}


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def file_signature(lab: Lab, host: str, paths: list[str]) -> dict[str, str]:
    script = (
        'for f in "$@"; do printf "%s %s " "$f" "$(stat -c "%a %u %g" "$f")"; '
        'sha256sum < "$f" | cut -c1-64; done'
    )
    out = lab.ssh(host, f"bash -c {_q(script)} x " + " ".join(_q(p) for p in paths)).stdout
    res: dict[str, str] = {}
    for line in out.splitlines():
        path, rest = line.split(" ", 1)
        res[path] = rest
    return res


def db_schema(lab: Lab, host: str) -> str:
    out = lab.ssh(
        host,
        f"docker exec chatwoot-postgres-1 pg_dump -U postgres -s {lab.database}",
    ).stdout
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def db_roles(lab: Lab, host: str) -> str:
    out = lab.ssh(
        host, "docker exec chatwoot-postgres-1 pg_dumpall -U postgres --roles-only"
    ).stdout
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def db_sequences(lab: Lab, host: str) -> str:
    return lab.psql(
        host,
        "SELECT schemaname || '.' || sequencename || ' ' || coalesce(last_value::text, 'null') "
        "FROM pg_sequences ORDER BY 1;",
    )
