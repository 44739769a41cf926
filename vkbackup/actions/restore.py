"""`vkbackup restore SNAPSHOT --to HOST`: rebuild a host's stack from a snapshot.

    storage get -> verify size+sha256 -> age decrypt -> SSH exec on target -> source restore

The verb is orchestration only: pick whose snapshot "latest" means, build the
plan (`vkbackup.restore.session.build_plan`), narrow it to `--only`, and run it
(`run_restore`). Everything a step does lives in `vkbackup.restore` and in the
source modules.
"""

from __future__ import annotations

from vkbackup.config.model import Config
from vkbackup.errors import UsageError
from vkbackup.restore.session import Connect, RestoreReport, build_plan, run_restore

__all__ = ["Connect", "RestoreReport", "build_plan", "restore_host", "run_restore"]


def restore_host(cfg: Config, snapshot: str, host: str | None) -> str | None:
    """Given the config, a snapshot reference and the --host option, return whose
    snapshots *snapshot* is resolved among (None: any host, for an explicit id).
    Raise UsageError when "latest" is ambiguous."""
    if host is not None or snapshot != "latest":
        return host
    if len(cfg.hosts) > 1:
        raise UsageError("several hosts are configured: say whose latest snapshot (--host NAME)")
    if len(cfg.hosts) == 1:
        return next(iter(cfg.hosts))
    return None
