"""`vkbackup storage check`: probe the configured storage and report what works.

The report is a list of checks, each "ok", "fail", "warn", "info" or "skip";
a failed probe is a row, never an exception, and the storage is usable when
no *required* check failed. Later probes that an earlier required failure
makes meaningless are reported as skipped, not run.

Every probe object lives under ``_vkbackup-check/<time>-<random>/`` and is
deleted at the end. Probes, in order (required ones marked *):
    reach*          S3: HeadBucket; local: the directory exists or can be made
    write*          a small object
    read back*      byte-identical
    list*           the probe is listed under its prefix
    conditional create*   a second if_absent put is refused (host locks need it)
    multipart*      S3: a stream over one part (two parts)
    large write*    local: a 6 MiB stream
    delete*         the probe objects are gone afterwards
    checksums       S3: Content-MD5 accepted* / a wrong one rejected / CRC32 header
    versioning      S3: bucket versioning state
    object lock     S3: bucket lock state; with storage.object_lock: enabled*,
                    retention on new objects*, locked delete refused*
    incomplete uploads   leftovers of interrupted uploads
    free space      local: space left on the filesystem

With Object Lock, probe objects are written with a 1-day retention: their
versions stay (hidden behind delete markers) until it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from vkbackup.config.model import StorageConfig
from vkbackup.errors import ObjectExistsError, StorageError, VkError
from vkbackup.retry import describe_error
from vkbackup.storage import open_storage
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader

if TYPE_CHECKING:
    from vkbackup.storage.s3 import S3Storage

PROBE_PREFIX = "_vkbackup-check"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    required: bool
    detail: str
    hint: str | None = None
    seconds: float = 0.0


@dataclass
class CheckReport:
    target: str
    backend: str
    checks: list[Check] = field(default_factory=list)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.required and c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed()

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "backend": self.backend,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
        }


class _Stop(Exception):
    """A required probe failed in a way that makes the later ones meaningless."""


class _Runner:
    def __init__(self, report: CheckReport) -> None:
        self.report = report

    def add(
        self,
        name: str,
        status: str,
        detail: str,
        *,
        required: bool = False,
        hint: str | None = None,
        seconds: float = 0.0,
    ) -> None:
        self.report.checks.append(Check(name, status, required, detail, hint, round(seconds, 3)))

    @contextlib.contextmanager
    def probe(self, name: str, *, required: bool = True, fatal: bool = False) -> Iterator[_Slot]:
        """Time a probe; an exception marks it failed (with the error's hint)."""
        slot = _Slot()
        t0 = time.monotonic()
        try:
            yield slot
        except VkError as e:
            self.add(
                name,
                "fail" if required else "warn",
                str(e),
                required=required,
                hint=e.hint or slot.hint,
                seconds=time.monotonic() - t0,
            )
            if fatal:
                raise _Stop from e
            return
        except Exception as e:
            self.add(
                name,
                "fail" if required else "warn",
                describe_error(e),
                required=required,
                hint=slot.hint,
                seconds=time.monotonic() - t0,
            )
            if fatal:
                raise _Stop from e
            return
        self.add(
            name,
            slot.status,
            slot.detail,
            required=required,
            hint=slot.hint,
            seconds=time.monotonic() - t0,
        )


@dataclass
class _Slot:
    status: str = "ok"
    detail: str = ""
    hint: str | None = None

    def set(self, status: str, detail: str, hint: str | None = None) -> None:
        self.status, self.detail, self.hint = status, detail, hint


class _Source:
    """A stream of *size* pseudo-random bytes in 1 MiB reads, hashed as it goes."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.sha = hashlib.sha256()
        self._block = os.urandom(MIB)

    def read(self, n: int = -1, /) -> bytes:
        n = min(n if n > 0 else MIB, self.remaining, MIB)
        data = self._block[:n]
        self.remaining -= n
        self.sha.update(data)
        return data


def _sha_of(storage: Storage, key: str) -> str:
    h = hashlib.sha256()
    with storage.open(key) as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def run_storage_check(
    cfg: StorageConfig,
    storage: Storage | None = None,
    *,
    probe_part_size: int = 5 * MIB,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CheckReport:
    """Given the storage config (and optionally the backend built from it), probe
    it and return the report. Raises nothing for failed probes: they are rows."""
    from vkbackup.storage import s3_probes
    from vkbackup.storage.local import LocalStorage
    from vkbackup.storage.s3 import S3Storage

    store = storage if storage is not None else open_storage(cfg)
    target = store.describe()
    if isinstance(store, S3Storage) and store.endpoint_url:
        target += f" (endpoint {store.endpoint_url})"
    report = CheckReport(target=target, backend=cfg.type)
    run = _Runner(report)
    stamp = clock().strftime("%Y%m%dT%H%M%SZ")
    prefix = f"{PROBE_PREFIX}/{stamp}-{secrets.token_hex(3)}/"
    written: list[str] = []

    s3: S3Storage | None = None
    if isinstance(store, S3Storage):
        # a private copy: small parts, and probes kept 1 day, not the configured days
        s3 = s3_probes.probe_storage(store, probe_part_size)
        store = s3

    try:
        _reach(run, store, s3)
        if s3 is not None:
            _bucket_state(run, cfg, s3)
        _basic(run, store, prefix, written, local=s3 is None)
        _multipart(run, store, s3, prefix, written)
        if s3 is not None:
            _checksums(run, s3, prefix, written)
            if cfg.object_lock is not None:
                _lock_probes(run, s3, prefix, clock)
        _delete(run, store, written)
        written.clear()
        _leftovers(run, store)
        if isinstance(store, LocalStorage):
            _free_space(run, store)
    except _Stop:
        for name in _remaining_names(report, s3 is not None):
            run.add(name, "skip", "not run: an earlier required probe failed")
    finally:
        for key in written:
            with contextlib.suppress(Exception):
                store.delete(key)
    return report


def _remaining_names(report: CheckReport, is_s3: bool) -> list[str]:
    names = ["write", "read back", "list", "conditional create"]
    if is_s3:
        names = ["versioning", "object lock", *names, "multipart", "checksums"]
    else:
        names.append("large write")
    names.append("delete")
    done = {c.name for c in report.checks}
    return [n for n in names if n not in done]


def _reach(run: _Runner, store: Storage, s3: S3Storage | None) -> None:
    with run.probe("reach", fatal=True) as slot:
        if s3 is not None:
            from vkbackup.storage import s3_probes

            s3_probes.check_bucket(s3)
            slot.set("ok", f"bucket {s3.bucket} answers")
        else:
            root = getattr(store, "root", None)
            if root is not None:
                if getattr(store, "create", True):
                    root.mkdir(mode=0o700, parents=True, exist_ok=True)
                else:  # a copy's directory is never created: a missing one is reported
                    store.head(f"{PROBE_PREFIX}/reach")  # StorageUnreachableError naming it
                if not os.access(root, os.W_OK | os.X_OK):
                    raise PermissionError(13, "not writable", str(root))
            slot.set("ok", f"directory {store.describe()} is there")


def _basic(run: _Runner, store: Storage, prefix: str, written: list[str], *, local: bool) -> None:
    key = prefix + "probe.txt"
    body = f"vkbackup storage check {prefix}\n".encode()
    with run.probe("write", fatal=True) as slot:
        store.put(key, BytesReader(body))
        written.append(key)
        slot.set("ok", f"{len(body)} bytes to {key}")
    with run.probe("read back", fatal=True) as slot:
        with store.open(key) as f:
            got = f.read()
        if got != body:
            raise _mismatch(key, len(body), len(got))
        slot.set("ok", "identical")
    with run.probe("list") as slot:
        keys = [o.key for o in store.list(prefix)]
        if key not in keys:
            slot.set(
                "fail",
                f"{key} missing from the listing of {prefix} ({len(keys)} keys)",
                "the provider's listing is not read-after-write consistent, or the "
                "credentials lack s3:ListBucket",
            )
        else:
            slot.set("ok", f"{len(keys)} key(s) under the probe prefix")
    lock_key = prefix + "lock"
    with run.probe("conditional create") as slot:
        store.put(lock_key, BytesReader(b"first"), if_absent=True)
        written.append(lock_key)
        try:
            store.put(lock_key, BytesReader(b"second"), if_absent=True)
        except ObjectExistsError:
            how = "O_EXCL/link" if local else "If-None-Match: *"
            slot.set("ok", f"a second create of the same key is refused ({how})")
        else:
            slot.set(
                "fail",
                "a second create-if-absent overwrote the object",
                "the provider ignores If-None-Match: *; host locks cannot be trusted here "
                "(see docs/storage-providers.md)",
            )


def _mismatch(key: str, want: int, got: int) -> VkError:
    from vkbackup.errors import IntegrityError

    return IntegrityError(f"{key}: read back {got} bytes that differ from the {want} written")


def _multipart(
    run: _Runner, store: Storage, s3: S3Storage | None, prefix: str, written: list[str]
) -> None:
    key = prefix + "multipart.bin"
    size = (s3.part_size if s3 is not None and s3.part_size else 5 * MIB) + MIB
    with run.probe("multipart" if s3 is not None else "large write") as slot:
        src = _Source(size)
        info = store.put(key, src)
        written.append(key)
        if info.size != size or _sha_of(store, key) != src.sha.hexdigest():
            raise _mismatch(key, size, info.size)
        how = "uploaded in 2 parts" if s3 is not None else "streamed"
        slot.set("ok", f"{size} bytes {how}, read back identical")


def _checksums(run: _Runner, s3: S3Storage, prefix: str, written: list[str]) -> None:
    from vkbackup.storage import s3_probes

    key = prefix + "checksum.txt"
    with run.probe("checksums") as slot:
        probe = s3_probes.probe_checksums(s3, key)
        written.append(key)
        notes = []
        status = "ok"
        hint = None
        if not probe.md5_accepted:
            status = "fail"
            hint = "the provider refuses Content-MD5, which vkbackup sends on every write"
        if not probe.bad_md5_rejected:
            status = "warn" if status == "ok" else status
            notes.append("a wrong Content-MD5 was NOT rejected")
            hint = hint or (
                "the provider does not verify uploads; corruption in transit is caught only "
                "by `vkbackup verify` (manifest sha256)"
            )
        else:
            notes.append("wrong Content-MD5 rejected")
        notes.append(
            "CRC32 header accepted"
            if probe.crc32_accepted
            else "CRC32 header refused (fine: vkbackup sends checksums only when required)"
        )
        if probe.detail:
            notes.append(probe.detail)
        slot.set(status, "; ".join(notes), hint)


def _bucket_state(run: _Runner, cfg: StorageConfig, s3: S3Storage) -> None:
    from vkbackup.storage import s3_probes

    with run.probe("versioning", required=False) as slot:
        state = s3_probes.versioning_status(s3)
        hint = None
        if state != "Enabled" and cfg.object_lock is None:
            hint = (
                "optional: versioning + Object Lock protect backups from a stolen key "
                "(see docs/storage-providers.md)"
            )
        slot.set("info", state, hint)
    want = cfg.object_lock
    # Without the lock the configured puts cannot work: stop with the real reason.
    with run.probe("object lock", required=want is not None, fatal=want is not None) as slot:
        status = s3_probes.object_lock_status(s3)
        if want is None:
            if status.enabled:
                default = (
                    f"{status.default_mode} {status.default_days or status.default_years}"
                    f"{'d' if status.default_days else 'y'}"
                    if status.default_mode
                    else "no default retention"
                )
                slot.set(
                    "warn",
                    f"the bucket has Object Lock ({default}) but storage.object_lock is not set",
                    "set [storage.object_lock] mode and days so every object carries its retention",
                )
            else:
                slot.set("info", "not enabled on the bucket, not configured")
            return
        if not status.enabled:
            raise StorageError(
                f"storage.object_lock is set ({want.mode}, {want.days} days) but bucket "
                f"{s3.bucket} has no Object Lock",
                hint="Object Lock is chosen when a bucket is created: create a new bucket "
                "with Object Lock enabled, or remove [storage.object_lock]",
            )
        slot.set("ok", f"enabled on the bucket; objects get {want.mode} for {want.days} days")


def _lock_probes(run: _Runner, s3: S3Storage, prefix: str, clock: Callable[[], datetime]) -> None:
    from vkbackup.storage import s3_probes

    key = prefix + "probe.txt"
    with run.probe("object lock: retention") as slot:
        until = s3.retention_until(key)
        expected = clock() + timedelta(days=1)
        if until is None:
            slot.set(
                "fail",
                f"{key}: no retention on a new object",
                "the provider ignored ObjectLockMode/RetainUntilDate",
            )
        elif abs((until - expected).total_seconds()) > 3600:
            slot.set("fail", f"{key}: retain-until {until}, expected about {expected}")
        else:
            slot.set("ok", f"probe retained until {until:%Y-%m-%d %H:%M} UTC")
    with run.probe("object lock: delete refused") as slot:
        if s3_probes.probe_locked_delete(s3, key):
            slot.set("ok", "deleting the locked version was refused")
        else:
            slot.set(
                "fail",
                "a locked object version could be deleted",
                "the lock is not enforced (or these credentials may bypass governance "
                "mode); use compliance mode or credentials without BypassGovernanceRetention",
            )


def _delete(run: _Runner, store: Storage, written: list[str]) -> None:
    with run.probe("delete") as slot:
        for key in written:
            store.delete(key)
        left = [k for k in written if store.head(k) is not None]
        if left:
            slot.set("fail", f"still there after delete: {', '.join(left)}")
        else:
            slot.set("ok", f"{len(written)} probe object(s) deleted")


def _leftovers(run: _Runner, store: Storage) -> None:
    with run.probe("incomplete uploads", required=False) as slot:
        ups = store.list_incomplete_uploads()
        if not ups:
            slot.set("ok", "none")
            return
        oldest = min(t for _, _, t in ups)
        slot.set(
            "warn",
            f"{len(ups)} interrupted upload(s), oldest from {oldest:%Y-%m-%d %H:%M}",
            "they cost storage: `vkbackup prune` removes old ones; on S3 also add a "
            "lifecycle rule AbortIncompleteMultipartUpload",
        )


def _free_space(run: _Runner, store: Any) -> None:
    with run.probe("free space", required=False) as slot:
        usage = shutil.disk_usage(store.root)
        free_gib = usage.free / (1024**3)
        detail = f"{free_gib:.1f} GiB free of {usage.total / (1024**3):.1f} GiB"
        if free_gib < 1:
            slot.set("warn", detail, "less than 1 GiB left for backups")
        else:
            slot.set("info", detail)
