"""`vkbackup keys generate`, `vkbackup encrypt`, `vkbackup decrypt` (age v1 compatible)."""

from __future__ import annotations

import click

from vkbackup.cli.options import passphrase_file
from vkbackup.errors import NotImplementedYetError


@click.group("keys")
def keys_group() -> None:
    """Manage age identities (private keys) and recipients (public keys)."""


@keys_group.command("generate")
@click.option("--out", "out", metavar="PATH", help="Identity file to write (mode 0600).")
@click.option("--passphrase", is_flag=True, help="Encrypt the identity file with a passphrase.")
@passphrase_file
def keys_generate(out: str | None, passphrase: bool, passphrase_file: str | None) -> None:
    """Write a new identity file that stock `age` reads; print its public recipient."""
    raise NotImplementedYetError("keys generate is not implemented yet")


@click.command("encrypt")
@click.option("-r", "--recipient", "recipients", multiple=True, help="age1... public key.")
def encrypt_cmd(recipients: tuple[str, ...]) -> None:
    """Encrypt standard input to standard output in the age v1 format."""
    raise NotImplementedYetError("encrypt is not implemented yet")


@click.command("decrypt")
@click.option("-i", "--identity", "identities", multiple=True, help="Identity file.")
@passphrase_file
def decrypt_cmd(identities: tuple[str, ...], passphrase_file: str | None) -> None:
    """Decrypt an age file from standard input to standard output."""
    raise NotImplementedYetError("decrypt is not implemented yet")


def register(cli: click.Group) -> None:
    cli.add_command(keys_group)
    cli.add_command(encrypt_cmd)
    cli.add_command(decrypt_cmd)
