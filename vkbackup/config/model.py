"""Typed configuration objects, immutable. Built from the file by
`vkbackup.config.load`; a HostConfig is also built from a command line's
user@address (a restore target, `init`).

Every source keeps the key path it came from (`where`), so errors found later
(for example a container that does not exist on the host) can still name the
exact key in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

SOURCE_TYPES = ("postgres", "files", "docker-volume", "docker-image", "host")
#: docker-volume `quiesce`: how the volume's containers are held still during the copy
#: (vkbackup.sources.docker_volume says what each does and why "pause" is the default)
QUIESCE_MODES = ("pause", "stop", "none")


@dataclass(frozen=True)
class ObjectLock:
    mode: str  # "governance" | "compliance"
    days: int


@dataclass(frozen=True)
class StorageConfig:
    type: str = "local"  # "local" | "s3"
    path: Path = Path("/var/backups/vkbackup")
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"  # "auto" | "path" | "virtual"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    object_lock: ObjectLock | None = None
    part_size_mib: int | None = None  # None: chosen from the size hint
    max_attempts: int = 6


@dataclass(frozen=True)
class EncryptionConfig:
    recipients: tuple[str, ...] = ()
    identity: Path | None = None


@dataclass(frozen=True)
class SigningConfig:
    """[signing]: *key* is the OpenSSH Ed25519 private key the backup machine
    signs manifests and records with; *trusted* the public keys ("ssh-ed25519
    AAAA...") whose signatures readers accept (the key's own public half is
    always trusted too). Neither set: nothing is signed or checked."""

    key: Path | None = None
    trusted: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return self.key is not None or bool(self.trusted)


@dataclass(frozen=True)
class SourceConfig:
    """One thing backed up from a host. Fields not used by a type keep defaults."""

    type: str
    name: str
    where: str  # key path, e.g. "hosts.prod.sources[2]"
    # postgres
    container: str | None = None
    database: str | None = None
    user: str = "postgres"
    compress_level: int = 1
    globals: bool = True
    # files; host (extra paths, globs)
    paths: tuple[str, ...] = ()
    secret: bool = False
    # docker-volume
    volume: str | None = None
    stop: tuple[str, ...] | None = None  # None: the containers that use the volume
    quiesce: str = "pause"  # QUIESCE_MODES
    # seconds, `docker stop -t` (quiesce = "stop"); None: no -t, each container's own
    # stop timeout (its --stop-timeout / compose stop_grace_period, else Docker's 10 s)
    stop_timeout: int | None = None
    # docker-image
    images: tuple[str, ...] = ()
    # host: directories taken whole (Caddy's certificates), units restarted on restore
    data_dirs: tuple[str, ...] = ("/var/lib/caddy",)
    restart: tuple[str, ...] = ("caddy",)
    # postgres: point-in-time recovery, WAL streamed by `vkbackup wal-stream` ([pitr]);
    # at most one such source per container on a host
    pitr: bool = False


@dataclass(frozen=True)
class HooksConfig:
    """[hosts.NAME.hooks]: shell commands around a snapshot or restore of the host
    (what runs where and when: `vkbackup.hooks`). *timeout*: seconds each command
    may take."""

    before_snapshot: tuple[str, ...] = ()
    after_snapshot: tuple[str, ...] = ()
    before_restore: tuple[str, ...] = ()
    after_restore: tuple[str, ...] = ()
    on_failure: tuple[str, ...] = ()
    timeout: float = 600.0


@dataclass(frozen=True)
class HostConfig:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path = field(default_factory=lambda: Path("~/.ssh/known_hosts").expanduser())
    key_passphrase_env: str | None = None
    connect_timeout: float = 15.0
    sources: tuple[SourceConfig, ...] = ()
    hooks: HooksConfig = field(default_factory=HooksConfig)


@dataclass(frozen=True)
class RetentionConfig:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def is_empty(self) -> bool:
        """Return True when every keep_* is 0 (prune then keeps everything)."""
        return not any(
            (
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
            )
        )


@dataclass(frozen=True)
class SnapshotConfig:
    parallel: int = 2
    full_every_days: int = 7  # incremental volumes: a full tar at least this often
    max_chain: int = 6  # incremental volumes: at most this many incrementals after a full
    # tars and images: "auto"/"zstd" = zstd, by the host's zstd, else here (zstd_compress);
    # "gzip" = gzip -1 on the host; "none"
    compression: str = "auto"
    # after each snapshot, copy it to every [[copies]] storage (`vkbackup.actions.copy`)
    copy_after: bool = False


@dataclass(frozen=True)
class TransferConfig:
    """[transfer]: bandwidth limits in KiB/s (0: none). Upload: the bytes a
    snapshot puts into storage; download: the bytes restore and verify read from
    it (`vkbackup.storage.throttled`). --limit-upload / --limit-download override."""

    limit_upload_kib: int = 0
    limit_download_kib: int = 0


@dataclass(frozen=True)
class MonitoringConfig:
    healthchecks_url: str | None = None
    webhook_url: str | None = None
    textfile: Path | None = None


@dataclass(frozen=True)
class DrillConfig:
    max_age_days: int = 100
    health_timeout: float = 120.0


@dataclass(frozen=True)
class CheckConfig:
    """[check]: how old the newest complete snapshot, passing verify and successful
    drill of a host may be before `vkbackup check` calls it stale. No
    max_drill_age: drill.max_age_days (one knob for the drill warning and check)."""

    max_age: timedelta = timedelta(hours=26)
    max_verify_age: timedelta = timedelta(days=8)
    max_drill_age: timedelta | None = None


#: the name of the file next to the config file that holds the replication role's
#: password when [pitr] password_file is not set (a file name, not a password)
PITR_PASSWORD_FILE_NAME = "pitr-password"  # noqa: S105


@dataclass(frozen=True)
class PitrConfig:
    """[pitr]: point-in-time recovery of the postgres sources with ``pitr = true``.

    The WAL stream runs on the backup machine as `vkbackup wal-stream`:
    pg_receivewal, connected to prod's database as *role* (password in
    *password_file*) on *port* inside the container, writes WAL segments into
    *spool_dir* (a tmpfs, so the spool never touches the backup machine's disk);
    a physical replication slot named *slot* makes prod keep its WAL until it is
    stored, so a stopped stream loses nothing.

    * *max_lag*: how far the stored WAL may trail prod before it is an alert:
      the bound on the recovery point objective (RPO).
    * *max_slot_lag_mib*: WAL (MiB) prod holds for the slot: a warning at half
      this, an alert at the full value (a stuck stream fills prod's disk).
    * *base_every_days*: `vkbackup snapshot` takes a new base backup when the
      newest is older than this (replay starts at a base backup); 0: with
      every snapshot.
    * *skew*: the clock difference allowed between prod and the backup machine
      when choosing the WAL for a restore to a point in time, and between the
      WAL stream's and the snapshot's machines when prune decides which WAL
      the oldest kept base backup needs.
    * *password_file*: None means ``pitr-password`` next to the config file;
      `password_path` resolves it (and a relative one) against the config file.
    """

    max_lag: timedelta = timedelta(seconds=60)
    max_slot_lag_mib: int = 1024
    base_every_days: int = 7
    slot: str = "vkbackup"
    role: str = "vkbackup_wal"
    password_file: Path | None = None  # as written (with ~ expanded); see password_path
    spool_dir: Path = Path("/dev/shm/vkbackup-wal")
    port: int = 5432
    skew: timedelta = timedelta(minutes=5)

    def password_path(self, config_file: Path | None) -> Path:
        """Given the config file this came from (Config.source_file; None: none),
        return the file holding the replication role's password: *password_file*
        if absolute; else *password_file*, or ``pitr-password`` when it is not
        set, in the config file's directory (without a config file: relative to
        the working directory, as given). Pure: reads nothing."""
        path = (
            self.password_file if self.password_file is not None else Path(PITR_PASSWORD_FILE_NAME)
        )
        if path.is_absolute() or config_file is None:
            return path
        return config_file.parent / path


@dataclass(frozen=True)
class CopyConfig:
    """One [[copies]] table: another storage that `vkbackup copy` fills with the
    snapshots of the main one, byte for byte (3-2-1). *retention*: its own
    [copies.retention], else the main [retention]."""

    name: str
    storage: StorageConfig
    retention: RetentionConfig


@dataclass(frozen=True)
class Config:
    source_file: Path | None
    storage: StorageConfig = field(default_factory=StorageConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    hosts: dict[str, HostConfig] = field(default_factory=dict)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    drill: DrillConfig = field(default_factory=DrillConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    copies: tuple[CopyConfig, ...] = ()
    pitr: PitrConfig = field(default_factory=PitrConfig)

    @property
    def pitr_password_path(self) -> Path:
        """[pitr]'s password file, resolved against this config's file
        (`PitrConfig.password_path`)."""
        return self.pitr.password_path(self.source_file)

    def copy_named(self, name: str) -> CopyConfig | None:
        """The [[copies]] table named *name*, or None."""
        return next((c for c in self.copies if c.name == name), None)
