"""Logging setup: human lines on a TTY, JSON lines with --log-json, secrets masked.

Passphrases, credentials and key material are registered with
`register_secret` as soon as they are read; from then on, any log record whose
message or arguments contain one has it replaced by "***". `.env` contents are
never decoded to text by vkbackup at all, so they cannot reach a log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
MASK = "***"


def register_secret(value: str) -> None:
    """Given a secret string, mask it as "***" in the message (and traceback) of every
    later log record. Values shorter than 4 characters are ignored."""
    if value and len(value) >= 4:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """Return *text* with every registered secret replaced by the mask."""
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg = redact(msg)
        record.args = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def setup_logging(
    verbosity: int = 0, json_lines: bool = False, stream: IO[str] | None = None
) -> None:
    """Configure the "vkbackup" logger tree, writing to *stream* (default stderr).
    *verbosity*: -1 quiet (warnings and errors), 0 normal (info), 1 debug, 2+ the
    libraries' debug lines too. Safe to call more than once."""
    root = logging.getLogger("vkbackup")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(_JsonFormatter() if json_lines else _HumanFormatter())
    root.addHandler(handler)
    if verbosity < 0:
        root.setLevel(logging.WARNING)
    elif verbosity == 0:
        root.setLevel(logging.INFO)
    else:
        root.setLevel(logging.DEBUG)
    root.propagate = False
    # Libraries: silent unless -vv. paramiko's transport thread logs every
    # handshake failure with a traceback; vkbackup reports those itself.
    for name in ("paramiko", "botocore", "boto3", "s3transfer", "urllib3"):
        lib = logging.getLogger(name)
        lib.setLevel(logging.DEBUG if verbosity >= 2 else logging.CRITICAL)
        for h in list(lib.handlers):
            lib.removeHandler(h)
        if verbosity >= 2:
            lib.addHandler(handler)
        lib.propagate = False


def get_logger(name: str) -> logging.Logger:
    """Return the logger *name*, put under "vkbackup." unless it already is."""
    if not name.startswith("vkbackup"):
        name = "vkbackup." + name
    return logging.getLogger(name)
