"""Pure planning of S3 multipart part sizes. No I/O.

S3 allows at most 10,000 parts of 5 MiB to 5 GiB each, and some providers
(Cloudflare R2) require every part but the last to have the same size. So the
part size is fixed for an upload and chosen before the first byte from a size
hint, with a safety margin because hints are estimates (a database size
before compression, a directory size before tar).
"""

from __future__ import annotations

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
# 8 MiB: objects of unknown size up to 80 GiB; two uploads in flight with two part
# buffers each stay under 150 MiB of RSS (measured in docs/benchmarks.md).
DEFAULT_PART_SIZE = 8 * MIB
HINT_SAFETY = 2  # a hint may be off by 2x and the upload still fits


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def max_object_size(part_size: int) -> int:
    """Given a part size in bytes, return the largest object it can upload."""
    return part_size * MAX_PARTS


def plan_part_size(size_hint: int | None, configured: int | None = None) -> int:
    """Given an expected object size (or None) and a configured part size in
    bytes (storage.part_size_mib, or None: DEFAULT_PART_SIZE), return the part
    size in bytes for one multipart upload: a multiple of 1 MiB, at least
    MIN_PART_SIZE and the configured size, grown so that HINT_SAFETY x
    size_hint fits in MAX_PARTS parts (MAX_PART_SIZE when only the hint itself
    fits). Raise ValueError if the configured size is outside the S3 limits or
    the hinted size cannot fit in MAX_PARTS parts of MAX_PART_SIZE."""
    if configured is not None and configured < MIN_PART_SIZE:
        raise ValueError(f"part size {configured} is below the S3 minimum of {MIN_PART_SIZE}")
    if configured is not None and configured > MAX_PART_SIZE:
        raise ValueError(f"part size {configured} is above the S3 maximum of {MAX_PART_SIZE}")
    part = configured if configured is not None else DEFAULT_PART_SIZE
    if size_hint is not None and size_hint > 0:
        needed = _ceil_div(size_hint * HINT_SAFETY, MAX_PARTS)
        if needed > part:
            part = needed
    part = _ceil_div(part, MIB) * MIB
    part = max(part, MIN_PART_SIZE)
    if part > MAX_PART_SIZE:
        if size_hint is not None and size_hint <= max_object_size(MAX_PART_SIZE):
            return MAX_PART_SIZE  # fits without the safety margin
        raise ValueError(
            f"an object of about {size_hint} bytes does not fit in {MAX_PARTS} parts "
            f"of at most {MAX_PART_SIZE} bytes"
        )
    return part
