"""The source interface: one module per kind of thing backed up.

A source knows (1) which remote commands produce its streams, (2) what
metadata to record, and (3) how to put a stream back on a target (restore
side, in the same module). Commands are argv lists built by plain functions,
so unit tests read them; the only effect is `Transport`. Each source class
names its kind in ``type``: "postgres", "files", "docker-volume" or
"docker-image".
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from vkbackup.config.model import SourceConfig
from vkbackup.manifest import ObjectRecord
from vkbackup.transport.base import Transport

#: The compressor kind of a stream compressed with zstd on the backup machine (the
#: host lacks zstd): the host's pipeline has no compress stage, the snapshot
#: compresses it here (`vkbackup.zstd_compress`, level 3 like the host's) and records
#: it as "zstd" (`stored_compression`), named ".zst": the same object either way.
ZSTD_HERE = "zstd-here"
COMPRESSORS: dict[str, list[str]] = {
    "gzip": ["gzip", "-1", "-c"],
    "zstd": ["zstd", "-q", "-T0", "-3", "-c"],
    ZSTD_HERE: [],
    "none": [],
}
DECOMPRESSORS: dict[str, list[str]] = {
    "gzip": ["gzip", "-d", "-c"],
    "zstd": ["zstd", "-q", "-d", "-c"],
    "none": [],
}
SUFFIX = {"gzip": ".gz", "zstd": ".zst", ZSTD_HERE: ".zst", "none": ""}


def choose_compressor(setting: str, host_tools: list[str]) -> str | None:
    """Given snapshot.compression ("auto", "zstd", "gzip", "none") and the tools found
    on the host, return the compressor kind to use; None when the setting is "gzip"
    and the host lacks gzip. "auto" and "zstd" mean zstd objects: compressed by the
    host's zstd when it has one (about half the host CPU of gzip -1 for a smaller
    output: docs/benchmarks.md), else ZSTD_HERE (on the backup machine: gzip -1 on
    the host was the bottleneck, issue 18). "gzip" is always gzip on the host."""
    if setting in ("auto", "zstd"):
        return "zstd" if "zstd" in host_tools else ZSTD_HERE
    if setting == "gzip" and "gzip" not in host_tools:
        return None
    return setting


def stored_compression(kind: str) -> str:
    """The compression an object of compressor *kind* is recorded with ("zstd" for
    ZSTD_HERE: restore reads it like any zstd object)."""
    return "zstd" if kind == ZSTD_HERE else kind


def compress_stage(kind: str) -> str:
    """Return the shell text ' | gzip -1 -c' (or '') that compresses a pipeline."""
    argv = COMPRESSORS[kind]
    return (" | " + shlex.join(argv)) if argv else ""


@dataclass
class StreamPlan:
    name: str  # object name without ".age", e.g. "dump.pgdump"
    role: str  # "pg-dump", "pg-globals", "tar", "image"
    argv: list[str]
    compression: str = "none"  # a COMPRESSORS kind (ZSTD_HERE: compressed by the snapshot)
    fingerprint: str | None = None  # content identity for reuse; None = always upload
    size_hint: int | None = None  # expected plaintext size, for multipart part sizing
    chain: int = 0  # position in an incremental chain (0 = full)
    meta: dict[str, Any] = field(default_factory=dict)  # private, per object


@dataclass
class SourcePlan:
    streams: list[StreamPlan]
    meta: dict[str, Any] = field(default_factory=dict)  # private, per source
    # objects of earlier snapshots this snapshot references as they are (e.g. the
    # earlier links of an incremental chain), listed before the new streams' objects
    reuse: list[ObjectRecord] = field(default_factory=list)
    # the containers its streams hold still (pause or stop) while they run: two
    # sources that share one never stream at the same time (`actions.snapshot`)
    holds: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanContext:
    """What a source plans with: this snapshot's id, the compressor to use, the
    source's objects in its previous snapshot (for reuse and incremental
    decisions) and the incremental chain settings."""

    snapshot_id: str
    compressor: str = "gzip"
    # this source's objects in the newest earlier snapshot where it succeeded (public
    # records; uploaded_in is always set), all verified present in storage and all
    # encrypted to the current recipients (else empty: the source is taken in full)
    previous: tuple[ObjectRecord, ...] = ()
    full_every_days: int = 7
    max_chain: int = 6
    now: datetime | None = None  # None: the snapshot id's time
    base_every_days: int = 7  # [pitr]: a new base backup when the referenced one is older


def fingerprint_tag(fp: str) -> str:
    """The public form of a content fingerprint: sha256("vkbackup-fp:" + fp)."""
    return hashlib.sha256(b"vkbackup-fp:" + fp.encode()).hexdigest()


class Source(Protocol):
    cfg: SourceConfig

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        """Inspect the host with small commands (versions, sizes, who uses a
        volume) and return the streams to take, each with the argv producing it
        and a content fingerprint (same fingerprint as an object of
        ctx.previous => that object is reused, not uploaded again)."""
        ...

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        """Run once a stream's command succeeded: collect what the stream left
        behind (row counts file, downtime line) into plan.meta."""
        ...
