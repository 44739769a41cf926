"""[pitr] and a postgres source's `pitr = true`: defaults, every key parsed, bad
values refused with their key path, pitr only on postgres, one PITR source per
host, and where the replication password file is looked for."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from vkbackup.config import load_config, parse_config
from vkbackup.config.model import Config, PitrConfig
from vkbackup.errors import ConfigError

HOST = """
[hosts.prod]
address = "10.0.0.1"
"""

PG = """
[[hosts.prod.sources]]
type = "postgres"
name = "{name}"
container = "{container}"
database = "app"
"""


def load(text: str) -> Config:
    return parse_config(tomllib.loads(text), "vk.toml")


def pitr(body: str) -> PitrConfig:
    return load(f"[pitr]\n{body}\n").pitr


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(text)
    return str(e.value)


def test_defaults_without_a_pitr_table() -> None:
    cfg = load("")
    assert cfg.pitr == PitrConfig()
    p = cfg.pitr
    assert p.max_lag == timedelta(seconds=60)
    assert p.max_slot_lag_mib == 1024
    assert p.base_every_days == 7
    assert p.slot == "vkbackup"
    assert p.role == "vkbackup_wal"
    assert p.password_file is None
    assert p.spool_dir == Path("/dev/shm/vkbackup-wal")
    assert p.port == 5432
    assert p.skew == timedelta(minutes=5)
    assert load("[pitr]\n").pitr == PitrConfig()


def test_every_key_set() -> None:
    p = pitr(
        """
        max_lag = "2m"
        max_slot_lag_mib = 4096
        base_every_days = 1
        slot = "vk_slot_2"
        role = "_wal"
        password_file = "/etc/vkbackup/wal.pass"
        spool_dir = "/run/vk-wal"
        port = 5433
        skew = "30s"
        """
    )
    assert p == PitrConfig(
        max_lag=timedelta(minutes=2),
        max_slot_lag_mib=4096,
        base_every_days=1,
        slot="vk_slot_2",
        role="_wal",
        password_file=Path("/etc/vkbackup/wal.pass"),
        spool_dir=Path("/run/vk-wal"),
        port=5433,
        skew=timedelta(seconds=30),
    )


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        ('max_lag = "1s"', "max_lag", timedelta(seconds=1)),
        ('max_lag = "1h"', "max_lag", timedelta(hours=1)),
        ('max_lag = "1m 30s"', "max_lag", timedelta(seconds=90)),
        ("max_slot_lag_mib = 16", "max_slot_lag_mib", 16),
        ("base_every_days = 30", "base_every_days", 30),
        ("base_every_days = 0", "base_every_days", 0),  # a base backup with every snapshot
        ('slot = "0slot"', "slot", "0slot"),
        ('slot = "' + "s" * 63 + '"', "slot", "s" * 63),
        ('role = "' + "r" * 63 + '"', "role", "r" * 63),
        ('spool_dir = "/dev/shm/x"', "spool_dir", Path("/dev/shm/x")),
        ("port = 1", "port", 1),
        ("port = 65535", "port", 65535),
        ('skew = "0s"', "skew", timedelta(0)),
        ('skew = "0m"', "skew", timedelta(0)),
        ('skew = "1h"', "skew", timedelta(hours=1)),
    ],
)
def test_each_key_alone(body: str, field: str, value: object) -> None:
    p = pitr(body)
    assert getattr(p, field) == value
    others = {k: v for k, v in vars(p).items() if k != field}
    assert others == {k: v for k, v in vars(PitrConfig()).items() if k != field}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('max_lag = "60"', "vk.toml: pitr.max_lag: '60' is not a duration"),
        ("max_lag = 60", "vk.toml: pitr.max_lag: must be a duration"),
        ('max_lag = "0s"', "vk.toml: pitr.max_lag: '0s' must be longer than zero"),
        ('max_lag = "61m"', "vk.toml: pitr.max_lag: must be between 1s and 1h, got '61m'"),
        ('max_lag = "2h"', "vk.toml: pitr.max_lag: must be between 1s and 1h"),
        ("max_slot_lag_mib = 15", "vk.toml: pitr.max_slot_lag_mib: must be between 16 and"),
        ('max_slot_lag_mib = "1G"', "vk.toml: pitr.max_slot_lag_mib: must be an integer"),
        ("max_slot_lag_mib = true", "vk.toml: pitr.max_slot_lag_mib: must be an integer"),
        ("base_every_days = -1", "vk.toml: pitr.base_every_days: must be between 0 and"),
        ('slot = "VkBackup"', "vk.toml: pitr.slot: must be a replication slot name"),
        ('slot = "vk-backup"', "vk.toml: pitr.slot: must be a replication slot name"),
        ('slot = "' + "s" * 64 + '"', "vk.toml: pitr.slot: must be a replication slot name"),
        ('slot = "vk\\n"', "vk.toml: pitr.slot: must be a replication slot name"),
        ('slot = ""', "vk.toml: pitr.slot: must not be empty"),
        ("slot = 1", "vk.toml: pitr.slot: must be a string"),
        ('role = "1wal"', "vk.toml: pitr.role: must be lowercase letters"),
        ('role = "Wal"', "vk.toml: pitr.role: must be lowercase letters"),
        ('role = "wal-role"', "vk.toml: pitr.role: must be lowercase letters"),
        ('role = "' + "r" * 64 + '"', "vk.toml: pitr.role: must be lowercase letters"),
        ('role = "pg_wal"', "vk.toml: pitr.role: must not start with 'pg_'"),
        ('password_file = ""', "vk.toml: pitr.password_file: must not be empty"),
        ("password_file = 1", "vk.toml: pitr.password_file: must be a string"),
        ('spool_dir = "wal"', "vk.toml: pitr.spool_dir: must be an absolute path, got 'wal'"),
        ('spool_dir = "./wal"', "vk.toml: pitr.spool_dir: must be an absolute path"),
        ('spool_dir = "/"', "vk.toml: pitr.spool_dir: must be a directory of its own"),
        ('spool_dir = "/dev/shm/../etc"', "vk.toml: pitr.spool_dir: must be a directory"),
        ("port = 0", "vk.toml: pitr.port: must be between 1 and 65535, got 0"),
        ("port = 65536", "vk.toml: pitr.port: must be between 1 and 65535, got 65536"),
        ('port = "5432"', "vk.toml: pitr.port: must be an integer"),
        ('skew = "2h"', "vk.toml: pitr.skew: must be between 0s and 1h, got '2h'"),
        ('skew = "5"', "vk.toml: pitr.skew: '5' is not a duration"),
        ("skew = 0", "vk.toml: pitr.skew: must be a duration"),
        ('skew = "-5m"', "vk.toml: pitr.skew: '-5m' is not a duration"),
        ('max_lags = "1m"', "vk.toml: pitr.max_lags: unknown key (did you mean 'max_lag'?)"),
        ("enabled = true", "vk.toml: pitr.enabled: unknown key"),
    ],
)
def test_bad_values_are_refused_naming_the_key(body: str, message: str) -> None:
    assert refused(f"[pitr]\n{body}\n").startswith(message)


def test_pitr_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^vk.toml: pitr: must be a table, got a boolean$"):
        load("pitr = true\n")


def test_postgres_source_pitr_defaults_off_and_turns_on() -> None:
    cfg = load(HOST + PG.format(name="db", container="pg-1"))
    assert cfg.hosts["prod"].sources[0].pitr is False
    cfg = load(HOST + PG.format(name="db", container="pg-1") + "pitr = true\n")
    assert cfg.hosts["prod"].sources[0].pitr is True
    cfg = load(HOST + PG.format(name="db", container="pg-1") + "pitr = false\n")
    assert cfg.hosts["prod"].sources[0].pitr is False


def test_source_pitr_must_be_a_boolean() -> None:
    msg = refused(HOST + PG.format(name="db", container="pg-1") + 'pitr = "yes"\n')
    assert msg.startswith("vk.toml: hosts.prod.sources[0].pitr: must be true or false")


@pytest.mark.parametrize(
    "body",
    [
        'type = "files"\nname = "f"\npaths = ["/srv"]',
        'type = "docker-volume"\nname = "v"\nvolume = "data"',
        'type = "docker-image"\nname = "i"\nimages = ["nginx:1"]',
        'type = "host"\nname = "h"',
    ],
)
@pytest.mark.parametrize("value", ["true", "false"])
def test_pitr_on_a_source_that_is_not_postgres_is_refused(body: str, value: str) -> None:
    text = HOST + PG.format(name="db", container="pg-1")
    text += f"\n[[hosts.prod.sources]]\n{body}\npitr = {value}\n"
    typ = body.split('"')[1]
    assert refused(text) == (
        f"vk.toml: hosts.prod.sources[1].pitr: only applies to postgres sources "
        f"(this one is {typ!r})"
    )


def test_a_second_pitr_source_on_a_host_is_refused_naming_both() -> None:
    text = (
        HOST
        + PG.format(name="a", container="pg-1")
        + "pitr = true\n"
        + PG.format(name="b", container="pg-2")
        + "pitr = true\n"
    )
    msg = refused(text)
    assert msg.startswith(
        "vk.toml: hosts.prod.sources[1].pitr: only one postgres source per host may have "
        "pitr = true (the first is hosts.prod.sources[0])"
    )


def test_one_pitr_source_per_host_is_fine() -> None:
    text = (
        HOST
        + PG.format(name="a", container="pg-1")
        + "pitr = true\n"
        + PG.format(name="c", container="pg-1")  # same cluster, no stream of its own
        + "\n[hosts.stage]\naddress = 'b'\n"
        + PG.format(name="a", container="pg-1").replace("hosts.prod", "hosts.stage")
        + "pitr = true\n"
    )
    cfg = load(text)
    assert [s.pitr for s in cfg.hosts["prod"].sources] == [True, False]
    assert [s.pitr for s in cfg.hosts["stage"].sources] == [True]


def test_password_path_resolution() -> None:
    conf = Path("/etc/vkbackup/vkbackup.toml")
    assert PitrConfig().password_path(conf) == Path("/etc/vkbackup/pitr-password")
    assert PitrConfig().password_path(None) == Path("pitr-password")
    rel = pitr('password_file = "secrets/wal.pass"')
    assert rel.password_file == Path("secrets/wal.pass")
    assert rel.password_path(conf) == Path("/etc/vkbackup/secrets/wal.pass")
    absolute = pitr('password_file = "/root/wal.pass"')
    assert absolute.password_path(conf) == Path("/root/wal.pass")
    home = pitr('password_file = "~/wal.pass"')
    assert home.password_file == Path("~/wal.pass").expanduser()
    assert home.password_path(conf) == Path("~/wal.pass").expanduser()


def test_password_path_of_a_loaded_file(tmp_path: Path) -> None:
    conf = tmp_path / "vkbackup.toml"
    conf.write_text("[pitr]\nmax_lag = '30s'\n")
    cfg = load_config(conf)
    assert cfg.pitr.max_lag == timedelta(seconds=30)
    assert cfg.pitr_password_path == tmp_path / "pitr-password"
    conf.write_text("[pitr]\npassword_file = 'wal.pass'\n")
    assert load_config(conf).pitr_password_path == tmp_path / "wal.pass"
    assert load_config(None).pitr_password_path == Path("pitr-password")
