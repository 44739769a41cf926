"""`vkbackup wal-stream [--host H]`: the long-running WAL stream of point-in-time
recovery (`vkbackup.pitr.stream`). Meant for a systemd unit
(`schedules/vkbackup-wal-stream.service`). SIGTERM or Ctrl-C stops
pg_receivewal, stores what the spool holds and exits 0.
"""

from __future__ import annotations

import signal
import threading
import types

import click

from vkbackup.cli.context import AppContext, pass_app
from vkbackup.cli.options import check_host


@click.command("wal-stream")
@click.option(
    "--host",
    "host",
    metavar="NAME",
    help="Only this host (default: every host with a pitr = true postgres source).",
)
@pass_app
def wal_stream_cmd(app: AppContext, host: str | None) -> None:
    """Stream prod's PostgreSQL WAL into storage, continuously, for point-in-time
    recovery (`restore --to-time`). Runs until stopped; reconnects by itself.

    Exit codes: 0 stopped by SIGTERM or Ctrl-C after storing what it held,
    2 config error (no pitr source, spool not in memory, no pg_receivewal,
    unreadable password file).
    """
    from vkbackup.actions.wal_stream import pitr_hosts, run_streams
    from vkbackup.common import recipients

    app.refuse_storage("wal-stream")
    cfg = app.config()
    hosts = pitr_hosts(cfg, check_host(host))
    storage = app.storage(create=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_streams(cfg, hosts, app.connect_ssh, storage, recipients(cfg), stop)


def register(cli: click.Group) -> None:
    cli.add_command(wal_stream_cmd)
