"""`vkbackup encrypt`: standard input to an age v1 file on standard output.

A break-glass tool, interchangeable with stock `age`: the output opens with
`age -d -i IDENTITY_FILE` (or `age -d` for a passphrase). Binary ciphertext
is never written to a terminal.
"""

from __future__ import annotations

import sys

import click

from vkbackup.cli.context import AppContext, pass_app
from vkbackup.cli.options import passphrase_file
from vkbackup.crypto import EncryptingReader, Recipient, ScryptRecipient, parse_recipient
from vkbackup.errors import CryptoError, UsageError
from vkbackup.streams import CHUNK, copy_stream


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
@pass_app
def encrypt_cmd(
    app: AppContext, recipients: tuple[str, ...], passphrase: bool, passphrase_file: str | None
) -> None:
    """Encrypt standard input to standard output in the age v1 format.

    The output opens with stock `age -d -i IDENTITY_FILE` (or `age -d` for -p).
    """
    app.refuse_storage("encrypt")
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
        targets.append(ScryptRecipient(app.new_passphrase(passphrase_file, "Passphrase: ")))
    for r in recipients:
        try:
            targets.append(parse_recipient(r))
        except CryptoError as e:
            raise UsageError(str(e)) from None
    reader = EncryptingReader(sys.stdin.buffer, targets)
    copy_stream(reader, stdout.write, CHUNK)
    stdout.flush()


def register(cli: click.Group) -> None:
    cli.add_command(encrypt_cmd)
