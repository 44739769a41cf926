"""S3 (and S3-compatible) storage over boto3, streaming with bounded memory.

`S3Storage` implements `vkbackup.storage.base.Storage`. The client is built
from the config alone: credentials from storage.access_key_id and
secret_access_key if set, else the standard AWS chain (environment, profile,
shared files, instance metadata); the region from storage.region, else the
profile's, else us-east-1. Checksums are sent only "when_required"
(botocore >= 1.36 otherwise sends CRC32 headers that B2, older MinIO and some
R2/Ceph paths reject), and botocore's own retries are off: vkbackup.retry is
the one policy. The probes `vkbackup storage check` runs against a bucket
(versioning, Object Lock, checksum handling) live in
`vkbackup.storage.s3_probes`, not here.

put() reads the source one part at a time into a buffer of exactly the part
size (see vkbackup.storage.parts), so memory stays at about two parts: one
being filled while the previous one is uploaded by a single worker thread.
A stream that ends within the first part becomes one PutObject. Every
PutObject and UploadPart carries Content-MD5, so the server rejects a
corrupted body (BadDigest) and Object Lock buckets accept the request. With
an Object Lock configured, PutObject and CreateMultipartUpload carry
ObjectLockMode and ObjectLockRetainUntilDate (now + days).

Retries (vkbackup.retry, bounded, logged) wrap single requests whose body is
in memory: a PutObject, one UploadPart, Create/Complete/Abort, HEAD, LIST,
and the (re)opening of a GET, which resumes with a Range request at the
offset already delivered (If-Match on the ETag, so a changed object is an
error, never a silent splice). The source stream is never re-read. On any
failure of a multipart upload (including Ctrl-C and source errors) the
upload is aborted, so no part of the object becomes visible. A retried
CreateMultipartUpload also aborts the upload an earlier attempt may have
opened when only its answer was lost.

if_absent=True sends If-None-Match: * (PutObject or CompleteMultipartUpload).
If a retried request then meets 412, the object is compared with what was
sent (ETag from the MD5s) so an earlier attempt that landed counts as success.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from vkbackup import retry
from vkbackup.config.model import ObjectLock, StorageConfig
from vkbackup.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageUnreachableError,
)
from vkbackup.logs import register_secret
from vkbackup.retry import RetryPolicy
from vkbackup.storage.base import ObjectInfo, ReadStream, join_key, validate_key
from vkbackup.storage.parts import MAX_PARTS, plan_part_size
from vkbackup.streams import CHUNK, Readable

log = logging.getLogger("vkbackup.storage.s3")

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
NO_LOCK_CODES = frozenset(
    {
        "ObjectLockConfigurationNotFoundError",
        "NoSuchObjectLockConfiguration",
        "InvalidRequest",
        "NotImplemented",
    }
)
#: seconds to wait for an in-flight part before aborting a failed upload
ABORT_WAIT = 30.0


def make_client(cfg: StorageConfig) -> Any:
    """Given the storage config, return a boto3 S3 client (no request is made)."""
    if cfg.secret_access_key:
        register_secret(cfg.secret_access_key)
    try:
        session = boto3.session.Session(
            profile_name=cfg.profile,
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            region_name=cfg.region,
        )
    except botocore.exceptions.ProfileNotFound as e:
        raise StorageError(
            f"storage.profile: AWS profile {cfg.profile!r} not found",
            hint="define it in ~/.aws/credentials or ~/.aws/config, or set the keys",
        ) from e
    region = cfg.region or session.region_name or "us-east-1"
    config = botocore.config.Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": cfg.addressing_style},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        tcp_keepalive=True,
        max_pool_connections=4,
        user_agent_extra="vkbackup",
    )
    return session.client("s3", endpoint_url=cfg.endpoint_url, config=config)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    return None


def _bind(fn: Callable[..., Any], request: dict[str, Any]) -> Callable[[], Any]:
    frozen = dict(request)
    return lambda: fn(**frozen)


def _md5(data: bytes | bytearray) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def multipart_etag(part_md5s: builtins.list[bytes]) -> str:
    """Given the binary MD5 of each part, return the ETag S3 gives the object."""
    return f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"


_HINTS = {
    "AccessDenied": "check the credentials' permissions and the bucket policy",
    "AllAccessDisabled": "the bucket is disabled for this account",
    "InvalidAccessKeyId": "check storage.access_key_id (or the profile's credentials)",
    "SignatureDoesNotMatch": "check storage.secret_access_key, and storage.region",
    "AuthorizationHeaderMalformed": "set storage.region to the bucket's region",
    "PermanentRedirect": "set storage.region (or endpoint_url) to the bucket's region",
    "NoSuchBucket": "create the bucket, or fix storage.bucket",
    "BadDigest": "the body was corrupted in transit (Content-MD5 mismatch); retry",
    "XAmzContentSHA256Mismatch": "the body was corrupted in transit; retry",
    "InvalidRequest": "for Object Lock buckets check storage.object_lock; "
    "see docs/storage-providers.md",
    "NotImplemented": "the provider lacks this S3 feature; see docs/storage-providers.md",
    "EntityTooSmall": "parts must be at least 5 MiB (storage.part_size_mib)",
    "InvalidPart": "the provider refused the parts (R2 needs equal-size parts); "
    "report this as a bug",
    "QuotaExceeded": "the account's storage quota is full",
}


class S3Storage:
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        object_lock: ObjectLock | None = None,
        part_size: int | None = None,
        policy: RetryPolicy | None = None,
        endpoint_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.object_lock = object_lock
        self.part_size = part_size
        self.policy = policy or RetryPolicy()
        self.endpoint_url = endpoint_url
        self._clock = clock

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> S3Storage:
        if not cfg.bucket:
            raise StorageError("storage.bucket: required for type = 's3'")
        return cls(
            make_client(cfg),
            cfg.bucket,
            cfg.prefix,
            object_lock=cfg.object_lock,
            part_size=cfg.part_size_mib * 1024 * 1024 if cfg.part_size_mib else None,
            policy=RetryPolicy(max_attempts=cfg.max_attempts),
            endpoint_url=cfg.endpoint_url,
        )

    # -- helpers -------------------------------------------------------------

    def _full(self, key: str) -> str:
        return join_key(self.prefix, validate_key(key))

    def _strip(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _loc(self, full: str = "") -> str:
        return f"s3://{self.bucket}/{full}"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        return retry.call(fn, what, self.policy)

    def _error(self, exc: BaseException, op: str, full: str) -> StorageError:
        """Turn a boto3/botocore exception into a StorageError naming bucket and key:
        StorageUnreachableError (exit 10) for a bucket that does not exist and for
        an endpoint that could not be reached (connection refused or reset, DNS,
        timeouts) after every retry. An HTTP error answered by the endpoint (5xx
        included) stays a StorageError."""
        where = self._loc(full)
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status = _code(exc), _status(exc)
            msg = str((exc.response.get("Error") or {}).get("Message") or "").strip()
            text = f"{where}: {op} failed: {code or 'error'} (HTTP {status})"
            if msg:
                text += f": {msg}"
            if code in NOT_FOUND_CODES:
                return ObjectNotFoundError(f"{where}: no such object ({op}: {code})")
            if code == "NoSuchBucket":
                at = f" at {self.endpoint_url}" if self.endpoint_url else ""
                return StorageUnreachableError(
                    f"{where}: {op} failed: bucket {self.bucket} does not exist{at} "
                    f"(NoSuchBucket, HTTP {status})",
                    hint=_HINTS.get(code),
                )
            return StorageError(text, hint=_HINTS.get(code))
        if isinstance(
            exc,
            botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError,
        ):
            return StorageError(
                f"{where}: {op} failed: no S3 credentials found",
                hint="set storage.access_key_id and storage.secret_access_key, "
                "storage.profile, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            )
        if retry.is_transient(exc):
            attempts = self.policy.max_attempts
            return StorageUnreachableError(
                f"{where}: {op} failed after {attempts} attempt(s): {retry.describe_error(exc)}",
                hint=f"check that {self.endpoint_url or 'the S3 endpoint'} is reachable "
                "(storage.endpoint_url, network, proxy)",
            )
        return StorageError(f"{where}: {op} failed: {retry.describe_error(exc)}")

    def _lock_params(self) -> dict[str, Any]:
        if self.object_lock is None:
            return {}
        until = self._clock() + timedelta(days=self.object_lock.days)
        return {
            "ObjectLockMode": self.object_lock.mode.upper(),
            "ObjectLockRetainUntilDate": until,
        }

    def _read_part(self, src: Readable, size: int, reuse: bytearray | None = None) -> bytearray:
        """Fill one buffer of *size* bytes from *src* (reusing *reuse* if given);
        shorter only at the end of the stream."""
        buf = reuse if reuse is not None and len(reuse) == size else bytearray(size)
        pos = 0
        with memoryview(buf) as view:
            while pos < size:
                chunk = src.read(min(CHUNK, size - pos))
                if not chunk:
                    break
                n = len(chunk)
                if n > size - pos:
                    raise StorageError(f"source returned {n} bytes when at most {size - pos} asked")
                view[pos : pos + n] = chunk
                pos += n
        if pos < size:
            del buf[pos:]
        return buf

    def _is_ours(self, full: str, etag: str, size: int) -> bool:
        """True if *full* exists with exactly this ETag and size (an earlier attempt landed)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except Exception:
            return False
        got = str(head.get("ETag", "")).strip('"')
        return got == etag and int(head.get("ContentLength", -1)) == size

    def _create(
        self,
        op: str,
        call: Callable[[], Any],
        full: str,
        etag: str,
        size: int,
        *,
        if_absent: bool,
        landed_codes: tuple[str, ...],
    ) -> Any:
        """Run *call*, which creates *full* (PutObject, CompleteMultipartUpload), with
        retries. A retry refused with one of *landed_codes* while *full* holds exactly
        these bytes (ETag and size) means an earlier attempt landed and only its
        response was lost: success. Otherwise PreconditionFailed under *if_absent* is
        ObjectExistsError; any other failure a StorageError naming the object."""
        loc = self._loc(full)
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            try:
                return call()
            except botocore.exceptions.ClientError as e:
                if attempts > 1 and _code(e) in landed_codes and self._is_ours(full, etag, size):
                    log.info("%s: an earlier %s attempt landed", loc, op)
                    return {"ETag": f'"{etag}"'}
                raise

        try:
            return self._call(attempt, f"{op} {loc}")
        except Exception as e:
            if if_absent and _code(e) == "PreconditionFailed":
                raise ObjectExistsError(f"{loc}: object already exists") from e
            raise self._error(e, op, full) from e

    # -- put -----------------------------------------------------------------

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        """Given a key and a stream of unknown length, upload it. Raise
        ObjectExistsError (if_absent and the key exists) or StorageError; errors
        raised by *src* itself propagate unchanged after the upload is aborted."""
        full = self._full(key)
        try:
            part_size = plan_part_size(size_hint, self.part_size)
        except ValueError as e:
            raise StorageError(f"{self._loc(full)}: {e}") from e
        first = self._read_part(src, part_size)
        if len(first) < part_size:
            return self._put_single(key, full, first, if_absent)
        return self._put_multipart(key, full, first, src, part_size, if_absent)

    def _put_single(self, key: str, full: str, body: bytearray, if_absent: bool) -> ObjectInfo:
        digest = _md5(body)
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full,
            "Body": body,
            "ContentLength": len(body),
            "ContentMD5": _b64(digest),
            "ContentType": "application/octet-stream",
            **self._lock_params(),
        }
        if if_absent:
            request["IfNoneMatch"] = "*"
        resp = self._create(
            "PutObject",
            lambda: self.client.put_object(**request),
            full,
            digest.hex(),
            len(body),
            if_absent=if_absent,
            # without If-None-Match a retry simply overwrites with the same bytes
            landed_codes=("PreconditionFailed",) if if_absent else (),
        )
        return ObjectInfo(
            key=key,
            size=len(body),
            modified=self._clock(),
            etag=str(resp.get("ETag", "")).strip('"') or None,
        )

    def _upload_part(self, full: str, upload_id: str, number: int, body: bytearray) -> bytes:
        digest = _md5(body)
        resp = self._call(
            lambda: self.client.upload_part(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=len(body),
                ContentMD5=_b64(digest),
            ),
            f"UploadPart {self._loc(full)} part {number}",
        )
        etag = str(resp.get("ETag", "")).strip('"')
        if etag and etag != digest.hex():
            log.debug("%s part %d: ETag %s is not the MD5", self._loc(full), number, etag)
        return digest

    def _put_multipart(
        self,
        key: str,
        full: str,
        first: bytearray,
        src: Readable,
        part_size: int,
        if_absent: bool,
    ) -> ObjectInfo:
        loc = self._loc(full)
        creates = 0
        t0 = time.monotonic()

        def create() -> Any:
            nonlocal creates
            creates += 1
            return self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                ContentType="application/octet-stream",
                **self._lock_params(),
            )

        try:
            created = self._call(create, f"CreateMultipartUpload {loc}")
        except Exception as e:
            raise self._error(e, "CreateMultipartUpload", full) from e
        upload_id: str = created["UploadId"]
        if creates > 1:
            self._abort_lost_creates(full, upload_id, time.monotonic() - t0)
        log.debug("%s: multipart upload %s, parts of %d bytes", loc, upload_id, part_size)

        digests: builtins.list[bytes] = []
        total = 0
        inflight: Future[bytes] | None = None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vkbackup-s3-part")
        try:
            # Two buffers take turns: one is uploaded by the worker while the
            # source fills the other. Nothing else holds part data.
            sending = first
            spare: bytearray | None = None
            number = 1
            while True:
                inflight = pool.submit(self._upload_part, full, upload_id, number, sending)
                total += len(sending)
                if len(sending) < part_size:
                    break  # that was the short, last part
                filling = self._read_part(src, part_size, spare)
                digests.append(inflight.result())
                inflight = None
                spare, sending = sending, filling
                if not sending:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise StorageError(
                        f"{loc}: the stream is larger than {MAX_PARTS} parts of {part_size} "
                        f"bytes ({MAX_PARTS * part_size} bytes)",
                        hint="pass a size hint, or raise storage.part_size_mib",
                    )
            if inflight is not None:
                digests.append(inflight.result())
                inflight = None
            del sending, spare
            info = self._complete(key, full, upload_id, digests, total, if_absent)
        except BaseException as e:
            self._abort_after_failure(full, upload_id, inflight)
            if isinstance(e, ObjectExistsError | StorageError):
                raise
            if isinstance(e, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError):
                raise self._error(e, "multipart upload", full) from e
            raise  # the source's own error, Ctrl-C, ...
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return info

    def _abort_lost_creates(self, full: str, ours: str, elapsed: float) -> None:
        """CreateMultipartUpload needed a retry: an earlier attempt may have opened an
        upload whose answer (its UploadId) was lost, which nothing would ever abort.
        Abort the other uploads of exactly this key that the server opened while the
        retries ran (at most *elapsed* seconds before ours, by the server's own clock).
        Never raises: a leftover is logged, and `vkbackup prune` removes it."""
        loc = self._loc(full)
        try:
            page = self._call(
                lambda: self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full),
                f"ListMultipartUploads {loc}",
            )
            uploads = [u for u in page.get("Uploads", []) if u.get("Key") == full]
            mine = next((u for u in uploads if u.get("UploadId") == ours), None)
            if mine is None:
                return  # not listed yet: prune deals with any leftover
            # opened after our first try began, so before ours; "Initiated" has 1 s steps
            earliest = mine["Initiated"] - timedelta(seconds=elapsed + 1)
            lost = [
                u["UploadId"]
                for u in uploads
                if u["UploadId"] != ours and earliest <= u["Initiated"] <= mine["Initiated"]
            ]
        except Exception as e:
            log.warning("%s: could not look for uploads a retried create left open: %s", loc, e)
            return
        for upload_id in lost:
            try:
                self.abort_upload(self._strip(full), upload_id)
                log.info("%s: aborted upload %s (its create's answer was lost)", loc, upload_id)
            except StorageError as e:
                log.warning("%s: could not abort upload %s: %s", loc, upload_id, e)

    def _complete(
        self,
        key: str,
        full: str,
        upload_id: str,
        digests: builtins.list[bytes],
        total: int,
        if_absent: bool,
    ) -> ObjectInfo:
        loc = self._loc(full)
        etag = multipart_etag(digests)
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full,
            "UploadId": upload_id,
            "MultipartUpload": {
                "Parts": [
                    {"PartNumber": i + 1, "ETag": f'"{d.hex()}"'} for i, d in enumerate(digests)
                ]
            },
        }
        if if_absent:
            request["IfNoneMatch"] = "*"
        resp = self._create(
            "CompleteMultipartUpload",
            lambda: self.client.complete_multipart_upload(**request),
            full,
            etag,
            total,
            if_absent=if_absent,
            landed_codes=("NoSuchUpload", "PreconditionFailed"),
        )
        got = str(resp.get("ETag", "")).strip('"')
        if got and got != etag:
            log.debug("%s: ETag %s, expected %s (provider-specific ETags)", loc, got, etag)
        log.debug("%s: %d parts, %d bytes", loc, len(digests), total)
        return ObjectInfo(key=key, size=total, modified=self._clock(), etag=got or etag)

    def _abort_after_failure(
        self, full: str, upload_id: str, inflight: Future[bytes] | None
    ) -> None:
        loc = self._loc(full)
        if inflight is not None and not inflight.cancel():
            with contextlib.suppress(BaseException):
                inflight.result(timeout=ABORT_WAIT)
        try:
            self.abort_upload(self._strip(full), upload_id)
            log.info("%s: upload failed; multipart upload %s aborted", loc, upload_id)
        except StorageError as e:
            log.error(
                "%s: could not abort multipart upload %s (%s): `vkbackup prune` or a "
                "lifecycle rule removes it",
                loc,
                upload_id,
                e,
            )

    # -- read, list, delete --------------------------------------------------

    def open(self, key: str) -> ReadStream:
        full = self._full(key)
        try:
            resp = self._call(
                lambda: self.client.get_object(Bucket=self.bucket, Key=full),
                f"GetObject {self._loc(full)}",
            )
        except Exception as e:
            raise self._error(e, "GetObject", full) from e
        return _S3ReadStream(self, full, resp)

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            resp = self._call(
                lambda: self.client.head_object(Bucket=self.bucket, Key=full),
                f"HeadObject {self._loc(full)}",
            )
        except Exception as e:
            err = self._error(e, "HeadObject", full)
            if isinstance(err, ObjectNotFoundError):
                return None
            raise err from e
        return ObjectInfo(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            modified=resp.get("LastModified"),
            etag=str(resp.get("ETag", "")).strip('"') or None,
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        s3_prefix = join_key(self.prefix, prefix) if self.prefix else prefix
        token: str | None = None
        while True:
            request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": s3_prefix}
            if token:
                request["ContinuationToken"] = token
            try:
                page = self._call(
                    _bind(self.client.list_objects_v2, request),
                    f"ListObjectsV2 {self._loc(s3_prefix)}",
                )
            except Exception as e:
                raise self._error(e, "ListObjectsV2", s3_prefix) from e
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=self._strip(obj["Key"]),
                    size=int(obj.get("Size", 0)),
                    modified=obj.get("LastModified"),
                    etag=str(obj.get("ETag", "")).strip('"') or None,
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self._call(
                lambda: self.client.delete_object(Bucket=self.bucket, Key=full),
                f"DeleteObject {self._loc(full)}",
            )
        except Exception as e:
            err = self._error(e, "DeleteObject", full)
            if isinstance(err, ObjectNotFoundError):
                return
            raise err from e

    def retention_until(self, key: str) -> datetime | None:
        full = self._full(key)
        try:
            resp = self._call(
                lambda: self.client.get_object_retention(Bucket=self.bucket, Key=full),
                f"GetObjectRetention {self._loc(full)}",
            )
        except Exception as e:
            if _code(e) in NO_LOCK_CODES:
                if self.head(key) is None:
                    raise ObjectNotFoundError(f"{self._loc(full)}: no such object") from e
                return None
            raise self._error(e, "GetObjectRetention", full) from e
        until = (resp.get("Retention") or {}).get("RetainUntilDate")
        return until if isinstance(until, datetime) else None

    def extend_retention(self, key: str) -> datetime | None:
        """Make *key*'s Object Lock retention last at least storage.object_lock.days
        from now (an object a new snapshot references must outlive it), never
        shortening it and keeping its mode (a COMPLIANCE lock stays COMPLIANCE);
        return the retain-until in force (None without object_lock)."""
        if self.object_lock is None:
            return None
        want = self._clock() + timedelta(days=self.object_lock.days)
        full = self._full(key)
        try:
            resp = self._call(
                lambda: self.client.get_object_retention(Bucket=self.bucket, Key=full),
                f"GetObjectRetention {self._loc(full)}",
            )
            current = resp.get("Retention") or {}
        except Exception as e:
            if _code(e) not in NO_LOCK_CODES:
                raise self._error(e, "GetObjectRetention", full) from e
            current = {}
        have = current.get("RetainUntilDate")
        if isinstance(have, datetime) and have >= want:
            return have
        mode = str(current.get("Mode") or self.object_lock.mode).upper()
        retention = {"Mode": mode, "RetainUntilDate": want}
        try:
            self._call(  # idempotent: retried like a read
                lambda: self.client.put_object_retention(
                    Bucket=self.bucket, Key=full, Retention=retention
                ),
                f"PutObjectRetention {self._loc(full)}",
            )
        except Exception as e:
            raise self._error(e, "PutObjectRetention", full) from e
        return want

    def list_incomplete_uploads(self) -> builtins.list[tuple[str, str, datetime]]:
        out: builtins.list[tuple[str, str, datetime]] = []
        request: dict[str, Any] = {"Bucket": self.bucket}
        if self.prefix:
            request["Prefix"] = self.prefix + "/"
        while True:
            try:
                page = self._call(
                    _bind(self.client.list_multipart_uploads, request),
                    f"ListMultipartUploads {self._loc(self.prefix)}",
                )
            except Exception as e:
                raise self._error(e, "ListMultipartUploads", self.prefix) from e
            for up in page.get("Uploads", []):
                out.append((self._strip(up["Key"]), up["UploadId"], up["Initiated"]))
            if not page.get("IsTruncated"):
                return out
            request["KeyMarker"] = page.get("NextKeyMarker", "")
            request["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    def abort_upload(self, key: str, upload_id: str) -> None:
        full = self._full(key)
        try:
            self._call(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id
                ),
                f"AbortMultipartUpload {self._loc(full)} {upload_id}",
            )
        except Exception as e:
            if _code(e) == "NoSuchUpload":
                return
            raise self._error(e, "AbortMultipartUpload", full) from e


class _S3ReadStream:
    """A GetObject body that resumes at its offset after a transient failure."""

    def __init__(self, storage: S3Storage, full: str, resp: dict[str, Any]) -> None:
        self._s = storage
        self._full = full
        self._body: Any = resp["Body"]
        self._etag: str | None = resp.get("ETag")
        self._size = int(resp.get("ContentLength", 0))
        self._pos = 0
        self._closed = False

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        failures = 0
        while True:
            try:
                if self._body is None:
                    self._reopen()
                data: bytes = self._body.read(n)
                self._pos += len(data)
                return data
            except StorageError:
                raise
            except Exception as e:
                if not retry.is_transient(e) or failures + 1 >= self._s.policy.max_attempts:
                    raise self._s._error(e, "GetObject (read)", self._full) from e
                failures += 1
                delay = retry.backoff_delay(failures, self._s.policy)
                log.warning(
                    "%s: read failed at byte %d: %s; resuming %d/%d in %.1fs",
                    self._s._loc(self._full),
                    self._pos,
                    retry.describe_error(e),
                    failures,
                    self._s.policy.max_attempts - 1,
                    delay,
                )
                if self._body is not None:
                    with contextlib.suppress(Exception):
                        self._body.close()
                    self._body = None
                self._s.policy.sleep(delay)

    def _reopen(self) -> None:
        """Open the object again at the current offset (same ETag only)."""
        request: dict[str, Any] = {"Bucket": self._s.bucket, "Key": self._full}
        if self._pos >= self._size:
            self._body = _Empty()
            return
        if self._pos:
            request["Range"] = f"bytes={self._pos}-"
        if self._etag:
            request["IfMatch"] = self._etag
        try:
            resp = self._s.client.get_object(**request)
        except botocore.exceptions.ClientError as e:
            if _code(e) == "PreconditionFailed":
                raise StorageError(
                    f"{self._s._loc(self._full)}: the object changed while it was being read"
                ) from e
            raise
        self._body = resp["Body"]

    def __enter__(self) -> _S3ReadStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._body.close()


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        return None
