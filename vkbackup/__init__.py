"""vkbackup: backup and disaster recovery for a single Docker VPS."""

from __future__ import annotations

__version__ = "0.1.0"
