"""Where things live in storage: pure functions from names to object keys.

    snapshots/<host>/<snapshot-id>.json           the manifest: a snapshot exists once this does
    data/<host>/<snapshot-id>/<source>/<object>   age-encrypted data objects
    locks/<host>.lock                             one snapshot per host at a time
    verify/<host>/<snapshot-id>.json              the last verify result of a snapshot
    drills/<host>/<time>.json                     one restore drill's report
    wal/<host>/<timeline>/<segment>.age           streamed WAL (point-in-time recovery),
    wal/<host>/<timeline>/<segment>.json          each with its record (`vkbackup.pitr.wal`;
                                                  a partial: <segment>.partial.<version>.age,
                                                  a new key per upload, one record)
    <record>.json.sig                             the SSH signature of each record above

Snapshot ids sort by time: ``20261126T020000Z-3f9a``. Every key function
raises ValueError for a host, snapshot, source or object name that does not
match NAME_RE, so no name can climb out of its place in the layout.

Ids and records are dated by whoever wrote them, and anyone who can write to
the bucket can write a date. One dated more than FUTURE_TOLERANCE ahead of
this machine's clock is no snapshot yet: readers ignore or refuse it
(`vkbackup.catalog`), so it can neither be "latest", steer prune, nor make a
new snapshot wait for the clock to pass it. The tolerance covers clocks of
two backup machines that disagree a little.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

# ASCII digits only (\d also matches other scripts' digits) and \Z, not $ (which
# also matches before a trailing newline): names become storage keys and paths.
ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4}\Z")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


def new_snapshot_id(now: datetime | None = None) -> str:
    """Return a new snapshot id: *now* (default: the current time) in UTC to the
    second, and 4 random hex digits."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def snapshot_time(snapshot_id: str) -> datetime:
    """Given a snapshot id, return the UTC time it names. Raise ValueError if it names none."""
    return datetime.strptime(snapshot_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


FUTURE_TOLERANCE = timedelta(minutes=10)


def is_future(t: datetime, now: datetime | None = None) -> bool:
    """Whether *t* is more than FUTURE_TOLERANCE after *now* (default: the clock)."""
    now = now or datetime.now(UTC)
    return t > now + FUTURE_TOLERANCE


def future_dated(key: str, t: datetime) -> str:
    """Given a key and the future date it carries, say so (for a warning or error):
    "snapshots/prod/20991231T235959Z-0000.json: dated 2099-12-31T23:59:59Z, more
    than 10 minutes in the future"."""
    minutes = int(FUTURE_TOLERANCE.total_seconds() // 60)
    when = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{key}: dated {when}, more than {minutes} minutes in the future"


def _check(name: str, what: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"invalid {what} name for a storage key: {name!r}")
    return name


def manifest_key(host: str, snapshot_id: str) -> str:
    return f"snapshots/{_check(host, 'host')}/{_check(snapshot_id, 'snapshot')}.json"


def manifests_prefix(host: str | None = None) -> str:
    return "snapshots/" if host is None else f"snapshots/{_check(host, 'host')}/"


def parse_manifest_key(key: str) -> tuple[str, str] | None:
    """Given a key, return (host, snapshot id) if it is a manifest key, else None."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "snapshots" or not parts[2].endswith(".json"):
        return None
    sid = parts[2][: -len(".json")]
    if not ID_RE.match(sid) or not NAME_RE.match(parts[1]):
        return None
    return parts[1], sid


def data_prefix(host: str, snapshot_id: str | None = None) -> str:
    base = f"data/{_check(host, 'host')}/"
    return base if snapshot_id is None else base + f"{_check(snapshot_id, 'snapshot')}/"


def object_key(host: str, snapshot_id: str, source: str, name: str) -> str:
    return data_prefix(host, snapshot_id) + f"{_check(source, 'source')}/{_check(name, 'object')}"


def lock_key(host: str) -> str:
    return f"locks/{_check(host, 'host')}.lock"


def verify_key(host: str, snapshot_id: str) -> str:
    return f"verify/{_check(host, 'host')}/{_check(snapshot_id, 'snapshot')}.json"


#: where records live: manifests, verify records, drill records, WAL records. Each is signed
#: (`vkbackup.signed_storage`), its signature stored beside it under KEY + ".sig".
RECORD_PREFIXES = ("snapshots/", "verify/", "drills/", "wal/")
SIGNATURE_SUFFIX = ".sig"


def is_record(key: str) -> bool:
    """Whether *key* is a record (a manifest, verify, drill or WAL record) that is signed."""
    return key.startswith(RECORD_PREFIXES) and key.endswith(".json")


def signature_key(key: str) -> str:
    """The key of a record's signature: "snapshots/prod/ID.json.sig"."""
    return key + SIGNATURE_SUFFIX
