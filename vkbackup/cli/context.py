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
monitoring pings and textfile around each host's run of every job (snapshot,
verify, prune, drill, copy), with the hosts' freshness ages measured after it.

The global --storage NAME points storage(), backend() and retention() at one
of the config's [[copies]] instead of [storage], so list, show, verify,
restore, drill, prune, check and storage check read (and act on) that copy;
its jobs are reported to monitoring as "JOB-NAME", and write no ages into the
textfile (they are [storage]'s). Commands that read no snapshot refuse it
(refuse_storage()). copy_backend() opens a copy as the destination of
`vkbackup copy`. A copy's local directory is never created: it must exist.

Heavy libraries (boto3, paramiko) are imported only when a command first
asks for storage or a connection, so `--help` and `config check` stay quick.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from vkbackup.config import Config, load_config
from vkbackup.config.load import ConfigLookup, lookup_config_file
from vkbackup.errors import ConfigError, UsageError, VkError

if TYPE_CHECKING:
    from vkbackup.config.model import CopyConfig, HostConfig, RetentionConfig, StorageConfig
    from vkbackup.crypto import Identity
    from vkbackup.monitoring import HostAges, JobOutcome, RunResult
    from vkbackup.progress import Progress
    from vkbackup.storage.base import Storage
    from vkbackup.streams import RateLimiter
    from vkbackup.transport.base import Transport
    from vkbackup.transport.ssh import SshTransport

R = TypeVar("R", bound="RunResult")
T = TypeVar("T")


#: names the identity file, after --identity and before encryption.identity
IDENTITY_ENV = "VKBACKUP_IDENTITY"


@dataclass
class AppContext:
    config_path: str | None = None
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ debug: from verbose and quiet
    log_json: bool = False
    verbose: int = 0  # how many -v, before and after the command name
    quiet: bool = False  # -q, before or after the command name
    #: --storage NAME: the [[copies]] table to use instead of [storage] (None: [storage])
    storage_name: str | None = None
    #: where the identity came from ("PATH (--identity)"), once identities were loaded
    identity_origin: str | None = None
    _config: Config | None = field(default=None, repr=False)
    _lookup: ConfigLookup | None = field(default=None, repr=False)
    _storage: Storage | None = field(default=None, repr=False)
    _backend: Storage | None = field(default=None, repr=False)
    #: (--limit-upload, --limit-download) once a command asked for [transfer]'s limits
    _limits: tuple[int | None, int | None] | None = field(default=None, repr=False)
    #: the upload pace of copy_backend() (False: none), made on first use
    _upload: RateLimiter | Literal[False] | None = field(default=None, repr=False)

    def limit_transfer(self, upload_kib: int | None, download_kib: int | None) -> None:
        """Pace the storage this command opens by [transfer] (snapshot, restore and
        verify call it before storage()): *upload_kib* / *download_kib*, the
        --limit-upload / --limit-download options in KiB/s, override the config
        when given (0: no limit)."""
        if self._storage is not None:
            raise RuntimeError("limit_transfer() after storage() was opened")
        self._limits = (upload_kib, download_kib)

    def set_output(self, *, verbose: int = 0, quiet: bool = False, log_json: bool = False) -> None:
        """Add what the global options say (-v counts add up; -q and --log-json,
        once given, stay) and set logging up again accordingly."""
        from vkbackup.logs import setup_logging

        self.verbose += verbose
        self.quiet = self.quiet or quiet
        self.log_json = self.log_json or log_json
        self.verbosity = -1 if self.quiet else self.verbose
        setup_logging(self.verbosity, self.log_json)

    def lookup(self) -> ConfigLookup:
        """Where the config lookup looked and what it chose: --config, then
        $VKBACKUP_CONFIG, ./vkbackup.toml, ~/.config/vkbackup/config.toml,
        /etc/vkbackup/vkbackup.toml (`vkbackup.config.load.lookup_config_file`)."""
        if self._lookup is None or self._config is None:
            self._lookup = lookup_config_file(self.config_path, os.environ, Path.cwd(), Path.home())
        return self._lookup

    def config(self, required: bool = True) -> Config:
        """Load the config the lookup finds. Raise ConfigError naming every place
        looked in when none is found, unless not *required* (then every key's
        default: only `init` and `config check` run on that)."""
        if self._config is None:
            found = self.lookup()
            if found.path is None:
                if required:
                    raise self.no_config_error()
                return Config(source_file=None)
            if found.found_by in ("--config", "$VKBACKUP_CONFIG") and not found.path.exists():
                raise ConfigError(
                    f"{found.path}: config file not found (named by {found.found_by})"
                )
            self._config = load_config(found.path)
        return self._config

    def no_config_error(self, needed: bool = True) -> ConfigError:
        """The error of a command that needs a config (*needed*), or of `config
        check`, when none was found: it names every place looked in, in order."""
        ctx = click.get_current_context(silent=True)
        what = ""
        if needed:
            cmd = f"`{ctx.command_path}`" if ctx is not None else "this command"
            what = f" ({cmd} needs one: it says where the snapshots are)"
        looked = "\n  ".join(self.lookup().lines())
        return ConfigError(
            f"no config file found{what}. Looked in, in order:\n  {looked}",
            hint="name the config with --config PATH or $VKBACKUP_CONFIG, or put it at "
            "/etc/vkbackup/vkbackup.toml; `vkbackup init USER@HOST --out PATH` writes one",
        )

    def require_host(self, name: str) -> str:
        """Given a host name from the command line, return it if the config has
        it. Raise UsageError naming the config file and where the lookup looked
        if it does not, unless the config has no [hosts] at all (a machine that
        only restores needs none)."""
        cfg = self.config()
        if not cfg.hosts or name in cfg.hosts:
            return name
        known = ", ".join(sorted(cfg.hosts))
        raise UsageError(
            f"host {name!r} is not in the config {cfg.source_file} (its hosts: {known})",
            hint="config lookup: " + self.lookup().describe() + "; another config? "
            "name it with --config PATH",
        )

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and sys.stderr.isatty()

    def storage(self, create: bool = False) -> Storage:
        """The configured storage, opened on first use (no request is made yet),
        its records signed and checked with the [signing] keys
        (`vkbackup.signed_storage`). A local directory is created by the first
        write only when *create* (snapshot); else it must exist, or every use
        raises StorageUnreachableError (exit 10). After limit_transfer(), the
        bytes put and read are paced by the bandwidth limits
        (`vkbackup.storage.throttled`)."""
        if self._storage is None:
            from vkbackup.signed_storage import SignedStorage
            from vkbackup.signing import Trust

            trust = Trust.from_config(self.config().signing)
            inner = self.backend(create)
            if self._limits is not None:
                from vkbackup.storage.throttled import throttle

                up, down = self._limits
                inner = throttle(inner, self.config().transfer, upload_kib=up, download_kib=down)
            self._storage = SignedStorage(inner, trust)
        return self._storage

    def backend(self, create: bool = False) -> Storage:
        """The configured storage backend itself, records unsigned: for `storage
        check`, which probes the backend, never records. *create* as storage(),
        for [storage] only: the directory of a copy (--storage NAME) is never
        created (see copy_backend())."""
        if self._backend is None:
            from vkbackup.storage import open_storage

            name = self.storage_name
            self._backend = open_storage(
                self.storage_config(), create=create and name is None, copy_name=name
            )
        return self._backend

    def storage_config(self) -> StorageConfig:
        """[storage], or with --storage NAME the storage of that [[copies]] table.
        Raise UsageError as copy_config() does."""
        if self.storage_name is None:
            return self.config().storage
        return self.copy_config(self.storage_name).storage

    def retention(self) -> RetentionConfig:
        """[retention], or with --storage NAME that copy's own [copies.retention]
        (which defaults to [retention])."""
        if self.storage_name is None:
            return self.config().retention
        return self.copy_config(self.storage_name).retention

    def refuse_storage(self, command: str) -> None:
        """Raise UsageError (exit 2) if --storage NAME was given to *command*,
        one that reads no snapshot (init, keys, encrypt, decrypt): ignoring it
        silently would let a user believe it acted on the copy."""
        if self.storage_name is not None:
            raise UsageError(
                f"--storage {self.storage_name}: --storage names a copy to read; "
                f"`vkbackup {command}` does not read snapshots",
                hint="drop --storage (it is for list, show, verify, restore, drill, prune, "
                "check, storage check, and the source of copy)",
            )

    def copy_config(self, name: str) -> CopyConfig:
        """The [[copies]] table named *name*. Raise UsageError listing the
        configured copies if there is none."""
        cfg = self.config()
        found = cfg.copy_named(name)
        if found is None:
            known = ", ".join(c.name for c in cfg.copies) or "none"
            raise UsageError(
                f"no copy named {name!r} in the config {cfg.source_file} (its [[copies]]: {known})",
                hint="--storage and --to take the name of a [[copies]] table",
            )
        return found

    def copy_backend(self, name: str) -> Storage:
        """The backend of the copy *name*, records unsigned (a copy writes the
        signed bytes as they are), the destination of `vkbackup copy`. A local
        directory must exist: it is never created (a USB disk that is not
        mounted must not be filled in its mount point on /), and every use of a
        missing one raises StorageUnreachableError (exit 10) naming it; the
        other copies of the run go on. After limit_transfer(), the bytes put
        into it are paced by the upload limit (one pace shared by every copy of
        the run)."""
        from vkbackup.storage import open_storage

        backend = open_storage(self.copy_config(name).storage, create=False, copy_name=name)
        if self._limits is None:
            return backend
        from vkbackup.storage.throttled import KIB, ThrottledStorage, effective_kib
        from vkbackup.streams import RateLimiter

        if self._upload is None:
            up = effective_kib(self._limits[0], self.config().transfer.limit_upload_kib)
            self._upload = RateLimiter(up * KIB) if up else False
        if self._upload is False:
            return backend
        return ThrottledStorage(backend, upload=self._upload)

    def connect(self, host: HostConfig) -> Transport:
        """Open an authenticated, host-key-checked SSH connection to *host*."""
        from vkbackup.transport.ssh import connect

        return connect(host)

    def connect_ssh(self, host: HostConfig) -> SshTransport:
        """connect(), typed as SSH: for what needs more than commands (a TCP
        channel: `vkbackup wal-stream`)."""
        from vkbackup.transport.ssh import connect

        return connect(host)

    def identity_path(self, identity_path: str | None) -> tuple[str, str] | None:
        """Which identity file to use and what named it: *identity_path*
        (--identity/-i), else $VKBACKUP_IDENTITY, else the config's
        encryption.identity; None when none is."""
        if identity_path:
            return identity_path, "--identity"
        if os.environ.get(IDENTITY_ENV):
            return os.environ[IDENTITY_ENV], f"${IDENTITY_ENV}"
        cfg = self.config()
        if cfg.encryption.identity is not None:
            return str(cfg.encryption.identity), f"encryption.identity in {cfg.source_file}"
        return None

    def identities(self, identity_path: str | None, passphrase_file: str | None) -> list[Identity]:
        """The private keys from *identity_path*, else $VKBACKUP_IDENTITY, else
        encryption.identity; the passphrase of an encrypted identity file is
        asked only if needed. Raise ConfigError if none is given or configured."""
        from vkbackup.common import identities
        from vkbackup.crypto.keys import read_passphrase

        chosen = self.identity_path(identity_path)
        if chosen is not None:
            self.identity_origin = f"{chosen[0]} ({chosen[1]})"
        path = chosen[0] if chosen is not None else None
        return identities(self.config(), lambda: read_passphrase(passphrase_file), path)

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
        them, or None when no identity is given (--identity, $VKBACKUP_IDENTITY)
        or configured."""
        if self.identity_path(identity_path) is None:
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
            ages = self.freshness([host]) if isinstance(e, VkError) else []
            monitoring.report_error(cfg, host, e, time.monotonic() - t0, ages=ages)
            raise
        monitoring.report_result(cfg, result, self.freshness([host]))
        return result

    def monitored_job(
        self,
        job: str,
        hosts: Sequence[str],
        run: Callable[[], T],
        outcomes: Callable[[T], Sequence[JobOutcome]],
    ) -> T:
        """Run a *job* other than snapshot (verify, prune, drill, copy) of *hosts*
        between a "start" ping per host and the report of each host's outcome
        (*outcomes* of the result: pings, then the ages in the textfile), or of
        the error it raised, for every host. Under --storage NAME the job is
        reported as "JOB-NAME" (monitoring_job()) and no ages are written
        (freshness()). Monitoring problems are warnings; the job's own error
        propagates unchanged."""
        from vkbackup import monitoring

        job = self.monitoring_job(job)
        cfg = self.config().monitoring
        for h in hosts:
            monitoring.notify(cfg, "start", host=h, job=job)
        t0 = time.monotonic()
        try:
            result = run()
        except (VkError, KeyboardInterrupt) as e:
            ages = self.freshness(hosts) if isinstance(e, VkError) else []
            for h in hosts:
                mine = [a for a in ages if a.host == h]
                monitoring.report_error(cfg, h, e, time.monotonic() - t0, job=job, ages=mine)
            raise
        done = [self._as_reported(o, job) for o in outcomes(result)]
        monitoring.report_job(cfg, done, self.freshness([o.host for o in done]))
        return result

    def _as_reported(self, outcome: JobOutcome, job: str) -> JobOutcome:
        """*outcome* as monitoring gets it: named *job*, and under --storage NAME
        its reason saying it is the copy's (a healthchecks URL without "{job}"
        gets only the failure, its body the reason)."""
        reason = outcome.reason
        if reason and self.storage_name is not None:
            reason = f"{reason} (in the copy {self.storage_name}, --storage)"
        return dataclasses.replace(outcome, job=job, reason=reason)

    def monitoring_job(self, job: str) -> str:
        """The name monitoring knows *job* by: itself on [storage]; "JOB-NAME"
        under --storage NAME ("verify-offsite"), so a copy's verify or drill
        pings a check of its own ("{job}" in the URLs) and never stands in for
        the primary's. A copy's name is letters, digits, "." "_" "-": safe in a
        URL path; healthchecks.io slugs take lowercase letters, digits, "-" and
        "_" only."""
        return job if self.storage_name is None else f"{job}-{self.storage_name}"

    def freshness(self, hosts: Sequence[str]) -> Sequence[HostAges]:
        """The ages of each host's newest complete snapshot, passing verify and
        successful drill, read from storage, for the textfile: none when no
        textfile is configured (nothing is read then), none under --storage NAME
        (the textfile's ages are [storage]'s: a copy's would hide the primary's),
        and none, with a warning, when they cannot be read (monitoring never
        fails a run)."""
        if self.config().monitoring.textfile is None or not hosts:
            return []
        if self.storage_name is not None:
            return []
        from vkbackup.actions.check import Limits, check_hosts
        from vkbackup.logs import get_logger, redact

        try:
            limits = Limits.from_config(self.config())
            return check_hosts(self.storage(), sorted(set(hosts)), limits).hosts
        except Exception as e:
            get_logger("monitoring").warning(
                "the ages for the Prometheus textfile could not be read: %s: %s",
                type(e).__name__,
                redact(str(e)),
            )
            return []


pass_app = click.make_pass_decorator(AppContext)


def emit_json(doc: Any) -> None:
    """Print one JSON document on standard output (the --json contract)."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
