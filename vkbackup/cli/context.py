"""The composition root: what every command receives, and the one place that
builds the effects the actions are given.

Actions never open storage, connect to hosts or ask for passphrases
themselves: they take a `Storage`, a `connect` callable and identities as
arguments, so a test can hand them a local directory and a local transport.
This module is where the real ones are made, from the config the global
options point at: storage opened once per command, SSH connections with
strict host-key checking, records signed and checked with the [signing]
keys, identities unlocked with the passphrase reader
(--passphrase-file, else $VKBACKUP_PASSPHRASE, else the terminal), progress
on standard error unless the command prints JSON or runs quietly, and the
monitoring pings and textfile around each host's run.

Heavy libraries (boto3, paramiko) are imported only when a command first
asks for storage or a connection, so `--help` and `config check` stay quick.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vkbackup.config import Config, find_config_file, load_config
from vkbackup.errors import VkError

if TYPE_CHECKING:
    from vkbackup.config.model import HostConfig
    from vkbackup.crypto import Identity
    from vkbackup.monitoring import RunResult
    from vkbackup.progress import Progress
    from vkbackup.storage.base import Storage
    from vkbackup.transport.base import Transport

R = TypeVar("R", bound="RunResult")


@dataclass
class AppContext:
    config_path: str | None = None
    verbosity: int = 0
    log_json: bool = False
    _config: Config | None = field(default=None, repr=False)
    _storage: Storage | None = field(default=None, repr=False)
    _backend: Storage | None = field(default=None, repr=False)

    def config(self) -> Config:
        """Load the config following the lookup order (embedded defaults if none)."""
        if self._config is None:
            path = find_config_file(self.config_path, os.environ, Path.cwd(), Path.home())
            self._config = load_config(path)
        return self._config

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and sys.stderr.isatty()

    def storage(self) -> Storage:
        """The configured storage, opened on first use (no request is made yet),
        its records signed and checked with the [signing] keys
        (`vkbackup.signed_storage`)."""
        if self._storage is None:
            from vkbackup.signed_storage import SignedStorage
            from vkbackup.signing import Trust

            trust = Trust.from_config(self.config().signing)
            self._storage = SignedStorage(self.backend(), trust)
        return self._storage

    def backend(self) -> Storage:
        """The configured storage backend itself, records unsigned: for `storage
        check`, which probes the backend, never records."""
        if self._backend is None:
            from vkbackup.storage import open_storage

            self._backend = open_storage(self.config().storage)
        return self._backend

    def connect(self, host: HostConfig) -> Transport:
        """Open an authenticated, host-key-checked SSH connection to *host*."""
        from vkbackup.transport.ssh import connect

        return connect(host)

    def identities(self, identity_path: str | None, passphrase_file: str | None) -> list[Identity]:
        """The private keys from *identity_path*, else encryption.identity; the
        passphrase of an encrypted identity file is asked only if needed.
        Raise ConfigError if no identity is configured."""
        from vkbackup.common import identities
        from vkbackup.crypto.keys import read_passphrase

        return identities(self.config(), lambda: read_passphrase(passphrase_file), identity_path)

    def identity_files(self, paths: Sequence[str], passphrase_file: str | None) -> list[Identity]:
        """The identities in the files at *paths* (unlocked with one passphrase,
        asked once, if any is encrypted), or with no paths the passphrase an
        `age -p` file was encrypted with. Needs no config (break-glass decrypt)."""
        from vkbackup.crypto import PassphraseSource, ScryptIdentity, load_identity_file

        if not paths:
            return [ScryptIdentity(PassphraseSource(passphrase_file, prompt="Passphrase: "))]
        unlock = PassphraseSource(passphrase_file, prompt="Passphrase for the identity file: ")
        keys: list[Identity] = []
        for p in paths:
            keys.extend(load_identity_file(Path(p), unlock))
        return keys

    def new_passphrase(self, passphrase_file: str | None, prompt: str) -> str:
        """A passphrase to encrypt with, from the file, $VKBACKUP_PASSPHRASE, or
        the terminal (typed twice)."""
        from vkbackup.crypto import read_passphrase

        return read_passphrase(passphrase_file, prompt=prompt, confirm=True)

    def identity_loader(
        self, identity_path: str | None, passphrase_file: str | None
    ) -> Callable[[], Sequence[Identity]] | None:
        """A loader of the private keys for commands that also work without
        them, or None when no identity is given or configured."""
        if identity_path is None and self.config().encryption.identity is None:
            return None
        return lambda: self.identities(identity_path, passphrase_file)

    def progress(self, as_json: bool) -> Progress:
        """Progress on standard error: off with --json or --quiet, else on a terminal."""
        from vkbackup.progress import Progress

        return Progress(enabled=None if self.verbosity >= 0 and not as_json else False)

    def monitored(self, host: str, run: Callable[[], R]) -> R:
        """Run one host's job between monitoring's "start" ping and the report of
        its result (pings, textfile), or of the error it raised. Monitoring
        problems are warnings; the job's own error propagates unchanged."""
        from vkbackup import monitoring

        cfg = self.config().monitoring
        monitoring.notify(cfg, "start", host=host)
        t0 = time.monotonic()
        try:
            result = run()
        except (VkError, KeyboardInterrupt) as e:
            monitoring.report_error(cfg, host, e, time.monotonic() - t0)
            raise
        monitoring.report_result(cfg, result)
        return result


pass_app = click.make_pass_decorator(AppContext)


def emit_json(doc: Any) -> None:
    """Print one JSON document on standard output (the --json contract)."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
