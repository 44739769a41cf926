"""The manifest: the one record of a snapshot. Written LAST; a snapshot exists once it does.

A manifest is one JSON object in storage with a public part and a private part:

- public (readable with no key, so `list`, `prune` and a light `verify` work on
  a machine that holds only public keys): format, id, host, times, tool
  version, status, and for every object its storage key, ciphertext size and
  ciphertext sha256, the snapshot that uploaded it (for reused objects: an
  earlier one), and per source its name, type, status and byte counts.
- private: an age-encrypted JSON document (base64 in the "private" field)
  holding everything sensitive: paths of files, row counts, server versions,
  host facts, plaintext sizes and hashes, error messages. It also repeats the
  id, the host and every object's key, size and sha256 ("binding"), and
  `open_private` refuses a private part whose copy differs from the public
  part: a private part lifted from another manifest, or a public part edited
  around it, is caught even where nothing is signed. (It is no substitute for
  the signature: the recipients are public, so anyone can write a matching
  private part; `vkbackup.signed_storage` is what says who wrote it.)

A manifest read from storage is validated strictly, as hostile input; its
private part stays sealed until `open_private` decrypts it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vkbackup import layout
from vkbackup.errors import IntegrityError

FORMAT = "vkbackup-manifest/1"
STATUSES = ("complete", "partial")
SOURCE_STATUSES = ("ok", "failed", "skipped")
# Sanity bounds for numbers read from a (possibly hostile) manifest: far above any
# real value, low enough that nothing downstream (sums, ranges, floats) misbehaves.
MAX_OBJECT_BYTES = 2**50  # 1 PiB (S3 objects stop at 5 TiB)
MAX_CHAIN = 10_000  # verify builds range(chain): a forged 10**18 must not hang it
MAX_SECONDS = 10**9


@dataclass(frozen=True)
class ObjectRecord:
    key: str  # storage key of the age-encrypted object
    source: str  # source name
    name: str  # object name within the source (e.g. "dump.pgdump.age")
    role: str  # what it is: "pg-dump", "pg-globals", "tar", "image", "tar-incremental", ...
    size: int  # ciphertext bytes in storage
    sha256: str  # ciphertext sha256 (hex)
    compression: str = "none"  # applied before encryption: "none" | "gzip" | "zstd"
    uploaded_in: str = ""  # snapshot id that uploaded it ("" = this one)
    chain: int = 0  # incremental position: 0 = full
    # sha256("vkbackup-fp:" + content fingerprint): lets a nightly run (public keys
    # only) see that a source is unchanged and reuse this object. "" = never reused.
    fingerprint: str = ""
    # recipient_set_tag of the recipients the object is encrypted to. Reuse takes an
    # object only while the configured set is the same, so after a key rotation
    # nothing stays readable by the old set alone. "" (manifests written before the
    # field existed): unknown, never reused.
    recipient_set: str = ""


def recipient_set_tag(recipients: Iterable[object]) -> str:
    """The public tag of a recipient set: sha256 over the sorted, deduplicated
    recipient strings ("age1..."), in their canonical form (str of the parsed key),
    so the order of encryption.recipients and repeated entries do not matter. It
    says only whether two objects were encrypted to the same keys; the keys are
    public anyway."""
    lines = "\n".join(sorted({str(r) for r in recipients}))
    return hashlib.sha256(b"vkbackup-recipients:\n" + lines.encode()).hexdigest()


def _hex64(value: str) -> bool:
    return len(value) == 64 and not value.strip("0123456789abcdef")


@dataclass(frozen=True)
class SourceRecord:
    name: str
    type: str
    status: str  # "ok" | "failed" | "skipped"
    bytes_new: int = 0  # ciphertext bytes uploaded by this snapshot
    bytes_reused: int = 0  # ciphertext bytes referenced from earlier snapshots
    seconds: float = 0.0


@dataclass
class Manifest:
    id: str
    host: str
    started: str  # ISO 8601 UTC
    finished: str
    tool_version: str
    status: str  # "complete" | "partial"
    objects: list[ObjectRecord] = field(default_factory=list)
    sources: list[SourceRecord] = field(default_factory=list)
    private_sealed: str = ""  # base64 of the age-encrypted private JSON
    private: dict[str, Any] | None = None  # decrypted (or being built)

    @property
    def bytes_new(self) -> int:
        return sum(o.size for o in self.objects if not o.uploaded_in or o.uploaded_in == self.id)

    @property
    def bytes_total(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def bytes_reused(self) -> int:
        return self.bytes_total - self.bytes_new

    def origin(self, obj: ObjectRecord) -> str:
        """Return the id of the snapshot that uploaded *obj* (this one or an earlier one)."""
        return obj.uploaded_in or self.id


BINDING = "binding"


def binding(manifest: Manifest) -> dict[str, Any]:
    """What the private part repeats of the public one: id, host, and every
    object's key, size and sha256, in manifest order."""
    return {
        "id": manifest.id,
        "host": manifest.host,
        "objects": [[o.key, o.size, o.sha256] for o in manifest.objects],
    }


