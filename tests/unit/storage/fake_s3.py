"""A small in-memory stand-in for a boto3 S3 client, for unit tests of the upload logic.

It checks what a real server checks that matters here (Content-MD5 of every
body, If-None-Match, part order) and records every call. Failures are
injected per operation: `fake.fail["UploadPart"] = [exc, None, ...]` raises
exc on the next call, None lets one call through.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions


def client_error(code: str, status: int, op: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (fake)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


def md5_b64(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class FakeBody:
    """A GetObject body; can die with *error* after *fail_after* bytes."""

    def __init__(self, data: bytes, fail_after: int | None = None, error: Exception | None = None):
        self._f = io.BytesIO(data)
        self._fail_after = fail_after
        self._error = error
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self._f.tell() >= self._fail_after:
            assert self._error is not None
            raise self._error
        if self._fail_after is not None:
            n = min(n, self._fail_after - self._f.tell())
        return self._f.read(n)

    def close(self) -> None:
        self.closed = True


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.upload_keys: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, list[Exception | None]] = {}
        self.hooks: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.bodies: list[FakeBody] = []
        self.get_fail: list[tuple[int, Exception]] = []  # (after bytes, error) per GetObject
        self._n = 0

    def _enter(self, op: str, kw: dict[str, Any]) -> None:
        self.calls.append((op, dict(kw)))
        if op in self.hooks:
            self.hooks[op](kw)
        queue = self.fail.get(op)
        if queue:
            exc = queue.pop(0)
            if exc is not None:
                raise exc

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    def _check_md5(self, op: str, kw: dict[str, Any]) -> None:
        if "ContentMD5" in kw and kw["ContentMD5"] != md5_b64(kw["Body"]):
            raise client_error("BadDigest", 400, op)

    # -- writes --
    def put_object(self, **kw: Any) -> dict[str, Any]:
        self._enter("PutObject", kw)
        self._check_md5("PutObject", kw)
        key = kw["Key"]
        if kw.get("IfNoneMatch") == "*" and key in self.objects:
            raise client_error("PreconditionFailed", 412, "PutObject")
        body = bytes(kw["Body"])
        self.objects[key] = body
        self.etags[key] = hashlib.md5(body).hexdigest()
        post = self.fail.get("PutObject:after")
        if post:
            exc = post.pop(0)
            if exc is not None:
                raise exc  # stored, but the response is lost
        return {"ETag": f'"{self.etags[key]}"'}

    def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._enter("CreateMultipartUpload", kw)
        self._n += 1
        uid = f"upload-{self._n}"
        self.uploads[uid] = {}
        self.upload_keys[uid] = kw["Key"]
        return {"UploadId": uid}

    def upload_part(self, **kw: Any) -> dict[str, Any]:
        self._enter("UploadPart", kw)
        self._check_md5("UploadPart", kw)
        if kw["UploadId"] not in self.uploads:
            raise client_error("NoSuchUpload", 404, "UploadPart")
        assert len(kw["Body"]) == kw["ContentLength"]
        self.uploads[kw["UploadId"]][kw["PartNumber"]] = bytes(kw["Body"])
        return {"ETag": f'"{hashlib.md5(kw["Body"]).hexdigest()}"'}

    def complete_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._enter("CompleteMultipartUpload", kw)
        uid = kw["UploadId"]
        if uid not in self.uploads:
            raise client_error("NoSuchUpload", 404, "CompleteMultipartUpload")
        key = kw["Key"]
        if kw.get("IfNoneMatch") == "*" and key in self.objects:
            raise client_error("PreconditionFailed", 412, "CompleteMultipartUpload")
        parts = kw["MultipartUpload"]["Parts"]
        stored = self.uploads[uid]
        assert [p["PartNumber"] for p in parts] == sorted(stored)
        digests = b""
        for p in parts:
            data = stored[p["PartNumber"]]
            assert p["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            digests += hashlib.md5(data).digest()
        self.objects[key] = b"".join(stored[p["PartNumber"]] for p in parts)
        self.etags[key] = f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"
        del self.uploads[uid]
        post = self.fail.get("CompleteMultipartUpload:after")
        if post:
            exc = post.pop(0)
            if exc is not None:
                raise exc
        return {"ETag": f'"{self.etags[key]}"'}

    def abort_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self._enter("AbortMultipartUpload", kw)
        if kw["UploadId"] not in self.uploads:
            raise client_error("NoSuchUpload", 404, "AbortMultipartUpload")
        del self.uploads[kw["UploadId"]]
        return {}

    def delete_object(self, **kw: Any) -> dict[str, Any]:
        self._enter("DeleteObject", kw)
        self.objects.pop(kw["Key"], None)
        return {}

    # -- reads --
    def head_object(self, **kw: Any) -> dict[str, Any]:
        self._enter("HeadObject", kw)
        key = kw["Key"]
        if key not in self.objects:
            raise client_error("404", 404, "HeadObject")
        return {
            "ContentLength": len(self.objects[key]),
            "ETag": f'"{self.etags[key]}"',
            "LastModified": datetime(2026, 1, 1, tzinfo=UTC),
        }

    def get_object(self, **kw: Any) -> dict[str, Any]:
        self._enter("GetObject", kw)
        key = kw["Key"]
        if key not in self.objects:
            raise client_error("NoSuchKey", 404, "GetObject")
        if "IfMatch" in kw and kw["IfMatch"] != f'"{self.etags[key]}"':
            raise client_error("PreconditionFailed", 412, "GetObject")
        data = self.objects[key]
        if "Range" in kw:
            start = int(kw["Range"].removeprefix("bytes=").rstrip("-"))
            data = data[start:]
        fail_after, error = self.get_fail.pop(0) if self.get_fail else (None, None)
        body = FakeBody(data, fail_after, error)
        self.bodies.append(body)
        return {"Body": body, "ContentLength": len(data), "ETag": f'"{self.etags[key]}"'}

    def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        self._enter("ListObjectsV2", kw)
        keys = sorted(k for k in self.objects if k.startswith(kw.get("Prefix", "")))
        start = int(kw.get("ContinuationToken", 0))
        page = keys[start : start + 2]  # tiny pages to exercise pagination
        more = start + 2 < len(keys)
        out: dict[str, Any] = {
            "Contents": [{"Key": k, "Size": len(self.objects[k])} for k in page],
            "IsTruncated": more,
        }
        if more:
            out["NextContinuationToken"] = str(start + 2)
        return out

    def list_multipart_uploads(self, **kw: Any) -> dict[str, Any]:
        self._enter("ListMultipartUploads", kw)
        ups = [
            {
                "Key": self.upload_keys[u],
                "UploadId": u,
                "Initiated": datetime(2026, 1, 1, tzinfo=UTC),
            }
            for u in self.uploads
            if self.upload_keys[u].startswith(kw.get("Prefix", ""))
        ]
        return {"Uploads": ups, "IsTruncated": False}

    def get_object_retention(self, **kw: Any) -> dict[str, Any]:
        self._enter("GetObjectRetention", kw)
        raise client_error("ObjectLockConfigurationNotFoundError", 404, "GetObjectRetention")
