"""`vkbackup decrypt`: an age v1 file on standard input to plaintext on standard output.

A break-glass tool, interchangeable with stock `age -d`: it needs no config,
only identity files (plain or passphrase-encrypted) or the passphrase the
file was encrypted with. Passphrases come from --passphrase-file, else
$VKBACKUP_PASSPHRASE, else a prompt on the terminal (/dev/tty); never from
the command line.
"""

from __future__ import annotations

import sys

import click

from vkbackup.cli.context import AppContext, pass_app
from vkbackup.cli.options import passphrase_file
from vkbackup.crypto import DecryptingReader
from vkbackup.streams import CHUNK, copy_stream


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
@pass_app
def decrypt_cmd(app: AppContext, identities: tuple[str, ...], passphrase_file: str | None) -> None:
    """Decrypt an age file (binary or armored) from standard input to standard output.

    Only authenticated data is written. If the input turns out tampered or
    truncated, the command stops with an error and a non-zero exit status;
    what was written before is authentic but incomplete.
    """
    app.refuse_storage("decrypt")
    keys = app.identity_files(identities, passphrase_file)
    stdout = sys.stdout.buffer
    reader = DecryptingReader(sys.stdin.buffer, keys, name="<stdin>")
    try:
        copy_stream(reader, stdout.write, CHUNK)
    finally:
        stdout.flush()


def register(cli: click.Group) -> None:
    cli.add_command(decrypt_cmd)
