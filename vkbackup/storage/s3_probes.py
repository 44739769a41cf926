"""What `vkbackup storage check` asks an S3 bucket beyond the Storage interface.

Backups never need these requests: they say whether the bucket is reachable,
whether it keeps versions and enforces Object Lock, and whether the provider
verifies Content-MD5 (or refuses a CRC32 checksum header). They sit apart from
`vkbackup.storage.s3` so the backend holds only what a snapshot, restore or
prune uses; they go through the same client, retry policy and error mapping
as the backend's own requests, so a failed probe reads like any storage error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import botocore.exceptions

from vkbackup.errors import StorageError, StorageUnreachableError
from vkbackup.storage.s3 import _HINTS, NO_LOCK_CODES, S3Storage, _b64, _code, _md5, _status

#: how long the probe objects of an Object Lock bucket are kept
PROBE_LOCK_DAYS = 1


@dataclass(frozen=True)
class LockStatus:
    enabled: bool
    default_mode: str | None = None
    default_days: int | None = None
    default_years: int | None = None


@dataclass(frozen=True)
class ChecksumProbe:
    md5_accepted: bool
    bad_md5_rejected: bool
    crc32_accepted: bool
    detail: str = ""


def probe_storage(s3: S3Storage, part_size: int) -> S3Storage:
    """Given the configured backend, return a private copy for probing: same
    client, parts of *part_size*, and (with Object Lock) a retention of
    PROBE_LOCK_DAYS instead of the configured days."""
    probe = copy.copy(s3)
    if probe.object_lock is not None:
        probe.object_lock = replace(probe.object_lock, days=PROBE_LOCK_DAYS)
    probe.part_size = part_size
    return probe


def check_bucket(s3: S3Storage) -> None:
    """Raise StorageError if the bucket cannot be reached with these credentials."""
    try:
        s3._call(
            lambda: s3.client.head_bucket(Bucket=s3.bucket),
            f"HeadBucket {s3._loc()}",
        )
    except Exception as e:
        err = s3._error(e, "HeadBucket", "")
        if _code(e) in ("404", "NoSuchBucket", "NotFound"):
            err = StorageUnreachableError(
                f"{s3._loc()}: bucket does not exist (HeadBucket: {_code(e)})",
                hint=_HINTS["NoSuchBucket"],
            )
        elif _code(e) == "403":
            err = StorageError(
                f"{s3._loc()}: access denied (HeadBucket: HTTP 403)",
                hint="check the credentials, storage.region and the bucket policy",
            )
        raise err from e


def versioning_status(s3: S3Storage) -> str:
    """Return the bucket's versioning state: "Enabled", "Suspended" or "Disabled"."""
    try:
        resp = s3._call(
            lambda: s3.client.get_bucket_versioning(Bucket=s3.bucket),
            f"GetBucketVersioning {s3._loc()}",
        )
    except Exception as e:
        raise s3._error(e, "GetBucketVersioning", "") from e
    return str(resp.get("Status") or "Disabled")


def object_lock_status(s3: S3Storage) -> LockStatus:
    """Return whether the bucket has Object Lock, and its default retention."""
    try:
        resp = s3._call(
            lambda: s3.client.get_object_lock_configuration(Bucket=s3.bucket),
            f"GetObjectLockConfiguration {s3._loc()}",
        )
    except Exception as e:
        if _code(e) in NO_LOCK_CODES:
            return LockStatus(enabled=False)
        raise s3._error(e, "GetObjectLockConfiguration", "") from e
    conf = resp.get("ObjectLockConfiguration") or {}
    rule = (conf.get("Rule") or {}).get("DefaultRetention") or {}
    return LockStatus(
        enabled=conf.get("ObjectLockEnabled") == "Enabled",
        default_mode=rule.get("Mode"),
        default_days=rule.get("Days"),
        default_years=rule.get("Years"),
    )


def probe_checksums(s3: S3Storage, key: str) -> ChecksumProbe:
    """Write *key* three ways (right MD5, wrong MD5, CRC32 header); report what
    the server did. Leaves *key* holding the MD5-verified bytes."""
    full = s3._full(key)
    body = b"vkbackup checksum probe\n"
    lock = s3._lock_params()
    notes: list[str] = []

    def put(**extra: Any) -> str | None:
        try:
            s3._call(
                lambda: s3.client.put_object(
                    Bucket=s3.bucket, Key=full, Body=body, **lock, **extra
                ),
                f"PutObject {s3._loc(full)} (checksum probe)",
            )
            return None
        except botocore.exceptions.ClientError as e:
            return _code(e) or str(_status(e))

    bad = put(ContentMD5=_b64(_md5(b"something else")))
    bad_rejected = bad is not None
    if bad is not None and bad != "BadDigest":
        notes.append(f"wrong Content-MD5 refused with {bad}")
    crc = put(ChecksumAlgorithm="CRC32")
    if crc is not None:
        notes.append(f"CRC32 checksum header refused with {crc}")
    good = put(ContentMD5=_b64(_md5(body)))
    if good is not None:
        notes.append(f"correct Content-MD5 refused with {good}")
    return ChecksumProbe(
        md5_accepted=good is None,
        bad_md5_rejected=bad_rejected,
        crc32_accepted=crc is None,
        detail="; ".join(notes),
    )


def probe_locked_delete(s3: S3Storage, key: str) -> bool:
    """Try to delete the current version of *key* for good (not a delete
    marker). Return True if the server refused (Object Lock enforced)."""
    full = s3._full(key)
    try:
        head = s3.client.head_object(Bucket=s3.bucket, Key=full)
    except Exception as e:
        raise s3._error(e, "HeadObject", full) from e
    version = head.get("VersionId")
    if not version or version == "null":
        return False
    try:
        s3.client.delete_object(Bucket=s3.bucket, Key=full, VersionId=version)
    except botocore.exceptions.ClientError as e:
        if _code(e) in ("AccessDenied", "InvalidRequest", "ObjectLocked") or _status(e) == 403:
            return True
        raise s3._error(e, "DeleteObject (version)", full) from e
    return False