def encode(manifest: Manifest, recipients: Sequence[Any]) -> bytes:
    """Return the manifest as JSON bytes, its private part encrypted to *recipients*."""
    from vkbackup.crypto import encrypt_bytes

    doc_private = {**(manifest.private or {}), BINDING: binding(manifest)}
    private = json.dumps(doc_private, sort_keys=True, default=str).encode()
    sealed = base64.b64encode(encrypt_bytes(private, list(recipients))).decode()
    doc = {
        "format": FORMAT,
        "id": manifest.id,
        "host": manifest.host,
        "started": manifest.started,
        "finished": manifest.finished,
        "tool_version": manifest.tool_version,
        "status": manifest.status,
        "objects": [asdict(o) for o in manifest.objects],
        "sources": [asdict(s) for s in manifest.sources],
        "private": sealed,
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def _need(doc: dict[str, Any], key: str, typ: type | tuple[type, ...], name: str) -> Any:
    if key not in doc:
        raise IntegrityError(f"{name}: manifest is missing {key!r}")
    v = doc[key]
    if isinstance(v, bool) and typ in (int, float, (int, float)):
        raise IntegrityError(f"{name}: manifest field {key!r} has the wrong type")
    if not isinstance(v, typ):
        raise IntegrityError(f"{name}: manifest field {key!r} has the wrong type")
    return v


def _count(doc: dict[str, Any], key: str, name: str, limit: int) -> int:
    """A non-negative integer field, at most *limit*."""
    v: int = _need(doc, key, int, name)
    if not 0 <= v <= limit:
        raise IntegrityError(f"{name}: manifest field {key!r} is out of range ({str(v)[:30]})")
    return v


def _seconds(doc: dict[str, Any], key: str, name: str) -> float:
    v = _need(doc, key, (int, float), name)
    if isinstance(v, int) and not 0 <= v <= MAX_SECONDS:
        raise IntegrityError(f"{name}: manifest field {key!r} is out of range")
    f = float(v)
    if not 0.0 <= f <= MAX_SECONDS:  # also NaN and infinities
        raise IntegrityError(f"{name}: manifest field {key!r} is out of range")
    return f


def decode(data: bytes, name: str) -> Manifest:
    """Given manifest bytes, return the Manifest with its private part still sealed.
    Raise IntegrityError naming *name* if anything is malformed or out of bounds."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{name}: manifest is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{name}: manifest is not a JSON object")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise IntegrityError(f"{name}: unknown manifest format {fmt!r} (expected {FORMAT})")
    sid = _need(doc, "id", str, name)
    host = _need(doc, "host", str, name)
    if not layout.ID_RE.match(sid):
        raise IntegrityError(f"{name}: bad snapshot id {sid[:40]!r}")
    if not layout.NAME_RE.match(host):
        raise IntegrityError(f"{name}: bad host name {host[:40]!r}")
    status = _need(doc, "status", str, name)
    if status not in STATUSES:
        raise IntegrityError(f"{name}: bad status {status[:20]!r}")
    objects: list[ObjectRecord] = []
    data_prefix = layout.data_prefix(host)
    for i, o in enumerate(_need(doc, "objects", list, name)):
        where = f"{name}: objects[{i}]"
        if not isinstance(o, dict):
            raise IntegrityError(f"{where}: not an object")
        try:
            rec = ObjectRecord(
                key=_need(o, "key", str, where),
                source=_need(o, "source", str, where),
                name=_need(o, "name", str, where),
                role=_need(o, "role", str, where),
                size=_count(o, "size", where, MAX_OBJECT_BYTES),
                sha256=_need(o, "sha256", str, where),
                compression=_need(o, "compression", str, where),
                uploaded_in=_need(o, "uploaded_in", str, where),
                chain=_count(o, "chain", where, MAX_CHAIN),
                fingerprint=_need(o, "fingerprint", str, where),
                recipient_set=_need(o, "recipient_set", str, where) if "recipient_set" in o else "",
            )
        except TypeError:
            raise IntegrityError(f"{where}: malformed object record") from None
        origin = rec.uploaded_in or sid
        expected = layout.data_prefix(host, origin) if layout.ID_RE.match(origin) else None
        if (
            expected is None
            or not rec.key.startswith(data_prefix)
            or not rec.key.startswith(expected)
            or ".." in rec.key.split("/")
            or "//" in rec.key
        ):
            raise IntegrityError(
                f"{where}: object key {rec.key[:120]!r} is outside this host's data"
            )
        if (
            rec.size < 0
            or len(rec.sha256) != 64
            or any(c not in "0123456789abcdef" for c in rec.sha256)
        ):
            raise IntegrityError(f"{where}: bad size or sha256")
        if rec.compression not in ("none", "gzip", "zstd"):
            raise IntegrityError(f"{where}: unknown compression {rec.compression[:20]!r}")
        if not layout.NAME_RE.match(rec.source):
            raise IntegrityError(f"{where}: bad source name")
        if not layout.NAME_RE.match(rec.name) or not layout.NAME_RE.match(rec.role):
            raise IntegrityError(f"{where}: bad object name or role")
        if rec.fingerprint and (
            len(rec.fingerprint) != 64 or rec.fingerprint.strip("0123456789abcdef")
        ):
            raise IntegrityError(f"{where}: bad fingerprint")
        if rec.recipient_set and not _hex64(rec.recipient_set):
            raise IntegrityError(f"{where}: bad recipient_set")
        objects.append(rec)
    sources: list[SourceRecord] = []
    for i, s in enumerate(_need(doc, "sources", list, name)):
        where = f"{name}: sources[{i}]"
        if not isinstance(s, dict):
            raise IntegrityError(f"{where}: not an object")
        rec_s = SourceRecord(
            name=_need(s, "name", str, where),
            type=_need(s, "type", str, where),
            status=_need(s, "status", str, where),
            bytes_new=_count(s, "bytes_new", where, MAX_OBJECT_BYTES * 1024),
            bytes_reused=_count(s, "bytes_reused", where, MAX_OBJECT_BYTES * 1024),
            seconds=_seconds(s, "seconds", where),
        )
        if rec_s.status not in SOURCE_STATUSES:
            raise IntegrityError(f"{where}: bad status")
        if not layout.NAME_RE.match(rec_s.name) or not layout.NAME_RE.match(rec_s.type):
            raise IntegrityError(f"{where}: bad source name or type")
        sources.append(rec_s)
    return Manifest(
        id=sid,
        host=host,
        started=_need(doc, "started", str, name),
        finished=_need(doc, "finished", str, name),
        tool_version=_need(doc, "tool_version", str, name),
        status=status,
        objects=objects,
        sources=sources,
        private_sealed=_need(doc, "private", str, name),
    )


def open_private(manifest: Manifest, identities: Sequence[Any], name: str = "") -> dict[str, Any]:
    """Decrypt and return the manifest's private part (cached on the manifest).
    Raise CryptoError if no identity opens it, IntegrityError if it is not a
    base64-encoded JSON object."""
    if manifest.private is not None:
        return manifest.private
    from vkbackup.crypto import decrypt_bytes

    where = name or layout.manifest_key(manifest.host, manifest.id)
    try:
        sealed = base64.b64decode(manifest.private_sealed, validate=True)
    except ValueError:
        raise IntegrityError(f"{where}: private part is not base64") from None
    plain = decrypt_bytes(sealed, list(identities), name=f"{where} (private part)")
    try:
        doc = json.loads(plain)
    except json.JSONDecodeError:
        raise IntegrityError(f"{where}: private part is not JSON") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{where}: private part is not a JSON object")
    bound = doc.get(BINDING)
    if bound is None:
        raise IntegrityError(
            f"{where}: the private part does not repeat the snapshot's id, host and objects: "
            "refused (written by an older vkbackup, or forged)"
        )
    if bound != binding(manifest):
        raise IntegrityError(
            f"{where}: the private part names another snapshot or other objects than the "
            "public part (id, host, or an object's key, size or sha256 differ): refused"
        )
    manifest.private = doc
    return doc


def objects_by_source(manifest: Manifest) -> dict[str, list[ObjectRecord]]:
    """Given a manifest, return its objects grouped by source name, in manifest order."""
    out: dict[str, list[ObjectRecord]] = {}
    for o in manifest.objects:
        out.setdefault(o.source, []).append(o)
    return out
