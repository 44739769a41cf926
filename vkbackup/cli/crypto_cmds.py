"""`vkbackup keys generate`, `vkbackup encrypt`, `vkbackup decrypt` (age v1 compatible).

These are the break-glass tools: each opens or writes one age file from
standard input to standard output, interchangeably with stock `age`.
Passphrases come from --passphrase-file, else $VKBACKUP_PASSPHRASE, else a
prompt on the terminal (/dev/tty); never from the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vkbackup.cli.options import passphrase_file
from vkbackup.crypto import (
    DecryptingReader,
    EncryptingReader,
    Identity,
    PassphraseSource,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    default_identity_path,
    generate_identity,
    load_identity_file,
    parse_recipient,
    read_passphrase,
    write_identity_file,
)
from vkbackup.errors import CryptoError, UsageError
from vkbackup.streams import CHUNK, copy_stream


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
@passphrase_file
def keys_generate(out: str | None, passphrase: bool, passphrase_file: str | None) -> None:
    """Write a new identity file that stock `age` reads; print its public recipient.

    The recipient (age1...) goes to standard output; put it in the config's
    `recipients`. Keep the identity file off the backed-up host and out of
    the storage: restore, verify and drill need it, nightly snapshots do not.
    """
    protect = passphrase or passphrase_file is not None
    path = Path(out) if out else default_identity_path(passphrase=protect)
    if path.exists():
        raise UsageError(f"{path}: already exists; refusing to overwrite it")
    secret = None
    if protect:
        secret = read_passphrase(
            passphrase_file, prompt="Passphrase for the new identity file: ", confirm=True
        )
    identity = generate_identity()
    write_identity_file(path, identity, passphrase=secret)
    click.echo(f"wrote identity file {path} (mode 0600)", err=True)
    click.echo(str(identity.recipient()))


@click.command("encrypt")
@click.option(
    "-r",
    "--recipient",
    "recipients",
    multiple=True,
    metavar="age1...",
    help="Public key to encrypt to; repeat for several (e.g. ops key + break-glass key).",
)
@click.option(
    "-p",
    "--passphrase",
    is_flag=True,
    help="Encrypt with a passphrase instead of recipients (like `age -p`).",
)
@passphrase_file
def encrypt_cmd(recipients: tuple[str, ...], passphrase: bool, passphrase_file: str | None) -> None:
    """Encrypt standard input to standard output in the age v1 format.

    The output opens with stock `age -d -i IDENTITY_FILE` (or `age -d` for -p).
    """
    use_passphrase = passphrase or passphrase_file is not None
    if use_passphrase and recipients:
        raise UsageError("give either -r RECIPIENT or --passphrase, not both")
    if not use_passphrase and not recipients:
        raise UsageError("give at least one -r RECIPIENT (age1...) or --passphrase")
    stdout = sys.stdout.buffer
    if stdout.isatty():
        raise UsageError("refusing to write binary ciphertext to a terminal; redirect the output")
    targets: list[Recipient] = []
    if use_passphrase:
        targets.append(
            ScryptRecipient(read_passphrase(passphrase_file, prompt="Passphrase: ", confirm=True))
        )
    for r in recipients:
        try:
            targets.append(parse_recipient(r))
        except CryptoError as e:
            raise UsageError(str(e)) from None
    reader = EncryptingReader(sys.stdin.buffer, targets)
    copy_stream(reader, stdout.write, CHUNK)
    stdout.flush()


@click.command("decrypt")
@click.option(
    "-i",
    "--identity",
    "identities",
    multiple=True,
    metavar="PATH",
    help="Identity file (age-keygen or `vkbackup keys generate`, possibly "
    "passphrase-encrypted); repeatable. Without -i the input must be "
    "passphrase-encrypted (`age -p`).",
)
@passphrase_file
def decrypt_cmd(identities: tuple[str, ...], passphrase_file: str | None) -> None:
    """Decrypt an age file (binary or armored) from standard input to standard output.

    Only authenticated data is written. If the input turns out tampered or
    truncated, the command stops with an error and a non-zero exit status;
    what was written before is authentic but incomplete.
    """
    keys: list[Identity] = []
    if identities:
        unlock = PassphraseSource(passphrase_file, prompt="Passphrase for the identity file: ")
        for p in identities:
            keys.extend(load_identity_file(Path(p), unlock))
    else:
        keys.append(ScryptIdentity(PassphraseSource(passphrase_file, prompt="Passphrase: ")))
    stdout = sys.stdout.buffer
    reader = DecryptingReader(sys.stdin.buffer, keys, name="<stdin>")
    try:
        copy_stream(reader, stdout.write, CHUNK)
    finally:
        stdout.flush()


def register(cli: click.Group) -> None:
    cli.add_command(keys_group)
    cli.add_command(encrypt_cmd)
    cli.add_command(decrypt_cmd)
