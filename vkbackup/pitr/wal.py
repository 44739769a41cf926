"""Streamed PostgreSQL WAL: names, arithmetic, storage layout, records and chains.

Everything here is pure (no storage, no clock, no subprocess), so the rules a
restore stakes a database on can be tested on their own, and the streamer, the
uploader and the restore all use the same ones.

Layout. The backup machine runs pg_receivewal into a tmpfs spool. Each finished
segment is age-encrypted and stored once::

    wal/<host>/<TTTTTTTT>/<SEGMENT>.age            a finished segment ("full")
    wal/<host>/<TTTTTTTT>/<SEGMENT>.partial.age    the unfinished one ("partial")
    wal/<host>/<TTTTTTTT>/<TTTTTTTT>.history.age   a timeline history file

TTTTTTTT is the timeline as 8 uppercase hex digits, SEGMENT the 24-digit WAL
file name (PostgreSQL's XLogFileName). The segment being written is uploaded at
most every max_lag as the partial, so the newest WAL is never more than max_lag
old in storage. pg_receivewal zero-pads a .partial file to the segment size; the
partial object holds its bytes with the trailing zeros trimmed (`trim_partial`)
and `pad_segment` gives the exact file back. Trimming may also cut zeros that
were WAL, which padding restores, so the trimmed length (`plain_size`) is where
the stored bytes end, not necessarily where the last whole WAL record ends.

Records. age says nothing about who wrote an object: anyone who can write to the
bucket can encrypt to the public recipients. So every object has a JSON record
beside it, the same key with ``.age`` replaced by ``.json``, which pins the
object's key, the sha256 and size of its ciphertext, and what it holds (host,
timeline, segment, cluster system identifier, segment size, when the backup
machine stored it). The storage wrapper signs records (`vkbackup.signed_storage`);
this module only builds and parses them. A record is refused (IntegrityError
naming the record key) unless each field is well-formed, the fields imply
exactly the record's own key and the object key it names: a record copied or
swapped onto another object, or edited to claim another segment, fails here even
with a good signature. A partial is stored under a new key at each upload
("<segment>.partial.<version>.age"), its one record swapped after it, the old
object deleted last: a record always names an object that is there whole, or
one just deleted (a reader then reads the record again). A ciphertext that does
not match its record is refused, never used.

Chains. A restore starts from a base backup's start (timeline, LSN) and replays
WAL from the segment holding that LSN. `chain_from` finds the continuous run of
full segments from there, the partial that continues it, and any gap: a missing
segment makes every later segment of the timeline unreachable, and those are
named so the operator learns it now rather than at restore time. Only one
timeline is followed: WAL after a promotion (a later timeline, reached through
its history file) is out of scope here; `Chain.history` is the start
timeline's own history file, which a restore may stage for PostgreSQL.

Times. A record's time is when the backup machine stored it, by its own clock.
A segment is stored only after pg_receivewal finished it, so it holds no WAL
written after that time, and `covers` says whether the chain reaches a target
time at all. The store time bounds a segment's WAL only from above: after an
outage of the stream (SSH, storage or the backup machine away, then catching
up) old WAL is stored late. So it cannot say which segments a target time
needs; a restore stages the whole chain and PostgreSQL stops at the target.
Refusing records dated in the future is the caller's part (`layout.is_future`):
it needs the clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

from vkbackup.errors import IntegrityError
from vkbackup.layout import NAME_RE
from vkbackup.names import shown
from vkbackup.textsafe import printable

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
MIN_SEGMENT_SIZE = 1024 * 1024
MAX_SEGMENT_SIZE = 1024 * 1024 * 1024

MAX_LSN = 0xFFFFFFFFFFFFFFFF
MAX_TIMELINE = 0xFFFFFFFF
_XLOGID = 0x100000000  # bytes per "xlogid", the high half of an LSN
_MAX_SYSID = 0xFFFFFFFFFFFFFFFF
_MAX_SIZE = 2**63 - 1

Kind = Literal["full", "partial", "history"]
KINDS: tuple[Kind, ...] = ("full", "partial", "history")

WAL_ROOT = "wal/"
OBJECT_SUFFIX = ".age"
RECORD_SUFFIX = ".json"
_PARTIAL = ".partial"
_VERSION_RE = re.compile(r"[0-9a-f]{16}")
_VERSIONED_RE = re.compile(r"(.+\.partial)\.([0-9a-f]{16})")
_HISTORY = ".history"

RECORD_TYPE = "vkbackup-wal"
RECORD_VERSION = 1
MAX_RECORD_BYTES = 64 * 1024  # a record is a few hundred bytes
#: at most this many missing segment names are listed in `Chain.gaps`
MAX_GAP_NAMES = 100

# ASCII classes and fullmatch throughout: \d and $ would let other digits and a
# trailing newline through, and these names become storage keys and paths.
_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_SEGMENT_RE = re.compile(r"[0-9A-F]{24}")
_TLI_RE = re.compile(r"[0-9A-F]{8}")
_HISTORY_RE = re.compile(r"([0-9A-F]{8})\.history")
_HISTORY_LINE_RE = re.compile(
    r"([0-9]{1,10})[ \t]+([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})(?:[ \t\r].*)?"
)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SYSID_RE = re.compile(r"[0-9]{1,20}")

_FIELDS = frozenset(
    {
        "version",
        "type",
        "host",
        "timeline",
        "name",
        "kind",
        "key",
        "sha256",
        "size",
        "plain_size",
        "segment_size",
        "system_identifier",
        "time",
    }
)


# -- WAL names and arithmetic ------------------------------------------------------------------


def valid_segment_size(n: int) -> bool:
    """Whether *n* is a WAL segment size PostgreSQL allows: a power of two from
    1 MiB to 1 GiB (initdb --wal-segsize)."""
    return type(n) is int and MIN_SEGMENT_SIZE <= n <= MAX_SEGMENT_SIZE and n & (n - 1) == 0


def _segment_size(n: int) -> int:
    if not valid_segment_size(n):
        raise ValueError(f"invalid WAL segment size {n!r}: a power of two from 1 MiB to 1 GiB")
    return n


def _timeline(tli: int) -> int:
    if type(tli) is not int or not 1 <= tli <= MAX_TIMELINE:
        raise ValueError(f"invalid timeline {tli!r}: 1 to {MAX_TIMELINE}")
    return tli


def _lsn(lsn: int) -> int:
    if type(lsn) is not int or not 0 <= lsn <= MAX_LSN:
        raise ValueError(f"invalid LSN {lsn!r}: 0 to 2**64-1")
    return lsn


def _per_xlogid(seg_size: int) -> int:
    return _XLOGID // _segment_size(seg_size)


def parse_lsn(text: str) -> int:
    """Given an LSN as PostgreSQL prints it ("16/B374D848"), return it as an int.
    Raise ValueError for anything else (each half 1 to 8 hex digits)."""
    m = _LSN_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not a PostgreSQL LSN (like 16/B374D848): {shown(str(text))}")
    return int(m[1], 16) << 32 | int(m[2], 16)


def format_lsn(lsn: int) -> str:
    """Given an LSN, return it as PostgreSQL prints it: "16/B374D848", "0/3000000"."""
    _lsn(lsn)
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segno_of(lsn: int, seg_size: int) -> int:
    """The number of the segment holding *lsn* (PostgreSQL's XLByteToSeg)."""
    return _lsn(lsn) // _segment_size(seg_size)


def _segno(segno: int, seg_size: int) -> int:
    if type(segno) is not int or not 0 <= segno <= MAX_LSN // _segment_size(seg_size):
        raise ValueError(f"invalid WAL segment number {segno!r} for {seg_size}-byte segments")
    return segno


def segment_start(segno: int, seg_size: int) -> int:
    """The LSN where segment *segno* starts."""
    return _segno(segno, seg_size) * seg_size


def segment_name(tli: int, segno: int, seg_size: int) -> str:
    """The WAL file name of segment *segno* on timeline *tli* (PostgreSQL's
    XLogFileName): "000000010000000000000003"."""
    per = _per_xlogid(seg_size)
    _segno(segno, seg_size)
    return f"{_timeline(tli):08X}{segno // per:08X}{segno % per:08X}"


def parse_segment_name(name: str, seg_size: int) -> tuple[int, int]:
    """Given a WAL file name, return (timeline, segment number). Raise ValueError
    unless it is exactly 24 uppercase hex digits naming a timeline from 1 and a
    segment that exists with *seg_size*-byte segments."""
    per = _per_xlogid(seg_size)
    if not isinstance(name, str) or not _SEGMENT_RE.fullmatch(name):
        raise ValueError(f"not a WAL segment name (24 uppercase hex digits): {shown(str(name))}")
    tli, high, low = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    if tli == 0:
        raise ValueError(f"WAL segment name {name}: timeline 0 does not exist")
    if low >= per:
        raise ValueError(f"WAL segment name {name}: no such segment with {seg_size}-byte segments")
    return tli, high * per + low


def history_name(tli: int) -> str:
    """The name of timeline *tli*'s history file: "00000002.history"."""
    return f"{_timeline(tli):08X}{_HISTORY}"


def parse_history_name(name: str) -> int:
    """Given a timeline history file name ("00000002.history"), return its
    timeline. Raise ValueError for anything else."""
    m = _HISTORY_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None or int(m[1], 16) == 0:
        raise ValueError(f"not a timeline history file name: {shown(str(name))}")
    return int(m[1], 16)


def parse_history(text: str) -> list[tuple[int, int]]:
    """Given a timeline history file, return its entries as (parent timeline,
    switchpoint LSN), in order. Lines are "parentTLI<TAB>LSN<TAB>reason"; blank
    lines and comments (#) are skipped, as PostgreSQL does. Raise ValueError
    naming the line for anything else, or for timelines not in increasing order."""
    out: list[tuple[int, int]] = []
    for number, line in enumerate(text.split("\n"), 1):
        body = line.lstrip(" \t\r\v\f")
        if not body or body.startswith("#"):
            continue
        m = _HISTORY_LINE_RE.fullmatch(body)
        if m is None:
            raise ValueError(
                f"timeline history line {number}: expected 'TLI<TAB>LSN<TAB>reason': {shown(line)}"
            )
        tli = int(m[1])
        if not 1 <= tli <= MAX_TIMELINE or (out and tli <= out[-1][0]):
            raise ValueError(
                f"timeline history line {number}: timeline {tli} is not a valid timeline "
                f"after {out[-1][0] if out else 'none'}"
            )
        out.append((tli, parse_lsn(m[2])))
    return out


def trim_partial(data: bytes) -> bytes:
    """Given a .partial file's bytes, return them without the trailing zero bytes
    (pg_receivewal pads the file to the segment size with zeros)."""
    return data.rstrip(b"\0")


def pad_segment(data: bytes, seg_size: int) -> bytes:
    """Given trimmed partial bytes, return them zero-padded to *seg_size*: the
    exact .partial file. Raise ValueError if they are longer than a segment."""
    if len(data) > _segment_size(seg_size):
        raise ValueError(f"{len(data)} bytes do not fit a {seg_size}-byte WAL segment")
    return data + bytes(seg_size - len(data))


# -- storage keys ------------------------------------------------------------------------------


def _host(host: str) -> str:
    if not isinstance(host, str) or not NAME_RE.match(host):
        raise ValueError(f"invalid host name for a storage key: {shown(str(host))}")
    return host


def wal_prefix(host: str | None = None) -> str:
    """Where streamed WAL lives: "wal/", or "wal/<host>/" for one host."""
    return WAL_ROOT if host is None else f"{WAL_ROOT}{_host(host)}/"


def _check_name(tli: int, name: str, kind: str) -> None:
    """Raise ValueError unless *name* is a file of *kind* on timeline *tli*. The
    low half of a segment name is checked against the smallest segment size (the
    most segments per xlogid); `WalRecord` checks it against the record's own."""
    if kind == "history":
        if name != history_name(tli):
            raise ValueError(f"not the history file of timeline {tli}: {shown(str(name))}")
        return
    if kind not in KINDS:
        raise ValueError(f"invalid WAL object kind: {shown(str(kind))}")
    seg_tli, _ = parse_segment_name(name, MIN_SEGMENT_SIZE)
    if seg_tli != tli:
        raise ValueError(f"WAL segment {name} is not on timeline {tli}")


def object_key(host: str, tli: int, name: str, kind: str, version: str = "") -> str:
    """The key of a WAL object: a full segment, the partial of a segment, or a
    timeline history file (*name* is then its file name, "00000002.history").
    A partial is stored again and again as it grows; each upload gets a key of its
    own, *version* (16 lowercase hex digits: "<segment>.partial.<version>.age"),
    never overwritten, so its record (one per segment, swapped after the object
    is stored) always names an object that is there whole. Raise ValueError for
    a host, timeline, name, kind or version that does not fit."""
    _check_name(_timeline(tli), name, kind)
    if version and (kind != "partial" or not _VERSION_RE.fullmatch(version)):
        raise ValueError(f"a version is 16 hex digits, of a partial only: {shown(version)}")
    leaf = name + _PARTIAL if kind == "partial" else name
    if version:
        leaf += "." + version
    return f"{wal_prefix(host)}{tli:08X}/{leaf}{OBJECT_SUFFIX}"


def _parse_key(key: str, suffix: str) -> tuple[str, int, str, Kind] | None:
    if not isinstance(key, str):
        return None
    parts = key.split("/")
    if len(parts) != 4 or parts[0] + "/" != WAL_ROOT or not parts[3].endswith(suffix):
        return None
    if not NAME_RE.match(parts[1]) or not _TLI_RE.fullmatch(parts[2]):
        return None
    host, tli, leaf = parts[1], int(parts[2], 16), parts[3][: -len(suffix)]
    kind: Kind = "full"
    version = ""
    m = _VERSIONED_RE.fullmatch(leaf)
    if m is not None and suffix == OBJECT_SUFFIX:
        leaf, version = m.group(1), m.group(2)
    if leaf.endswith(_PARTIAL):
        kind, leaf = "partial", leaf[: -len(_PARTIAL)]
    elif leaf.endswith(_HISTORY):
        kind = "history"
    try:
        rebuilt = object_key(host, tli, leaf, kind, version)
    except ValueError:
        return None
    if rebuilt[: -len(OBJECT_SUFFIX)] + suffix != key:
        return None
    return host, tli, leaf, kind


def parse_object_key(key: str) -> tuple[str, int, str, Kind] | None:
    """Given a key, return (host, timeline, name, kind) if it is a WAL object key
    exactly as `object_key` builds it, else None."""
    return _parse_key(key, OBJECT_SUFFIX)


def parse_record_key(key: str) -> tuple[str, int, str, Kind] | None:
    """Given a key, return (host, timeline, name, kind) if it is a WAL record key
    exactly as `record_key` builds it, else None."""
    return _parse_key(key, RECORD_SUFFIX)


def record_key(key: str) -> str:
    """The key of a WAL object's record: ".age" replaced by ".json" (a partial's
    version dropped: one record per segment's partial). Raise ValueError if *key*
    is not a WAL object key."""
    parsed = parse_object_key(key)
    if parsed is None:
        raise ValueError(f"not a WAL object key: {shown(str(key))}")
    return object_key(*parsed)[: -len(OBJECT_SUFFIX)] + RECORD_SUFFIX


# -- records -----------------------------------------------------------------------------------


def _aware(t: datetime, what: str) -> datetime:
    if not isinstance(t, datetime) or t.utcoffset() is None:
        raise ValueError(f"{what} must be a datetime with a timezone: {t!r}")
    return t


def _count(value: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_SIZE:
        raise ValueError(f"{what} must be a byte count from 0: {value!r}")
    return value


@dataclass(frozen=True)
class WalRecord:
    """What one WAL object is: the record stored (and signed) beside it.

    *key* is the object's key, *sha256* and *size* its ciphertext's, *plain_size*
    the plaintext bytes stored (a segment's size for a full segment, the trimmed
    length for a partial), *time* when the backup machine stored it (made UTC).
    Building one checks every field (ValueError), so none exists that `decode`
    would refuse."""

    host: str
    timeline: int
    name: str
    kind: str
    key: str
    sha256: str
    size: int
    plain_size: int
    segment_size: int
    system_identifier: str
    time: datetime

    def __post_init__(self) -> None:
        self._check()
        object.__setattr__(self, "time", self.time.astimezone(UTC))

    def _check(self) -> None:
        _segment_size(self.segment_size)
        expected = object_key(self.host, self.timeline, self.name, self.kind)
        if self.kind != "history":
            parse_segment_name(self.name, self.segment_size)
        if parse_object_key(self.key) != (self.host, self.timeline, self.name, self.kind):
            raise ValueError(f"object key {shown(str(self.key))} is not {expected}")
        if not isinstance(self.sha256, str) or not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits: {shown(str(self.sha256))}")
        _count(self.size, "size")
        _count(self.plain_size, "plain_size")
        if self.kind == "full" and self.plain_size != self.segment_size:
            raise ValueError(
                f"a full segment holds {self.segment_size} bytes, not {self.plain_size}"
            )
        if self.kind == "partial" and self.plain_size > self.segment_size:
            raise ValueError(f"a partial segment of {self.plain_size} bytes exceeds its segment")
        sysid = self.system_identifier
        if not isinstance(sysid, str) or not _SYSID_RE.fullmatch(sysid) or int(sysid) > _MAX_SYSID:
            raise ValueError(f"invalid system identifier: {shown(str(sysid))}")
        _aware(self.time, "time")

    @property
    def segno(self) -> int:
        """The segment number of a full or partial segment. Raise ValueError for a
        history file, which has none."""
        if self.kind == "history":
            raise ValueError(f"{self.key}: a timeline history file has no segment")
        return parse_segment_name(self.name, self.segment_size)[1]

    @property
    def start_lsn(self) -> int:
        """Where the segment starts. Raise ValueError for a history file."""
        return segment_start(self.segno, self.segment_size)

    @property
    def end_lsn(self) -> int:
        """Where the stored bytes end: the segment's end for a full segment, the
        trimmed length past its start for a partial. Raise ValueError for a
        history file."""
        return self.start_lsn + (self.segment_size if self.kind == "full" else self.plain_size)

    def encode(self) -> bytes:
        """The record as JSON (sorted keys), for storage."""
        doc: dict[str, object] = {
            "version": RECORD_VERSION,
            "type": RECORD_TYPE,
            "host": self.host,
            "timeline": self.timeline,
            "name": self.name,
            "kind": self.kind,
            "key": self.key,
            "sha256": self.sha256,
            "size": self.size,
            "plain_size": self.plain_size,
            "segment_size": self.segment_size,
            "system_identifier": self.system_identifier,
            "time": self.time.isoformat(),
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def decode(cls, data: bytes, key: str) -> WalRecord:
        """Given a record's bytes and the key they were read from, return the
        record. Raise IntegrityError naming *key* unless every field is
        well-formed and *key* is exactly the record key its fields imply."""
        try:
            return cls._decode(data, key)
        except (ValueError, RecursionError) as e:
            raise IntegrityError(f"{printable(str(key))}: {e}") from None

    @classmethod
    def _decode(cls, data: bytes, key: str) -> WalRecord:
        if parse_record_key(key) is None:
            raise ValueError("not a WAL record key")
        if len(data) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(data)} bytes, more than {MAX_RECORD_BYTES}")
        doc = _load_json(data)
        if _int(doc, "version") != RECORD_VERSION or doc["type"] != RECORD_TYPE:
            raise ValueError(f"not a {RECORD_TYPE} record of version {RECORD_VERSION}")
        time = _aware(datetime.fromisoformat(_str(doc, "time")), "time")
        record = cls(
            host=_str(doc, "host"),
            timeline=_int(doc, "timeline"),
            name=_str(doc, "name"),
            kind=_str(doc, "kind"),
            key=_str(doc, "key"),
            sha256=_str(doc, "sha256"),
            size=_int(doc, "size"),
            plain_size=_int(doc, "plain_size"),
            segment_size=_int(doc, "segment_size"),
            system_identifier=_str(doc, "system_identifier"),
            time=time,
        )
        if record_key(record.key) != key:
            raise ValueError(f"the record is of {record.key}, not of this key")
        return record


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name, value in pairs:
        if name in doc:
            raise ValueError(f"field {shown(name)} appears twice")
        doc[name] = value
    return doc


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(data: bytes) -> dict[str, Any]:
    """Parse a record's JSON object: UTF-8, no repeated or missing fields, none
    unknown. Raise ValueError otherwise."""
    doc = json.loads(
        data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
    )
    if not isinstance(doc, dict):
        raise ValueError("a record must be a JSON object")
    missing, unknown = sorted(_FIELDS - doc.keys()), sorted(doc.keys() - _FIELDS)
    if missing or unknown:
        shown_unknown = [shown(str(n)) for n in unknown[:5]]
        raise ValueError(f"fields missing: {missing or 'none'}; unknown: {shown_unknown or 'none'}")
    return doc


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string: {shown(str(value))}")
    return value


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc[name]
    if type(value) is not int:  # exactly: true is no timeline, 1.0 no size
        raise ValueError(f"{name} must be an integer: {shown(str(value))}")
    return value


# -- chains ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """The WAL of one timeline that a base backup can replay, from `chain_from`.

    *segments* is the continuous run of full segments from the one holding
    *start_lsn*; *partial* continues it (or stands alone if the run is empty).
    *gaps* names the missing segments between the run and the last later full
    segment of the timeline (at most MAX_GAP_NAMES of them; *gap_count* counts
    all): each later segment is unreachable. *end_lsn* is how far the stored WAL
    reaches, *end_time* when its last record was stored. *foreign* lists the
    object keys of records of another cluster (system identifier), to warn of.
    *history* is the timeline's own history file, if stored."""

    timeline: int
    start_lsn: int
    segments: tuple[WalRecord, ...]
    partial: WalRecord | None
    gaps: tuple[str, ...]
    gap_count: int
    end_lsn: int
    end_time: datetime | None
    foreign: tuple[str, ...]
    history: WalRecord | None


def _newer(a: WalRecord | None, b: WalRecord) -> WalRecord:
    """The newer of two records of one object (by time; then by sha256, so the
    choice does not depend on the order records are listed in)."""
    return b if a is None or (b.time, b.sha256) > (a.time, a.sha256) else a


def _newest_by_segno(records: Iterable[WalRecord]) -> dict[int, WalRecord]:
    out: dict[int, WalRecord] = {}
    for r in records:
        out[r.segno] = _newer(out.get(r.segno), r)
    return out


def _select(
    records: Iterable[WalRecord], tli: int, system_identifier: str | None
) -> tuple[list[WalRecord], list[str]]:
    """Split *records* into those of timeline *tli* (and the cluster, if given)
    and the keys of another cluster's. Raise ValueError for records of two hosts."""
    mine: list[WalRecord] = []
    foreign: list[str] = []
    hosts: set[str] = set()
    for r in records:
        hosts.add(r.host)
        if system_identifier is not None and r.system_identifier != system_identifier:
            foreign.append(r.key)
        elif r.timeline == tli:
            mine.append(r)
    if len(hosts) > 1:
        raise ValueError(f"WAL records of more than one host: {sorted(hosts)}")
    return mine, sorted(set(foreign))


def _segment_size_of(records: list[WalRecord]) -> int | None:
    """The one segment size of *records* (None if there are none). Raise
    IntegrityError if two disagree: one cluster has one size (initdb)."""
    sizes = {r.segment_size: r.key for r in records}
    if len(sizes) > 1:
        (a, key_a), (b, key_b) = sorted(sizes.items())[:2]
        raise IntegrityError(f"{key_a} and {key_b}: WAL segment sizes differ ({a}, {b})")
    return next(iter(sizes), None)


def _gaps(fulls: dict[int, WalRecord], after: int) -> tuple[tuple[int, ...], int]:
    """The missing segment numbers from *after* up to the last full segment
    beyond it (at most MAX_GAP_NAMES listed), and how many are missing in all."""
    later = [n for n in fulls if n > after]
    if not later:
        return (), 0
    last = max(later)
    total = last - after - (len(later) - 1)
    missing: list[int] = []
    n = after
    while n < last and len(missing) < MAX_GAP_NAMES:
        if n not in fulls:
            missing.append(n)
        n += 1
    return tuple(missing), total


def chain_from(
    records: Iterable[WalRecord],
    tli: int,
    start_lsn: int,
    system_identifier: str | None = None,
) -> Chain:
    """Given every WAL record of one host and where a base backup starts
    (timeline, LSN), return the chain of WAL that can replay it. Records of
    another timeline are left out, and of another cluster when
    *system_identifier* is given (their keys are listed in `Chain.foreign`). Of
    several records of one segment the newest counts."""
    _timeline(tli)
    _lsn(start_lsn)
    mine, foreign = _select(records, tli, system_identifier)
    history: WalRecord | None = None
    for r in mine:
        if r.kind == "history":
            history = _newer(history, r)
    seg_size = _segment_size_of(mine)
    if seg_size is None:
        return Chain(tli, start_lsn, (), None, (), 0, start_lsn, None, tuple(foreign), history)
    fulls = _newest_by_segno(r for r in mine if r.kind == "full")
    partials = _newest_by_segno(r for r in mine if r.kind == "partial")
    run: list[WalRecord] = []
    n = segno_of(start_lsn, seg_size)
    while n in fulls:
        run.append(fulls[n])
        n += 1
    partial = partials.get(n)
    missing, gap_count = _gaps(fulls, n)
    last = partial or (run[-1] if run else None)
    return Chain(
        timeline=tli,
        start_lsn=start_lsn,
        segments=tuple(run),
        partial=partial,
        gaps=tuple(segment_name(tli, m, seg_size) for m in missing),
        gap_count=gap_count,
        end_lsn=max(start_lsn, last.end_lsn) if last else start_lsn,
        end_time=last.time if last else None,
        foreign=tuple(foreign),
        history=history,
    )


def covers(chain: Chain, target_time: datetime) -> bool:
    """Whether *chain* was stored up to *target_time* at least: its last record
    was stored at or after it. False for a chain with no record."""
    _aware(target_time, "target time")
    return chain.end_time is not None and chain.end_time >= target_time
