"""`vkbackup init USER@ADDRESS[:PORT]`: discover a host and write a config for it.

The command asks the questions (trust this host key?) and writes the file;
`vkbackup.actions.init` connects, discovers and renders the config.
"""

from __future__ import annotations

from pathlib import Path

import click

from vkbackup.cli.context import AppContext, pass_app
from vkbackup.cli.options import yes
from vkbackup.errors import UsageError


@click.command("init")
@click.argument("target", metavar="USER@ADDRESS[:PORT]")
@click.option(
    "--name", "host_name", metavar="NAME", help="Host name in the config (default: prod)."
)
@click.option("--out", metavar="PATH", help="Write the config here (default: standard output).")
@click.option(
    "--key-file", metavar="PATH", help="SSH private key (default: the config's, or agent)."
)
@click.option("--known-hosts", metavar="PATH", default="~/.ssh/known_hosts", show_default=True)
@click.option("-r", "--recipient", "recipients", multiple=True, help="age1... public key.")
@yes
@pass_app
def init_cmd(
    app: AppContext,
    target: str,
    host_name: str | None,
    out: str | None,
    key_file: str | None,
    known_hosts: str,
    recipients: tuple[str, ...],
    yes: bool,
) -> None:
    """Connect to a host, discover what it runs, and write a config that backs it all up.

    Discovers compose projects, their .env files, the Caddyfile and Caddy's
    data, named volumes and who uses them, PostgreSQL containers and their
    databases, and the images the containers run. An unknown host key is shown
    and trusted only on confirmation (or --yes). Storage and encryption come from
    the current config when there is one, else local storage and --recipient.
    """
    from vkbackup.actions.init import generate_config
    from vkbackup.common import parse_target
    from vkbackup.config.model import HostConfig

    cfg = app.config()
    if out and Path(out).exists():
        raise UsageError(f"{out}: already exists; refusing to overwrite it")
    recips = list(recipients) or list(cfg.encryption.recipients)
    if not recips:
        raise UsageError(
            "no recipient: pass -r age1... or use a config that has encryption.recipients",
            hint="vkbackup keys generate prints a recipient",
        )
    base = parse_target(cfg, target if "@" in target else f"root@{target}")
    kh = Path(known_hosts).expanduser()
    host = HostConfig(
        name=host_name or "prod",
        address=base.address,
        port=base.port,
        user=base.user,
        key_file=Path(key_file).expanduser() if key_file else base.key_file,
        known_hosts=kh,
    )

    def ask(fp: str) -> bool:
        click.echo(f"{host.address}:{host.port} offers host key {fp}", err=True)
        if yes:
            click.echo("trusting it (--yes)", err=True)
            return True
        return click.confirm("Trust this key and add it to " + str(kh) + "?", err=True)

    text = generate_config(
        cfg, host, recips, connect=app.connect, ask=ask, origin=out or "<generated>"
    )
    if out:
        p = Path(out).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "x") as f:
            f.write(text)
        p.chmod(0o600)
        click.echo(
            f"wrote {p}: review it, then `vkbackup --config {p} snapshot --dry-run`", err=True
        )
    else:
        click.echo(text, nl=False)


def register(cli: click.Group) -> None:
    cli.add_command(init_cmd)
