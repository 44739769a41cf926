"""Local-directory storage: each key is a file under a root directory.

put() streams into a temporary file in the destination directory
(``.vkbackup-tmp.<name>.<random>``, mode 0600), fsyncs it, then makes it
visible in one step: os.replace() (overwrite), or os.link() for
``if_absent=True`` (fails with EEXIST if the key exists: a conditional create
that is atomic on a local filesystem, so it can hold locks). Then the
directory is fsynced so the new name survives a crash. On any failure
(disk full, interrupted, source error) the temporary file is removed and the
key is untouched.

Temporary files are never listed. A crash (SIGKILL, power loss) can leave
one behind: list_incomplete_uploads() reports them as (key, temp path,
modified time) and abort_upload(key, temp path) removes them, mirroring
S3 incomplete multipart uploads.

Directories are created 0700. delete() removes empty parent directories up to
the root. The root itself is created only by a store opened with
``create=True`` (the default here; the CLI opens its storage so for `snapshot`
and `storage check` of [storage] only, never a [[copies]] directory): opened
with ``create=False``, every operation on a root that does not exist raises
StorageUnreachableError naming it (exit 10), so a reader never takes a missing
or unmounted backup directory for an empty one, and a copy never fills the
mount point of an unmounted disk.
There is no Object Lock here: retention_until() is None for every object
(ObjectNotFoundError for a missing key, as in S3).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from vkbackup.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StorageUnreachableError,
)
from vkbackup.storage.base import ObjectInfo, ReadStream, validate_key
from vkbackup.streams import CHUNK, Readable

log = logging.getLogger("vkbackup.storage.local")

TEMP_MARK = ".vkbackup-tmp."  # name prefix of files being written (reserved in keys)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hint_for(err: OSError) -> str | None:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk holding the backup directory is full: free space or move storage.path"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "vkbackup cannot write there: check ownership, mode and mount options"
    if err.errno == errno.EFBIG:
        return "the file size limit (ulimit -f) or the filesystem's maximum file size was hit"
    return None


class LocalStorage:
    """`vkbackup.storage.base.Storage` in the directory *root*; with *create*
    False, *root* must exist (see the module docstring). *copy_name*: the
    [[copies]] table whose directory this is (None: [storage]), for the
    error when it is missing."""

    def __init__(self, root: Path, *, create: bool = True, copy_name: str | None = None) -> None:
        self.root = Path(root)
        self.create = create
        self.copy_name = copy_name
        self._root_seen = False

    # -- helpers -------------------------------------------------------------

    def _need_root(self) -> None:
        """Raise StorageUnreachableError if the root is missing and may not be created."""
        if self._root_seen or self.create:
            return
        if self.root.is_dir():
            self._root_seen = True
            return
        what = "is not a directory" if self.root.exists() else "does not exist"
        if self.copy_name is not None:
            raise StorageUnreachableError(
                f"{self.root}: the directory of the copy {self.copy_name!r} {what} "
                "(its path in [[copies]])",
                hint="mount the disk that holds it, or fix the path; a new copy's directory "
                f"is made by hand (mkdir -m 700 {self.root}): vkbackup never creates it, so "
                "an unmounted disk's mount point is not filled instead",
            )
        raise StorageUnreachableError(
            f"{self.root}: the storage directory {what} (storage.path)",
            hint="mount the disk that holds it, or fix storage.path; only a snapshot "
            "creates the directory",
        )

    def _path(self, key: str) -> Path:
        self._need_root()
        validate_key(key)
        if any(seg.startswith(TEMP_MARK) for seg in key.split("/")):
            raise StorageError(f"object key {key!r}: names starting {TEMP_MARK!r} are reserved")
        return self.root.joinpath(*key.split("/"))

    def _error(self, what: str, key: str, err: OSError) -> StorageError:
        reason = err.strerror or str(err)
        return StorageError(
            f"{self.root / key}: {what} failed: {reason} (errno {err.errno})",
            hint=_hint_for(err),
        )

    def _makedirs(self, d: Path) -> None:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- Storage -------------------------------------------------------------

    def describe(self) -> str:
        return str(self.root)

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        """Given a key and a stream, store the stream's bytes under the key,
        atomically. Raise ObjectExistsError (if_absent) or StorageError."""
        final = self._path(key)
        tmp: Path | None = None
        try:
            self._makedirs(final.parent)
            if if_absent and final.exists():
                raise ObjectExistsError(f"{final}: object already exists (key {key!r})")
            tmp = final.with_name(f"{TEMP_MARK}{final.name}.{secrets.token_hex(6)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            size = 0
            with os.fdopen(fd, "wb", buffering=0) as f:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        n = f.write(view)
                        view = view[n or 0 :]
                    size += len(chunk)
                os.fsync(f.fileno())
            if if_absent:
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    raise ObjectExistsError(
                        f"{final}: object already exists (key {key!r})"
                    ) from None
                os.unlink(tmp)
            else:
                os.replace(tmp, final)
            tmp = None
            _fsync_dir(final.parent)
        except OSError as e:
            raise self._error("write", key, e) from e
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        st = final.stat()
        return ObjectInfo(key=key, size=size, modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def open(self, key: str) -> ReadStream:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"{path}: no such object (key {key!r})") from None
        except IsADirectoryError:
            raise ObjectNotFoundError(f"{path}: is a directory, not an object") from None
        except OSError as e:
            raise self._error("open", key, e) from e

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise self._error("stat", key, e) from e
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(
            key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)
        )

    def _walk(self, prefix: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        """Yield (relative name, path, stat) for every regular file (temporaries
        too) under the directory that holds *prefix*."""
        self._need_root()
        start_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*start_rel.split("/")) if start_rel else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start, onerror=self._walk_error):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                p = Path(dirpath, name)
                try:
                    st = p.lstat()
                except FileNotFoundError:
                    continue  # deleted while listing
                if stat.S_ISREG(st.st_mode):
                    yield rel, p, st

    def _walk_error(self, err: OSError) -> None:
        raise StorageError(
            f"{err.filename}: cannot list: {err.strerror} (errno {err.errno})",
            hint=_hint_for(err),
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for rel, _p, st in self._walk(prefix):
            if not rel.startswith(prefix) or rel.rpartition("/")[2].startswith(TEMP_MARK):
                continue
            yield ObjectInfo(
                key=rel, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)
            )

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise self._error("delete", key, e) from e
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, d: Path) -> None:
        root = self.root.resolve()
        while d.resolve() != root and root in d.resolve().parents:
            try:
                d.rmdir()
            except OSError:
                return  # not empty (or gone): stop
            d = d.parent

    def extend_retention(self, key: str) -> datetime | None:
        """A directory has no Object Lock: nothing to extend."""
        return None

    def retention_until(self, key: str) -> datetime | None:
        if self.head(key) is None:
            raise ObjectNotFoundError(f"{self._path(key)}: no such object (key {key!r})")
        return None

    def list_incomplete_uploads(self) -> builtins.list[tuple[str, str, datetime]]:
        out: builtins.list[tuple[str, str, datetime]] = []
        for rel, p, st in self._walk(""):
            head, _, name = rel.rpartition("/")
            if not name.startswith(TEMP_MARK):
                continue
            base = name[len(TEMP_MARK) :].rsplit(".", 1)[0]
            key = f"{head}/{base}" if head else base
            out.append((key, str(p), datetime.fromtimestamp(st.st_mtime, UTC)))
        return out

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Remove a leftover temporary file reported by list_incomplete_uploads."""
        p = Path(upload_id)
        root = self.root.resolve()
        if not p.name.startswith(TEMP_MARK) or root not in p.resolve().parents:
            raise StorageError(f"{upload_id}: not a vkbackup temporary file under {self.root}")
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
