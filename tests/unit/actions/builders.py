"""Build snapshots directly in storage, at any time (an injected clock), without
running sources: small age-encrypted objects, manifests written through the
manifest module, objects reused from earlier snapshots, incremental chains.

    SnapshotBuilder(storage, host, recipients)
        .snapshot(when, new={source: bytes}, reuse={source: [ObjectRecord]},
                  status="complete", failed=()) -> Manifest
        .incomplete(when, names) -> list[str]     data objects with no manifest
    snapshot_id(when) -> str                      deterministic id for a time
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from vkbackup import catalog, layout
from vkbackup.crypto import Recipient, encrypt_bytes
from vkbackup.manifest import Manifest, ObjectRecord, SourceRecord, encode
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader


def snapshot_id(when: datetime) -> str:
    suffix = hashlib.sha256(when.isoformat().encode()).hexdigest()[:4]
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + suffix


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SnapshotBuilder:
    def __init__(self, storage: Storage, host: str, recipients: Sequence[Recipient]) -> None:
        self.storage = storage
        self.host = host
        self.recipients = list(recipients)

    def put_object(
        self, sid: str, source: str, name: str, plain: bytes, *, role: str = "tar", chain: int = 0
    ) -> ObjectRecord:
        key = layout.object_key(self.host, sid, source, name)
        data = encrypt_bytes(plain, self.recipients)
        self.storage.put(key, BytesReader(data))
        return ObjectRecord(
            key=key,
            source=source,
            name=name,
            role=role,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            chain=chain,
        )

    def snapshot(
        self,
        when: datetime,
        *,
        new: Mapping[str, bytes | Sequence[tuple[str, bytes, int]]] | None = None,
        reuse: Mapping[str, Iterable[ObjectRecord]] | None = None,
        status: str = "complete",
        failed: Iterable[str] = (),
        sid: str | None = None,
    ) -> Manifest:
        """Write the objects of *new* (source -> plaintext, or a list of
        (name, plaintext, chain position)) and a manifest that also lists the
        *reuse* records (objects of earlier snapshots)."""
        sid = sid or snapshot_id(when)
        objects: list[ObjectRecord] = []
        sources: dict[str, SourceRecord] = {}
        for source, records in (reuse or {}).items():
            for old in records:
                origin = old.uploaded_in or old.key.split("/")[2]
                objects.append(replace(old, uploaded_in=origin))
                s = sources.get(source) or SourceRecord(source, "files", "ok")
                sources[source] = replace(s, bytes_reused=s.bytes_reused + old.size)
        for source, content in (new or {}).items():
            parts = [("data.age", content, 0)] if isinstance(content, bytes) else list(content)
            for name, plain, chain in parts:
                rec = self.put_object(sid, source, name, plain, chain=chain)
                objects.append(rec)
                s = sources.get(source) or SourceRecord(source, "files", "ok")
                sources[source] = replace(s, bytes_new=s.bytes_new + rec.size)
        for source in failed:
            sources[source] = SourceRecord(source, "files", "failed")
        manifest = Manifest(
            id=sid,
            host=self.host,
            started=iso(when),
            finished=iso(when),
            tool_version="test",
            status=status,
            objects=objects,
            sources=list(sources.values()),
            private={
                "facts": {"os_release": {"PRETTY_NAME": "Test OS"}, "containers": []},
                "host": {"address": "127.0.0.1", "port": 22, "user": "root"},
                "sources": {
                    name: {"type": "files", "meta": {"files": []}, "error": None}
                    for name in sources
                },
            },
        )
        self.storage.put(
            layout.manifest_key(self.host, sid),
            BytesReader(encode(manifest, self.recipients)),
            if_absent=True,
        )
        return catalog.load_manifest(self.storage, self.host, sid)  # as a reader sees it

    def incomplete(self, when: datetime, names: Sequence[str] = ("data.age",)) -> list[str]:
        """Data objects of a run that never committed its manifest."""
        sid = snapshot_id(when)
        return [self.put_object(sid, "vol", name, b"partial upload").key for name in names]
