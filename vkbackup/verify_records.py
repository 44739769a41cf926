"""Verify records: the result of `vkbackup verify` for one snapshot, stored at
``verify/<host>/<id>.json`` so `list` and `show` can say when a snapshot was last
proven intact. Written by the verify action, read by list and show; kept apart
from both so neither imports the other. A record that cannot be read is treated
as absent, never as a pass, and so is one dated more than
`layout.FUTURE_TOLERANCE` in the future, one that names another snapshot than
its key, and (with [signing]) one whose signature does not check: each with a
warning naming it, so a forged record can neither claim a pass nor hide one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from vkbackup import catalog, layout
from vkbackup.errors import IntegrityError, ObjectNotFoundError
from vkbackup.logs import get_logger
from vkbackup.storage.base import Storage

log = get_logger("verify")

RECORD_FORMAT = "vkbackup-verify/1"
MODE_FULL = "full"
MODE_LIGHT = "no-decrypt"


@dataclass(frozen=True)
class VerifyRecord:
    host: str
    id: str
    time: str
    ok: bool
    mode: str
    bad_count: int

    def describe(self) -> str:
        light = " (no-decrypt)" if self.mode == MODE_LIGHT else ""
        verdict = "ok" if self.ok else f"FAILED, {self.bad_count} bad"
        return f"{self.time} {verdict}{light}"


def record_key(host: str, snapshot_id: str) -> str:
    return layout.verify_key(host, snapshot_id)


def _parse_record(data: bytes, host: str, snapshot_id: str) -> VerifyRecord | None:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
        return None
    bad = doc.get("bad")
    t = doc.get("time")
    ok = doc.get("ok")
    if not isinstance(t, str) or not isinstance(ok, bool) or not isinstance(bad, list):
        return None
    if doc.get("host") != host or doc.get("id") != snapshot_id:
        log.warning(
            "%s: names another snapshot (%s/%s): ignored",
            record_key(host, snapshot_id),
            str(doc.get("host"))[:40],
            str(doc.get("id"))[:40],
        )
        return None
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if layout.is_future(when):
        catalog.warn_future_once(layout.future_dated(record_key(host, snapshot_id), when))
        return None
    return VerifyRecord(
        host=host,
        id=snapshot_id,
        time=t,
        ok=ok,
        mode=str(doc.get("mode", MODE_FULL)),
        bad_count=len(bad),
    )


def load_record(storage: Storage, host: str, snapshot_id: str) -> VerifyRecord | None:
    """Return the stored verify record of a snapshot, or None (absent or unreadable)."""
    try:
        data = catalog.read_small(storage, record_key(host, snapshot_id), 4 * 1024 * 1024)
    except ObjectNotFoundError:
        return None
    except IntegrityError as e:  # unsigned or bad signature with [signing], oversized
        log.warning("%s: ignored", e)
        return None
    return _parse_record(data, host, snapshot_id)


def load_records(storage: Storage, host: str | None = None) -> dict[tuple[str, str], VerifyRecord]:
    """Return every stored verify record (of *host*), keyed by (host, id)."""
    prefix = "verify/" if host is None else f"verify/{host}/"
    out: dict[tuple[str, str], VerifyRecord] = {}
    for info in storage.list(prefix):
        parts = info.key.split("/")
        if len(parts) != 3 or not parts[2].endswith(".json"):
            continue
        h, sid = parts[1], parts[2][: -len(".json")]
        if not layout.ID_RE.match(sid) or not layout.NAME_RE.match(h):
            continue
        rec = load_record(storage, h, sid)
        if rec is not None:
            out[(h, sid)] = rec
    return out
