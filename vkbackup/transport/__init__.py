"""Run commands on hosts as byte streams: SSH (paramiko) or local (subprocess)."""

from __future__ import annotations

from vkbackup.transport.base import Completed, Process, Transport, pipeline_argv
from vkbackup.transport.local import LocalTransport

__all__ = ["Completed", "LocalTransport", "Process", "Transport", "pipeline_argv"]
