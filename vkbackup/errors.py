"""One exception family for vkbackup, and the exit codes it maps to.

Library code raises these for every expected failure; the single place that turns them into a
message and an exit status is `vkbackup.cli.main`. Every error message names
what is at fault: the host, file, key path, object key or snapshot.

Exit codes (documented in the README):

    0   OK           everything asked for was done
    1   FAILED       the operation failed (nothing half-done is left visible)
    2   USAGE        bad command line or configuration
    3   PARTIAL      some parts succeeded, others failed (e.g. a partial snapshot)
    130 INTERRUPTED  SIGINT / SIGTERM
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
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


class IntegrityError(VkError):
    """Stored data cannot be trusted: an object does not match what the manifest
    recorded, or a manifest or archive is malformed, oversized or hostile."""


class StorageError(VkError):
    """The storage backend refused or failed an operation."""


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
    """Another run holds the host's lock (or a stale lock must be broken)."""


class SnapshotError(VkError):
    """A snapshot could not be taken or is incomplete."""


class PartialFailure(VkError):
    """Some parts of an operation failed, others succeeded."""

    exit_code = ExitCode.PARTIAL


class RestoreError(VkError):
    """A restore step failed or a preflight check refused the target."""


class Interrupted(VkError):
    """SIGINT or SIGTERM arrived; cleanup ran."""

    exit_code = ExitCode.INTERRUPTED
