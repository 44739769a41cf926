"""Storage whose records are signed on the way in and checked on the way out.

Records are the small JSON documents that say what exists and what it is:
manifests, verify records and drill records (`layout.is_record`). Whoever can
write them decides what `restore latest` brings back, which snapshot prune
keeps, and whether a drill warning is silenced. Data objects need no
signature of their own: each manifest pins their size and sha256, and the
manifest is signed.

Why a wrapper around `Storage` and not a check in each reader: every command
gets its storage from the composition root (`cli/context.py`), so once this
wraps it there is no reader that can forget the check. Actions and catalogs
stay as they are and read records through `open`, which hands out the bytes
only after the signature checked.

- put(record): the whole record is read (records are bounded by
  `catalog.MANIFEST_LIMIT`), signed over its exact bytes in OpenSSH's format
  (`vkbackup.sshsig`), and the signature is stored at KEY.sig *before* the
  record, so a record is never visible without its signature. With [signing]
  configured but no key here, writing a record is refused (ConfigError): an
  unsigned record would be refused by every reader.
- open(record): with [signing] configured, a missing, malformed or bad
  signature, or one by an untrusted key, is an IntegrityError naming the
  record. Without [signing], the bytes are handed out unchecked and a warning,
  once per process, says that anyone who can write to the storage could forge
  them.
- delete(record) removes the record, then its signature.

Everything else (data objects, locks, listings) passes straight through
(`vkbackup.storage.wrapper`).
"""

from __future__ import annotations

import io
import threading

from vkbackup import layout, sshsig
from vkbackup.catalog import MANIFEST_LIMIT, read_small
from vkbackup.errors import ConfigError, IntegrityError, ObjectNotFoundError
from vkbackup.logs import get_logger
from vkbackup.signing import Trust
from vkbackup.storage.base import ObjectInfo, ReadStream, Storage
from vkbackup.storage.wrapper import StorageWrapper
from vkbackup.streams import BytesReader, Readable

log = get_logger("signing")

RECORD_LIMIT = MANIFEST_LIMIT
SIGNATURE_LIMIT = sshsig.MAX_ARMORED

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_unsigned_once(where: str) -> None:
    with _warned_lock:
        if where in _warned:
            return
        _warned.add(where)
    log.warning(
        "%s: snapshots and records are not signed ([signing] is not configured): anyone "
        "with write access to the storage could forge, swap or re-date them. "
        "Run `vkbackup keys generate --signing --out PATH` and set [signing] key",
        where,
    )


class _Bytes(io.BytesIO):
    """A ReadStream over bytes already read and checked."""


class SignedStorage(StorageWrapper):
    """A Storage whose records are signed and checked with *trust*."""

    def __init__(self, inner: Storage, trust: Trust) -> None:
        super().__init__(inner)
        self.trust = trust

    # records -------------------------------------------------------------

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        if not layout.is_record(key):
            return self.inner.put(key, src, size_hint=size_hint, if_absent=if_absent)
        if not self.trust.configured:
            return self.inner.put(key, src, size_hint=size_hint, if_absent=if_absent)
        if self.trust.key is None:
            raise ConfigError(
                f"{key}: cannot be signed: [signing] lists trusted keys but no signing.key "
                "on this machine, and readers would refuse an unsigned record",
                hint="set signing.key to the backup machine's signing key file",
            )
        data = b"".join(iter(lambda: src.read(1024 * 1024), b""))
        if len(data) > RECORD_LIMIT:
            raise IntegrityError(f"{key}: record larger than {RECORD_LIMIT} bytes")
        signature = sshsig.sign(self.trust.key, data)
        self.inner.put(layout.signature_key(key), BytesReader(signature))
        return self.inner.put(key, BytesReader(data), size_hint=len(data), if_absent=if_absent)

    def open(self, key: str) -> ReadStream:
        if not layout.is_record(key):
            return self.inner.open(key)
        data = read_small(self.inner, key, RECORD_LIMIT)
        if not self.trust.configured:
            _warn_unsigned_once(self.inner.describe())
            return _Bytes(data)
        sig_key = layout.signature_key(key)
        try:
            signature = read_small(self.inner, sig_key, SIGNATURE_LIMIT)
        except ObjectNotFoundError:
            raise IntegrityError(
                f"{key}: not signed ({sig_key} is missing): refused",
                hint="it was written without [signing], or by someone who can write to the "
                "storage but does not hold the signing key",
            ) from None
        except IntegrityError:
            raise IntegrityError(f"{sig_key}: too large to be a signature: refused") from None
        sshsig.verify(signature, data, self.trust.trusted, key)
        return _Bytes(data)

    def read_signed(self, key: str) -> tuple[bytes, bytes | None]:
        """Given a record's key, return its bytes, checked as open() checks them,
        and the bytes of the signature they were checked against: what a copy
        writes elsewhere as it is (`vkbackup.actions.copy`). Without [signing],
        the signature stored beside the record, unchecked, or None if there is
        none. Raise as open() does."""
        data = read_small(self, key, RECORD_LIMIT)  # checked, or warned about, by open()
        sig_key = layout.signature_key(key)
        try:
            signature = read_small(self.inner, sig_key, SIGNATURE_LIMIT)
        except ObjectNotFoundError:
            if self.trust.configured:  # removed since open() checked it
                raise IntegrityError(f"{key}: not signed ({sig_key} is missing): refused") from None
            return data, None
        if self.trust.configured:  # the one read here is the one checked
            sshsig.verify(signature, data, self.trust.trusted, key)
        return data, signature

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        if layout.is_record(key):
            self.inner.delete(layout.signature_key(key))
