"""The CLI end to end over a real sshd on loopback (no lab): see test_snapshot_cli."""

from __future__ import annotations

from tests.integration.transport.conftest import Sshd, sshd  # noqa: F401 - the fixture

__all__ = ["Sshd"]
