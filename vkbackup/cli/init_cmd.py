"""`vkbackup init USER@ADDRESS[:PORT]`: discover a host and write a config for it.

The command asks the questions (trust this host key?) and writes the file;
`vkbackup.actions.init` connects, discovers and renders the config.

Host keys (`host_key_asker`): a first contact shows the key and asks (--yes
answers yes). A known host offering a key of a new type shows the new key and
every known one, and needs an explicit confirmation: a "y" typed on a
terminal, or --accept-host-key with the new key's fingerprint. --yes does not
answer it; without a terminal and without that flag, init refuses, naming
the host, the known_hosts file and the flag.

--pitr: the replication role's password file is the current config's [pitr]
password_file when it sets one, else ``pitr-password`` beside --out (in
~/.config/vkbackup/ without --out); it is read if it exists, else created
(mode 0600, never overwritten). What the database needs is printed to stderr
(stdout may be the config): init changes nothing on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vkbackup.cli.context import AppContext, pass_app
from vkbackup.cli.options import yes
from vkbackup.config.model import Config, SigningConfig
from vkbackup.errors import HostKeyError, UsageError
from vkbackup.textsafe import printable

if TYPE_CHECKING:
    from vkbackup.actions.init import HostKeyOffer, PitrRequest


def host_key_asker(
    label: str,
    *,
    yes: bool,
    accept: str | None,
    interactive: Callable[[], bool],
) -> Callable[[HostKeyOffer], bool]:
    """Given the host as shown (address:port), --yes, --accept-host-key and whether
    there is a terminal to ask on, return the `ask` of `trust_host_key` (see the
    module docstring for the rules). It prints to stderr, and raises HostKeyError
    for a pinned fingerprint that is not the offered one, and for a new key type
    it cannot have confirmed."""

    def echo(text: str) -> None:
        click.echo(text, err=True)

    def ask(offer: HostKeyOffer) -> bool:
        kh = offer.known_hosts
        if offer.first_contact:
            echo(f"{label} offers host key {offer.describe()}")
        else:
            echo(f"WARNING: {offer.name} is known in {kh} by:")
            for k in offer.known:
                echo(f"    {printable(k.type)} {k.fingerprint}")
            echo(f"  but its server now offers a key of a NEW TYPE:\n    {offer.describe()}")
            echo(
                "  A server shows a new key type after an upgrade or a reconfiguration; an "
                "attacker in the middle would show one too. Compare the new fingerprint with "
                "the server's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub, on its console)."
            )
        if accept is not None:
            if accept != offer.fingerprint:
                raise HostKeyError(
                    f"{offer.name}: the server offers {offer.describe()}, not the "
                    f"--accept-host-key {accept}; refusing, nothing written"
                )
            echo("trusting it (--accept-host-key)")
            return True
        if offer.first_contact:
            if yes:
                echo("trusting it (--yes)")
                return True
            return click.confirm(f"Trust this key and add it to {kh}?", err=True)
        if not interactive():
            known = ", ".join(f"{printable(k.type)} {k.fingerprint}" for k in offer.known)
            raise HostKeyError(
                f"{offer.name}: offers a key of a new type ({offer.describe()}) while {kh} "
                f"knows it by {known}; a new key type needs an explicit confirmation "
                f"({'--yes is not one' if yes else 'no terminal to ask on'}): nothing written",
                hint=f"verify {offer.fingerprint} out of band, then run init again with "
                f"--accept-host-key {offer.fingerprint} (or on a terminal, to be asked)",
            )
        return click.confirm(
            f"Trust this NEW {offer.key_type} key too and add it to {kh}?"
            + (" (--yes does not answer this)" if yes else ""),
            default=False,
            err=True,
        )

    return ask


@click.command("init")
@click.argument("target", metavar="USER@ADDRESS[:PORT]")
@click.option(
    "--name",
    "--host",
    "host_name",
    metavar="NAME",
    help="Host name in the config (default: prod); --host is the same.",
)
@click.option("--out", metavar="PATH", help="Write the config here (default: standard output).")
@click.option(
    "--key-file", metavar="PATH", help="SSH private key (default: the config's, or agent)."
)
@click.option("--known-hosts", metavar="PATH", default="~/.ssh/known_hosts", show_default=True)
@click.option("-r", "--recipient", "recipients", multiple=True, help="age1... public key.")
@click.option(
    "--accept-host-key",
    "accept_host_key",
    metavar="SHA256:...",
    help="Trust the host key with this fingerprint (verified out of band), also one of a "
    "new type for a known host, which --yes does not accept.",
)
@click.option(
    "--signing-key",
    metavar="PATH",
    help="The signing key for [signing] key: used if it exists, else created (OpenSSH "
    "ed25519, mode 0600). Default: the current config's [signing], else signing_ed25519 "
    "beside --out (~/.config/vkbackup/ without --out).",
)
@click.option(
    "--pitr",
    is_flag=True,
    help="Also set up point-in-time recovery of the first PostgreSQL container: pitr = true "
    "and [pitr] in the config, the replication password file created if missing, and what "
    "the database lacks printed as the exact commands to run there (init runs none).",
)
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
    accept_host_key: str | None,
    signing_key: str | None,
    pitr: bool,
    yes: bool,
) -> None:
    """Connect to a host, discover what it runs, and write a config that backs it all up.

    Discovers compose projects, their .env files, the Caddyfile and Caddy's
    data, named volumes and who uses them, PostgreSQL containers and their
    databases, and the images the containers run. An unknown host key is shown
    and trusted only on confirmation (or --yes, or --accept-host-key); a key of a
    new type for a known host is shown with the known keys, and needs a typed
    confirmation or --accept-host-key. Storage and encryption come from
    the current config when there is one, else local storage and --recipient.
    [signing] too, else a signing key is created (--signing-key) and configured.
    With --pitr, also what point-in-time recovery needs (see the module docstring).
    """
    from vkbackup.actions.init import format_pitr_report, generate_config, signing_toml
    from vkbackup.common import parse_target
    from vkbackup.config.model import HostConfig

    app.refuse_storage("init")
    cfg = app.config(required=False)  # the current config, if any: init writes one
    if out and Path(out).exists():
        raise UsageError(f"{out}: already exists; refusing to overwrite it")
    recips = list(recipients) or list(cfg.encryption.recipients)
    if not recips:
        raise UsageError(
            "no recipient: pass -r age1... or use a config that has encryption.recipients",
            hint="vkbackup keys generate prints a recipient",
        )
    if accept_host_key is not None and not accept_host_key.startswith("SHA256:"):
        raise UsageError(
            f"--accept-host-key {accept_host_key!r}: expected a SHA256:... fingerprint",
            hint="as ssh-keygen -lf prints it",
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

    ask = host_key_asker(
        f"{host.address}:{host.port}",
        yes=yes,
        accept=accept_host_key,
        interactive=lambda: app.interactive,
    )
    signing, public = _signing(cfg.signing, signing_key, out)
    pitr_request = _pitr_request(cfg, out) if pitr else None
    generated = generate_config(
        cfg,
        host,
        recips,
        connect=app.connect,
        ask=ask,
        origin=out or "<generated>",
        signing=signing_toml(signing, public),
        pitr=pitr_request,
    )
    text = generated.text
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
    if pitr_request is not None:  # last: what the operator has to do next
        if not generated.pitr:
            click.echo("PITR: no running PostgreSQL container found: nothing to set up", err=True)
        for report in generated.pitr:
            for line in format_pitr_report(report, pitr_request.role):
                click.echo(line, err=True)


def _signing(
    current: SigningConfig, signing_key: str | None, out: str | None
) -> tuple[SigningConfig, str | None]:
    """The [signing] the new config gets, and the key's public line: the current
    config's when it has one (and no --signing-key), else the key at
    --signing-key or its default path, created there if missing."""
    from vkbackup import sshsig
    from vkbackup.signing import generate_key_file, read_private_key

    if current.configured and signing_key is None:
        return current, None
    if signing_key:
        path = Path(signing_key).expanduser()
    elif out:
        path = Path(out).expanduser().resolve().parent / "signing_ed25519"
    else:
        path = Path.home() / ".config" / "vkbackup" / "signing_ed25519"
    if path.exists():
        public = sshsig.public_line(read_private_key(path).public_key())
    else:
        public = generate_key_file(path)
        click.echo(f"wrote signing key {path} (mode 0600)", err=True)
    click.echo(
        f"signing key {path}: put its public line in [signing] trusted on every machine "
        f"that restores:\n  {public}",
        err=True,
    )
    return SigningConfig(key=path, trusted=current.trusted), public


def _pitr_request(cfg: Config, out: str | None) -> PitrRequest:
    """The role, slot, port and password `init --pitr` uses: the current
    config's [pitr], and the password from its password file (the module
    docstring says which), created with a new password if missing."""
    from vkbackup.actions.init import PitrRequest
    from vkbackup.config.model import PITR_PASSWORD_FILE_NAME
    from vkbackup.pitr.setup import generate_password, read_password_file, write_password_file

    p = cfg.pitr
    if p.password_file is not None:
        path = cfg.pitr_password_path
    elif out:
        path = Path(out).expanduser().resolve().parent / PITR_PASSWORD_FILE_NAME
    else:
        path = Path.home() / ".config" / "vkbackup" / PITR_PASSWORD_FILE_NAME
    path = path.expanduser().absolute()
    if path.exists() or path.is_symlink():
        password = read_password_file(path)
        click.echo(f"PITR: the replication password is in {path}", err=True)
    else:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = generate_password()
        write_password_file(path, password)
        click.echo(f"PITR: wrote the replication password to {path} (mode 0600)", err=True)
    return PitrRequest(role=p.role, slot=p.slot, port=p.port, password=password, password_file=path)


def register(cli: click.Group) -> None:
    cli.add_command(init_cmd)
