"""`vkbackup restore SNAPSHOT --to HOST`: rebuild a host's stack from a snapshot.

    storage get -> verify size+sha256 -> age decrypt -> SSH exec on target -> source restore

The verb is orchestration only: pick whose snapshot "latest" means, build the
plan (`vkbackup.restore.session.build_plan`), narrow it to `--only`, and run it
(`run_restore`). Everything a step does lives in `vkbackup.restore` and in the
source modules.

The restore hooks (before_restore, after_restore, on_failure) are those of the
host whose snapshot is restored (`restore_hooks`), and run on the target: see
`vkbackup.hooks`.
"""

from __future__ import annotations

from vkbackup.config.model import Config, HooksConfig
from vkbackup.errors import UsageError
from vkbackup.restore.session import Connect, RestoreReport, build_plan, run_restore

__all__ = [
    "Connect",
    "RestoreReport",
    "build_plan",
    "restore_hooks",
    "restore_host",
    "run_restore",
]


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


def restore_hooks(cfg: Config, snapshot_host: str) -> HooksConfig | None:
    """Given the config and the host a snapshot was taken of, return that host's
    hooks, which a restore of the snapshot runs on its target; None when the
    config has no such host (then no hook runs)."""
    host = cfg.hosts.get(snapshot_host)
    return host.hooks if host is not None else None
