"""One exception family for vkbackup, and the exit codes it maps to.

Library code raises these for every expected failure; the single place that turns them into a
message and an exit status is `vkbackup.cli.main`. Every error message names
what is at fault: the host, file, key path, object key or snapshot.

Exit codes (documented in the README):

    0   OK           everything asked for was done
    1   FAILED       the operation failed (nothing half-done is left visible)
    2   USAGE        bad command line or configuration
    3   PARTIAL      some parts succeeded, others failed (e.g. a partial snapshot)
    10  STORAGE_UNREACHABLE  the storage is missing or cannot be reached: the local
                     directory does not exist (a snapshot creates it; every other command
                     needs it), the bucket does not exist, or the endpoint did not answer
                     after every retry (StorageUnreachableError)
    11  LOCK_HELD    another live run holds the host's lock (LockHeldError); wait for it.
                     A *stale* lock (its process is gone, or it is over 12 hours old) is
                     exit 1: waiting will not clear it, --break-lock does
    12  WRONG_KEY    the identity opens none of the recipient stanzas, or the passphrase
                     is wrong (of an identity file, or of an `age -p` file) (WrongKeyError)
    130 INTERRUPTED  SIGINT / SIGTERM

A snapshot that loses its storage midway reports the sources it could not save as
failed (exit 1 or 3, as any failed source); 10 means nothing could be done at all.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    STORAGE_UNREACHABLE = 10
    LOCK_HELD = 11
    WRONG_KEY = 12
    INTERRUPTED = 130


class VkError(Exception):
    """Base of every error vkbackup raises on purpose (expected failures)."""

    exit_code: ExitCode = ExitCode.FAILED
    #: a short, actionable hint printed under the message, if any
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(VkError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = ExitCode.USAGE


class UsageError(VkError):
    """The command line asks for something impossible."""

    exit_code = ExitCode.USAGE


class NotImplementedYetError(VkError):
    """A command whose implementation has not landed yet."""


class CryptoError(VkError):
    """Encryption or decryption failed: bad key, tampered or truncated data."""


class WrongKeyError(CryptoError):
    """The identity given is not one the file was encrypted to, or the passphrase
    (of an identity file, or of a passphrase-encrypted file) is wrong."""

    exit_code = ExitCode.WRONG_KEY


class IntegrityError(VkError):
    """Stored data cannot be trusted: an object does not match what the manifest
    recorded, or a manifest or archive is malformed, oversized or hostile."""


class StorageError(VkError):
    """The storage backend refused or failed an operation."""


class StorageUnreachableError(StorageError):
    """The storage itself is not there: the local directory or the bucket does not
    exist, or the endpoint did not answer after every retry."""

    exit_code = ExitCode.STORAGE_UNREACHABLE


class ObjectNotFoundError(StorageError):
    """The named object does not exist in storage."""


class ObjectExistsError(StorageError):
    """A conditional create found the object already there."""


class TransportError(VkError):
    """Reaching or running something on a host failed."""


class HostKeyError(TransportError):
    """The host's SSH key is unknown or changed."""


class RemoteCommandError(TransportError):
    """A command on a host exited non-zero or was killed."""

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        argv: list[str] | None = None,
        exit_status: int | None = None,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.host = host
        self.argv = argv or []
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail


class LockError(VkError):
    """The host's lock cannot be taken: a stale lock must be broken (exit 1)."""


class LockHeldError(LockError):
    """Another live run holds the host's lock (exit 11: try again later)."""

    exit_code = ExitCode.LOCK_HELD


class SnapshotError(VkError):
    """A snapshot could not be taken or is incomplete."""


class PartialFailure(VkError):
    """Some parts of an operation failed, others succeeded."""

    exit_code = ExitCode.PARTIAL


class RestoreError(VkError):
    """A restore step failed or a preflight check refused the target."""


class HookError(VkError):
    """A configured hook command failed (`vkbackup.hooks`): *where* is its key path
    (``hosts.prod.hooks.before_snapshot[1]``)."""

    def __init__(
        self,
        message: str,
        *,
        where: str = "",
        exit_status: int | None = None,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.where = where
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail


class Interrupted(VkError):
    """SIGINT or SIGTERM arrived; cleanup ran."""

    exit_code = ExitCode.INTERRUPTED
