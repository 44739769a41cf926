"""`vkbackup wal-stream`: run the WAL stream of each host with a `pitr = true`
postgres source (`vkbackup.pitr.stream` says how one stream works), one
thread per host, until *stop* is set. One PITR source per host: the WAL of a
host lives under `wal/<host>/` (the config loader refuses a second one).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vkbackup.config.model import Config, HostConfig, SourceConfig
from vkbackup.crypto import Recipient
from vkbackup.errors import UsageError
from vkbackup.logs import get_logger
from vkbackup.pitr.setup import read_password_file
from vkbackup.pitr.stream import StreamSettings, WalStream
from vkbackup.storage.base import Storage
from vkbackup.transport.ssh import SshTransport

log = get_logger("pitr")


def pitr_source(host: HostConfig) -> SourceConfig | None:
    """The host's postgres source with pitr = true, or None."""
    return next((s for s in host.sources if s.type == "postgres" and s.pitr), None)


def pitr_hosts(cfg: Config, only: str | None) -> list[HostConfig]:
    """The hosts to stream: *only*, else every host with a PITR source. Raise
    UsageError when there is none, naming what to set."""
    hosts = [cfg.hosts[only]] if only is not None else list(cfg.hosts.values())
    chosen = [h for h in hosts if pitr_source(h) is not None]
    if not chosen:
        which = f"host {only}" if only else "no host"
        raise UsageError(
            f"{cfg.source_file or '(embedded defaults)'}: {which} has a postgres source with "
            "pitr = true: there is no WAL to stream",
            hint="set pitr = true in the postgres source's table, then `vkbackup init HOST "
            "--pitr` prints what the database needs",
        )
    return chosen


def settings_for(cfg: Config, host: HostConfig) -> StreamSettings:
    src = pitr_source(host)
    assert src is not None and src.container
    p = cfg.pitr
    password = read_password_file(p.password_path(cfg.source_file))
    return StreamSettings(
        host=host.name,
        container=src.container,
        user=src.user,
        port=p.port,
        role=p.role,
        password=password,
        slot=p.slot,
        spool=Path(p.spool_dir) / host.name,
        max_lag=p.max_lag,
        max_slot_lag_mib=p.max_slot_lag_mib,
        monitoring=cfg.monitoring,
    )


def run_streams(
    cfg: Config,
    hosts: Sequence[HostConfig],
    connect: Callable[[HostConfig], SshTransport],
    storage: Storage,
    recipients: Sequence[Recipient],
    stop: threading.Event,
) -> None:
    """Stream every host in *hosts* until *stop* is set; return when all stopped
    (each has stored what its spool held)."""
    streams = [
        WalStream(settings_for(cfg, h), functools.partial(connect, h), storage, recipients)
        for h in hosts
    ]
    for s in streams:  # a spool on disk or no pg_receivewal: refused before anything runs
        s.preflight()
    threads = [
        threading.Thread(target=s.run, args=(stop,), name=f"wal-{s.s.host}") for s in streams
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
