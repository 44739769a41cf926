"""`vkbackup keys generate`: a new age identity file and its public recipient,
or (--signing) the backup machine's OpenSSH signing key and its public line.

The file is one stock `age` reads (`age -d -i FILE`), optionally encrypted
with a passphrase (age scrypt, armored). A passphrase comes from
--passphrase-file, else $VKBACKUP_PASSPHRASE, else a prompt on the terminal
(/dev/tty); never from the command line.
"""

from __future__ import annotations

from pathlib import Path

import click

from vkbackup.cli.context import AppContext, pass_app
from vkbackup.cli.options import passphrase_file
from vkbackup.crypto import (
    default_identity_path,
    generate_hybrid_identity,
    generate_identity,
    write_identity_file,
)
from vkbackup.errors import UsageError


@click.group("keys")
def keys_group() -> None:
    """Manage age identities (private keys) and recipients (public keys)."""


@keys_group.command("generate")
@click.option(
    "--out",
    "out",
    metavar="PATH",
    help="Identity file to write (mode 0600, never overwritten). Default: "
    "$XDG_CONFIG_HOME/vkbackup/identity.txt, i.e. ~/.config/vkbackup/identity.txt "
    "(identity.age with --passphrase).",
)
@click.option(
    "--passphrase",
    is_flag=True,
    help="Encrypt the identity file with a passphrase (age scrypt, armored; "
    "`age -d -i FILE` asks for it). Implied by --passphrase-file.",
)
@click.option(
    "--pq",
    is_flag=True,
    help="Generate a post-quantum identity (ML-KEM-768 + X25519, AGE-SECRET-KEY-PQ-1...; "
    "recipient age1pq1...), as `age-keygen -pq` does. Stock age opens its files from 1.3.0.",
)
@click.option(
    "--signing",
    is_flag=True,
    help="Generate the backup machine's signing key instead: an OpenSSH ed25519 private "
    "key (mode 0600, no passphrase: cron signs with it), for [signing] key. --out is required.",
)
@passphrase_file
@pass_app
def keys_generate(
    app: AppContext,
    out: str | None,
    passphrase: bool,
    pq: bool,
    signing: bool,
    passphrase_file: str | None,
) -> None:
    """Write a new identity file that stock `age` reads; print its public recipient.

    The recipient (age1... or, with --pq, age1pq1...) goes to standard output;
    put it in the config's `recipients`. Keep the identity file off the
    backed-up host and out of the storage: restore, verify and drill need it,
    nightly snapshots do not.

    With --signing: write the signing key and print its public line
    (ssh-ed25519 AAAA...). Put the path in [signing] key on the backup machine,
    and the public line in [signing] trusted on every machine that restores.
    """
    app.refuse_storage("keys generate")
    if signing:
        if pq or passphrase or passphrase_file is not None:
            raise UsageError("--signing takes no --pq, --passphrase or --passphrase-file")
        if not out:
            raise UsageError("--signing needs --out PATH (the private key file to write)")
        from vkbackup.signing import generate_key_file

        line = generate_key_file(Path(out))
        click.echo(f"wrote signing key {out} (mode 0600)", err=True)
        click.echo(line)
        return
    protect = passphrase or passphrase_file is not None
    path = Path(out) if out else default_identity_path(passphrase=protect)
    if path.exists():
        raise UsageError(f"{path}: already exists; refusing to overwrite it")
    secret = None
    if protect:
        secret = app.new_passphrase(passphrase_file, "Passphrase for the new identity file: ")
    identity = generate_hybrid_identity() if pq else generate_identity()
    write_identity_file(path, identity, passphrase=secret)
    click.echo(f"wrote identity file {path} (mode 0600)", err=True)
    click.echo(str(identity.recipient()))


def register(cli: click.Group) -> None:
    cli.add_command(keys_group)
