"""Restore to a point in time, the parts that run without a target
(`vkbackup.pitr.recover`): the target as the operator types it, the base backup
and the WAL chosen for it (refused, naming why, when the WAL does not reach),
where the data directory is on the host, the recovery settings (no hostile value
becomes a config line), the server's log read back, and the tar of staged WAL
built from encrypted objects (verified, a partial padded, a replaced partial
read again through its newer record)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.test_pitr_stream import MemStorage
from vkbackup.crypto import X25519Identity, encrypt_bytes, generate_identity
from vkbackup.errors import CryptoError, IntegrityError, RestoreError, UsageError
from vkbackup.manifest import ObjectRecord
from vkbackup.pitr import wal
from vkbackup.pitr.recover import (
    STAGE_DIR,
    BaseBackup,
    Target,
    WalTar,
    choose_base,
    choose_wal,
    data_host_path,
    parse_target,
    recovery_point,
    settings_lines,
    stored_again,
    wal_object,
)
from vkbackup.pitr.stream import ProdFacts, Store
from vkbackup.pitr.wal import DEFAULT_SEGMENT_SIZE as SEG
from vkbackup.pitr.wal import WalRecord
from vkbackup.progress import Progress
from vkbackup.restore.steps import PitrParams, StepContext
from vkbackup.sources.postgres import BaseFacts
from vkbackup.streams import Readable
from vkbackup.transport.base import Completed, Process

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
SYSID = "7441234567890123456"
HOST = "prod"
SHA = "ab" * 32


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def name(segno: int, tli: int = 1, seg: int = SEG) -> str:
    return wal.segment_name(tli, segno, seg)


# -- the target ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2026-12-01 17:59:30+00", datetime(2026, 12, 1, 17, 59, 30, tzinfo=UTC)),
        ("2026-12-01T17:59:30Z", datetime(2026, 12, 1, 17, 59, 30, tzinfo=UTC)),
        ("2026-12-01 17:59:30+00:00", datetime(2026, 12, 1, 17, 59, 30, tzinfo=UTC)),
        ("2026-12-01 19:59:30+02", datetime(2026, 12, 1, 17, 59, 30, tzinfo=UTC)),
        ("2026-12-01 12:59:30-05:00", datetime(2026, 12, 1, 17, 59, 30, tzinfo=UTC)),
        ("2026-12-01 17:59:30.25+00", datetime(2026, 12, 1, 17, 59, 30, 250000, tzinfo=UTC)),
        (" 2026-12-01 17:59:30Z ", datetime(2026, 12, 1, 17, 59, 30, tzinfo=UTC)),
    ],
)
def test_parse_target_time_in_utc(text: str, when: datetime) -> None:
    target = parse_target(text, None)
    assert target is not None and target.time == when and target.lsn is None
    assert target.time.utcoffset() == timedelta(0)
    assert not target.latest


def test_parse_target_latest_and_neither() -> None:
    latest = parse_target("latest", None)
    assert latest == Target() and latest.latest
    assert latest.describe() == "the newest WAL stored"
    assert parse_target(None, None) is None


@pytest.mark.parametrize("text", ["16/B374D848", "16/b374d848", "0/0", "FFFFFFFF/FFFFFFFF"])
def test_parse_target_lsn(text: str) -> None:
    target = parse_target(None, text)
    assert target is not None and target.time is None
    assert target.lsn == wal.parse_lsn(text)
    assert target.describe() == f"LSN {wal.format_lsn(wal.parse_lsn(text))}"


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01 17:59:30",  # no offset: this machine's zone is not prod's
        "2026-12-01T17:59",
        "2026-12-01",
        "yesterday",
        "",
        "Latest",
        "2026-13-01 17:59:30+00",
        "2026-12-01 17:59:30+00\nrecovery_target_action = 'shutdown'",
    ],
)
def test_parse_target_refuses_a_time_without_offset_or_garbage(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_target(text, None)
    assert "--to-time" in str(e.value)


@pytest.mark.parametrize("text", ["16/", "/1", "16/B374D848/1", "0x16/1", "16/123456789", "", "x"])
def test_parse_target_refuses_a_bad_lsn(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_target(None, text)
    assert "--to-lsn" in str(e.value)


def test_parse_target_refuses_both() -> None:
    with pytest.raises(UsageError):
        parse_target("2026-12-01 17:59:30+00", "16/B374D848")
    with pytest.raises(UsageError):
        parse_target("latest", "0/0")


# -- the base backup -------------------------------------------------------------------


def base(
    snapshot: str,
    end: datetime,
    *,
    start_lsn: int = 3 * SEG + 0x28,
    end_lsn: int = 3 * SEG + 0x138,
    tli: int = 1,
) -> BaseBackup:
    facts = BaseFacts(
        start_lsn=start_lsn,
        end_lsn=end_lsn,
        timeline=tli,
        end_time=end,
        system_identifier=SYSID,
        data_directory="/var/lib/postgresql/data",
        major=15,
    )
    obj = ObjectRecord(
        key=f"data/{HOST}/{snapshot}/db/base.tar.gz.age",
        source="db",
        name="base.tar.gz.age",
        role="pg-base",
        size=100,
        sha256=SHA,
        compression="gzip",
    )
    return BaseBackup(snapshot, "db", obj, facts)


BASES = [
    base("20261120T020000Z-aaaa", datetime(2026, 11, 20, 2, 5, tzinfo=UTC), end_lsn=1 * SEG),
    base("20261122T020000Z-bbbb", datetime(2026, 11, 22, 2, 5, tzinfo=UTC), end_lsn=5 * SEG),
    base("20261124T020000Z-cccc", datetime(2026, 11, 24, 2, 5, tzinfo=UTC), end_lsn=9 * SEG),
]


@pytest.mark.parametrize(
    ("when", "snapshot"),
    [
        (datetime(2026, 11, 23, 12, 0, tzinfo=UTC), "20261122T020000Z-bbbb"),
        (datetime(2026, 11, 22, 2, 5, tzinfo=UTC), "20261122T020000Z-bbbb"),  # ended at it
        (datetime(2026, 11, 22, 2, 4, 59, tzinfo=UTC), "20261120T020000Z-aaaa"),
        (datetime(2026, 12, 30, tzinfo=UTC), "20261124T020000Z-cccc"),
        (datetime(2026, 11, 20, 2, 5, tzinfo=UTC), "20261120T020000Z-aaaa"),
    ],
)
def test_choose_base_is_the_newest_that_ended_before_the_time(
    when: datetime, snapshot: str
) -> None:
    assert choose_base(BASES, Target(time=when), "db").snapshot == snapshot


def test_choose_base_for_latest_is_the_newest() -> None:
    assert choose_base(BASES, Target(), "db").snapshot == "20261124T020000Z-cccc"


@pytest.mark.parametrize(
    ("lsn", "snapshot"),
    [
        (5 * SEG, "20261122T020000Z-bbbb"),
        (9 * SEG - 1, "20261122T020000Z-bbbb"),
        (9 * SEG, "20261124T020000Z-cccc"),
        (1 * SEG, "20261120T020000Z-aaaa"),
    ],
)
def test_choose_base_for_an_lsn_uses_where_it_ended(lsn: int, snapshot: str) -> None:
    assert choose_base(BASES, Target(lsn=lsn), "db").snapshot == snapshot


def test_choose_base_before_the_oldest_names_it() -> None:
    with pytest.raises(RestoreError) as e:
        choose_base(BASES, Target(time=datetime(2026, 11, 20, 2, 0, tzinfo=UTC)), "db")
    msg = str(e.value)
    assert "20261120T020000Z-aaaa" in msg and "before the oldest base backup" in msg
    assert "2026-11-20T02:05:00+00:00" in msg
    with pytest.raises(RestoreError) as e:
        choose_base(BASES, Target(lsn=SEG - 1), "db")
    assert "20261120T020000Z-aaaa" in str(e.value) and "LSN 0/FFFFFF" in str(e.value)


def test_choose_base_without_any_says_pitr_needs_one() -> None:
    with pytest.raises(RestoreError) as e:
        choose_base([], Target(), "db")
    assert "source db" in str(e.value) and "base backup" in str(e.value)


# -- the WAL ---------------------------------------------------------------------------


def record(
    segno: int,
    *,
    kind: str = "full",
    plain: int | None = None,
    at: float | None = None,
    sysid: str = SYSID,
    tli: int = 1,
) -> WalRecord:
    """A record of segment *segno* stored *at* minutes (default: *segno*) after T0."""
    n = wal.history_name(tli) if kind == "history" else name(segno, tli)
    if plain is None:
        plain = SEG if kind == "full" else 1000
    return WalRecord(
        host=HOST,
        timeline=tli,
        name=n,
        kind=kind,
        key=wal.object_key(HOST, tli, n, kind),
        sha256=SHA,
        size=plain + 200,
        plain_size=plain,
        segment_size=SEG,
        system_identifier=sysid,
        time=minutes(segno if at is None else at),
    )


# segments 3, 4, 5 whole, 6 the partial (1000 bytes); the base starts and ends in 3
CHAIN = [record(3), record(4), record(5), record(6, kind="partial")]
BASE = base("20261126T020000Z-dddd", minutes(2))


def staged(records: list[WalRecord]) -> list[str]:
    return [r.name + (".partial" if r.kind == "partial" else "") for r in records]


@pytest.mark.parametrize(
    ("target", "skew"),
    [(4.5, 0), (5, 0), (3, 0), (2.5, 0), (4.5, 2), (6, 0), (10, 5)],
)
def test_choose_wal_for_a_time_stages_the_whole_chain(target: float, skew: float) -> None:
    # when a segment was stored says nothing of when its WAL was written (old WAL is
    # stored late after an outage): everything from the base backup on is staged and
    # PostgreSQL stops at the target
    chosen, chain = choose_wal(CHAIN, BASE, Target(time=minutes(target)), timedelta(minutes=skew))
    assert chosen == CHAIN
    assert chain.end_lsn == 6 * SEG + 1000


def test_choose_wal_for_latest_is_everything() -> None:
    chosen, _ = choose_wal(CHAIN, BASE, Target(), timedelta(0))
    assert chosen == CHAIN


def test_choose_wal_stages_the_timeline_history_first() -> None:
    history = record(0, kind="history", plain=40, at=1)
    chosen, chain = choose_wal([*CHAIN, history], BASE, Target(time=minutes(3.5)), timedelta(0))
    assert chain.history == history
    assert chosen == [history, *CHAIN]


def test_choose_wal_leaves_another_cluster_out_and_names_it() -> None:
    foreign = record(4, sysid="1234", at=4.1)
    chosen, chain = choose_wal([*CHAIN, foreign], BASE, Target(), timedelta(0))
    assert chosen == CHAIN
    assert chain.foreign == (foreign.key,)


def test_choose_wal_refuses_a_time_after_the_chain() -> None:
    with pytest.raises(RestoreError) as e:
        choose_wal(CHAIN, BASE, Target(time=minutes(11.01)), timedelta(minutes=5))
    msg = str(e.value)
    assert "after the newest WAL" in msg
    assert BASE.snapshot in msg
    assert "2026-11-26T02:06:00+00:00" in msg  # when the partial was stored
    assert wal.format_lsn(6 * SEG + 1000) in msg
    assert e.value.hint is not None and "latest" in e.value.hint


def test_choose_wal_names_a_gap_before_the_base_is_consistent() -> None:
    # the base backup ran across segments 3 and 4; segment 4 never reached storage
    spanning = base("20261126T020000Z-eeee", minutes(2), end_lsn=4 * SEG + 0x100)
    records = [record(3), record(5), record(6, kind="partial")]
    with pytest.raises(RestoreError) as e:
        choose_wal(records, spanning, Target(), timedelta(0))
    msg = str(e.value)
    assert "before the backup is consistent" in msg
    assert name(4) in msg
    assert wal.format_lsn(4 * SEG) in msg  # where the run stops
    assert wal.format_lsn(4 * SEG + 0x100) in msg


def test_choose_wal_names_a_gap_that_stops_a_later_target() -> None:
    records = [record(3), record(5), record(6, kind="partial")]
    with pytest.raises(RestoreError) as e:
        choose_wal(records, BASE, Target(time=minutes(4.5)), timedelta(0))
    msg = str(e.value)
    assert "after the newest WAL" in msg and name(4) in msg
    # a time before the gap is still reachable: only segment 3
    chosen, chain = choose_wal(records, BASE, Target(time=minutes(2.5)), timedelta(0))
    assert chosen == [records[0]]
    assert chain.gaps == (name(4),)


def test_choose_wal_without_any_wal_refuses() -> None:
    with pytest.raises(RestoreError) as e:
        choose_wal([], BASE, Target(), timedelta(0))
    assert "before the backup is consistent" in str(e.value)
    assert e.value.hint is not None and "wal-stream" in e.value.hint


@pytest.mark.parametrize(
    ("lsn", "want"),
    [
        # the segment holding the target and the next one: the record that ends
        # recovery starts at or after the target and may run into it
        (3 * SEG + 0x200, [3, 4]),
        (4 * SEG, [3, 4, 5]),
        (4 * SEG + 100, [3, 4, 5]),
        (6 * SEG + 500, [3, 4, 5, 6]),
        (6 * SEG + 1000, [3, 4, 5, 6]),  # exactly where the stored WAL ends
    ],
)
def test_choose_wal_for_an_lsn_cuts_the_chain(lsn: int, want: list[int]) -> None:
    chosen, _ = choose_wal(CHAIN, BASE, Target(lsn=lsn), timedelta(0))
    assert [r.segno for r in chosen] == want
    assert all(r.kind == "full" for r in chosen if r.segno != 6)


def test_choose_wal_for_an_lsn_near_a_segment_end_stages_the_next_segment() -> None:
    # 8 bytes before segment 5: no WAL record (24-byte header) fits; it continues in 5
    chosen, _ = choose_wal(CHAIN, BASE, Target(lsn=5 * SEG - 8), timedelta(0))
    assert 5 in [r.segno for r in chosen]


def test_choose_wal_refuses_an_lsn_beyond_the_chain() -> None:
    with pytest.raises(RestoreError) as e:
        choose_wal(CHAIN, BASE, Target(lsn=6 * SEG + 1001), timedelta(0))
    msg = str(e.value)
    assert "beyond the WAL stored" in msg and wal.format_lsn(6 * SEG + 1000) in msg


def test_wal_object_pins_the_record() -> None:
    rec = CHAIN[3]
    obj = wal_object(rec, "db")
    assert (obj.key, obj.size, obj.sha256, obj.role, obj.source) == (
        rec.key,
        rec.size,
        rec.sha256,
        "wal-partial",
        "db",
    )
    assert obj.name == f"{name(6)}.partial.age"
    assert obj.compression == "none"


# -- the data directory on the host --------------------------------------------------------

VOLUME = (
    '[{"Type":"volume","Name":"pgdata","Source":"/var/lib/docker/volumes/pgdata/_data",'
    '"Destination":"/var/lib/postgresql/data","Driver":"local","Mode":"z","RW":true,'
    '"Propagation":""}]\n'
)


def test_data_host_path_of_a_volume() -> None:
    assert (
        data_host_path(VOLUME, "/var/lib/postgresql/data", "pg")
        == "/var/lib/docker/volumes/pgdata/_data"
    )


def test_data_host_path_of_pgdata_in_a_subdirectory() -> None:
    assert (
        data_host_path(VOLUME, "/var/lib/postgresql/data/pgdata", "pg")
        == "/var/lib/docker/volumes/pgdata/_data/pgdata"
    )


@pytest.mark.parametrize("reverse", [False, True])
def test_data_host_path_the_longest_mount_wins(reverse: bool) -> None:
    mounts = [
        '{"Type":"bind","Source":"/srv/pg","Destination":"/var/lib/postgresql"}',
        '{"Type":"bind","Source":"/srv/pgdata/","Destination":"/var/lib/postgresql/data/"}',
        '{"Type":"bind","Source":"/srv/conf","Destination":"/etc/postgresql"}',
    ]
    if reverse:
        mounts.reverse()
    text = "[" + ",".join(mounts) + "]"
    assert data_host_path(text, "/var/lib/postgresql/data/16", "pg") == "/srv/pgdata/16"
    assert data_host_path(text, "/var/lib/postgresql/other", "pg") == "/srv/pg/other"


def test_data_host_path_a_name_prefix_is_no_mount() -> None:
    text = '[{"Source":"/srv/a","Destination":"/var/lib/postgresql/data"}]'
    with pytest.raises(RestoreError):
        data_host_path(text, "/var/lib/postgresql/database", "pg")


@pytest.mark.parametrize(
    "mounts",
    [
        "[]",
        "null",
        "{}",
        '[{"Source":"/srv/a","Destination":"/etc/postgresql"}]',
        '[{"Source":"relative/dir","Destination":"/var/lib/postgresql/data"}]',
        '[{"Source":7,"Destination":"/var/lib/postgresql/data"}]',
        '[{"Destination":"/var/lib/postgresql/data"}]',
    ],
)
def test_data_host_path_without_a_mount_refuses_naming_the_container(mounts: str) -> None:
    with pytest.raises(RestoreError) as e:
        data_host_path(mounts, "/var/lib/postgresql/data", "pg-main")
    msg = str(e.value)
    assert "pg-main" in msg and "/var/lib/postgresql/data" in msg


@pytest.mark.parametrize("mounts", ["", "not json", "[{", "<no value>"])
def test_data_host_path_of_garbage_refuses(mounts: str) -> None:
    with pytest.raises(RestoreError) as e:
        data_host_path(mounts, "/var/lib/postgresql/data", "pg-main")
    assert "pg-main" in str(e.value)


@pytest.mark.parametrize("mounts", ["[1]", '["/srv/a"]', "[null]"])
def test_data_host_path_of_a_list_of_non_objects_refuses(mounts: str) -> None:
    with pytest.raises(RestoreError):
        data_host_path(mounts, "/var/lib/postgresql/data", "pg-main")


def test_data_host_path_refuses_a_directory_that_climbs_out() -> None:
    text = '[{"Source":"/srv/pg","Destination":"/d"}]'
    with pytest.raises(RestoreError) as e:
        data_host_path(text, "/d/..", "pg")
    assert "escapes" in str(e.value)
    with pytest.raises(RestoreError):
        data_host_path(text, "/d/../../etc", "pg")


def test_data_host_path_refuses_a_sibling_of_the_mount() -> None:
    text = '[{"Source":"/srv/pg","Destination":"/d"}]'
    with pytest.raises(RestoreError):
        data_host_path(text, "/d/../pgx", "pg")


def test_data_host_path_refuses_control_characters() -> None:
    text = '[{"Source":"/srv/pg","Destination":"/d"}]'
    with pytest.raises(RestoreError):
        data_host_path(text, "/d/x\ny", "pg")


# -- the recovery settings -------------------------------------------------------------


def pitr(target_time: str = "", target_lsn: str = "") -> PitrParams:
    return PitrParams(
        container="pg", database="app", major=15, target_time=target_time, target_lsn=target_lsn
    )


RESTORE_LINE = f"restore_command = 'cp {STAGE_DIR}/%f \"%p\"'"


def test_settings_for_a_time_in_utc() -> None:
    lines = settings_lines(pitr(target_time="2026-12-01T19:59:30.5+02:00"))
    assert lines == [
        RESTORE_LINE,
        "recovery_target_action = 'promote'",
        "recovery_target_time = '2026-12-01 17:59:30.500000+00'",
    ]


def test_settings_for_an_lsn() -> None:
    lines = settings_lines(pitr(target_lsn="16/b374d848"))
    assert lines == [
        RESTORE_LINE,
        "recovery_target_action = 'promote'",
        "recovery_target_lsn = '16/B374D848'",
    ]


def test_settings_for_latest() -> None:
    assert settings_lines(pitr()) == [RESTORE_LINE, "recovery_target_action = 'promote'"]


def test_settings_never_carry_a_hostile_value() -> None:
    for p in (
        pitr(target_time="2026-12-01T17:59:30+00:00"),
        pitr(target_lsn="0/3000000"),
        pitr(),
    ):
        for line in settings_lines(p):
            assert "\n" not in line and "\r" not in line
            assert line.count("'") in (2, 4)  # one quoted value (restore_command: two)
    with pytest.raises(ValueError):
        settings_lines(pitr(target_time="2026-12-01T17:59:30+00:00'\nrestore_command = 'sh"))
    with pytest.raises(ValueError):
        settings_lines(pitr(target_time="tomorrow"))
    with pytest.raises(ValueError):
        settings_lines(pitr(target_lsn="0/3000000'\nrecovery_target_action = 'shutdown"))
    with pytest.raises(ValueError):
        settings_lines(pitr(target_lsn="0/3000000\n"))


def test_settings_of_an_offset_without_colon_come_out_in_utc() -> None:
    line = settings_lines(pitr(target_time="2026-12-01T12:59:30-05:00"))[-1]
    assert line == "recovery_target_time = '2026-12-01 17:59:30.000000+00'"


def test_settings_round_trip_from_the_parsed_target() -> None:
    target = parse_target("2026-12-01 17:59:30.123456Z", None)
    assert target is not None and target.time is not None
    line = settings_lines(pitr(target_time=target.time.isoformat()))[-1]
    assert line == "recovery_target_time = '2026-12-01 17:59:30.123456+00'"
    assert target.time == datetime(2026, 12, 1, 17, 59, 30, 123456, tzinfo=UTC)


# -- the server's log ------------------------------------------------------------------


PG_LOG = """\
2026-11-30 17:10:01.100 UTC [1] LOG:  starting point-in-time recovery to 2026-11-30 16:54:30+00
2026-11-30 17:10:01.200 UTC [1] LOG:  restored log file "000000010000000000000003" from archive
2026-11-30 17:10:01.300 UTC [1] LOG:  redo starts at 0/3000028
2026-11-30 17:10:02.000 UTC [1] LOG:  recovery stopping before commit of transaction 1234, \
time 2026-11-30 16:54:25.5+00
2026-11-30 17:10:02.001 UTC [1] LOG:  redo done at 0/5000100 system usage: CPU: user: 0.00 s
"""


def test_recovery_point_of_a_stop_before_commit() -> None:
    assert recovery_point(PG_LOG) == "2026-11-30 16:54:25.5+00"


def test_recovery_point_takes_the_last_completed_transaction_after_it() -> None:
    text = PG_LOG + (
        "2026-11-30 17:10:02.002 UTC [1] LOG:  last completed transaction was at log time "
        "2026-11-30 16:54:20.123456+00\n"
        "2026-11-30 17:10:02.100 UTC [1] LOG:  selected new timeline ID: 2\n"
    )
    assert recovery_point(text) == "2026-11-30 16:54:20.123456+00"


def test_recovery_point_of_a_stop_after_abort() -> None:
    text = "LOG:  recovery stopping after abort of transaction 99, time 2026-11-30 16:00:00+00\n"
    assert recovery_point(text) == "2026-11-30 16:00:00+00"


def test_recovery_point_when_the_log_says_nothing() -> None:
    assert recovery_point("") is None
    assert recovery_point("LOG:  database system is ready to accept connections\n") is None


# -- the tar of staged WAL ---------------------------------------------------------------

MIB = 1024 * 1024
SMALL = MIB  # 1 MiB segments keep the encrypted objects small


class NoTarget:
    """The step's connection: WalTar never uses it."""

    @property
    def name(self) -> str:
        return "target"

    def start(self, argv: list[str]) -> Process:
        raise AssertionError("WalTar runs nothing")

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        raise AssertionError("WalTar runs nothing")

    def feed(self, argv: list[str], src: Readable) -> Completed:
        raise AssertionError("WalTar feeds nothing")

    def close(self) -> None:
        pass


class Wal:
    """Encrypted WAL objects and their records in a MemStorage, stored by the stream's
    own Store, and the context a restore step reads them with."""

    def __init__(self) -> None:
        self.ident: X25519Identity = generate_identity()
        self.mem = MemStorage()
        facts = ProdFacts(SYSID, SMALL, 15, 1, False)
        self.store = Store(self.mem, [self.ident.recipient()], HOST, facts)
        self.verified: list[str] = []
        self.ctx = StepContext(
            NoTarget(), self.mem, [self.ident], "S", Progress(enabled=False), self.verified
        )

    def put(self, segno: int, kind: str, data: bytes) -> ObjectRecord:
        n = wal.segment_name(1, segno, SMALL)
        return wal_object(self.store.put(1, n, kind, data), "db")


def segment(segno: int) -> bytes:
    return bytes([segno]) * (SMALL // 2) + bytes(range(256)) * (SMALL // 512)


def read_all(src: WalTar, size: int) -> bytes:
    parts: list[bytes] = []
    while chunk := src.read(size):
        assert len(chunk) <= size
        parts.append(chunk)
    return b"".join(parts)


def members(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            assert m.isfile() and m.mode == 0o600
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
    return out


@pytest.mark.parametrize("size", [1, 511, 64 * 1024, 4 * MIB])
def test_wal_tar_holds_the_staged_names_and_pads_the_partial(size: int) -> None:
    w = Wal()
    partial = b"\x17" * 1000 + b"\0" * 24 + b"\x18" * 100  # zeros inside stay
    objs = [
        w.put(3, "full", segment(3)),
        w.put(4, "full", segment(4)),
        w.put(5, "partial", partial),
    ]
    names = [wal.segment_name(1, n, SMALL) for n in (3, 4, 5)]
    if size == 1:  # one byte at a time: only the structure, on one object
        objs, names = objs[2:], names[2:]
    data = read_all(WalTar(w.ctx, objs, names, SMALL), size)
    got = members(data)
    assert list(got) == names
    for n in names[:-1]:
        assert got[n] == segment(int(n[-2:], 16))
    assert got[names[-1]] == partial + bytes(SMALL - len(partial))
    assert len(got[names[-1]]) == SMALL
    assert len(w.verified) == len(objs)
    assert all("age authenticated" in v for v in w.verified)
    assert [v.split(":")[0] for v in w.verified] == [o.key for o in objs]


def test_wal_tar_of_nothing_is_an_empty_tar() -> None:
    w = Wal()
    data = read_all(WalTar(w.ctx, [], [], SMALL), 4096)
    assert data == bytes(1024)
    assert members(data) == {}


def test_wal_tar_refuses_a_tampered_partial_naming_it() -> None:
    w = Wal()
    obj = w.put(4, "partial", b"WAL" * 300)
    cipher = bytearray(w.mem.objects[obj.key])
    cipher[-20] ^= 1
    w.mem.objects[obj.key] = bytes(cipher)
    tar = WalTar(w.ctx, [obj], [wal.segment_name(1, 4, SMALL)], SMALL)
    with pytest.raises(IntegrityError) as e:
        read_all(tar, 64 * 1024)
    assert obj.key in str(e.value)
    assert w.verified == []


def test_wal_tar_refuses_a_tampered_segment() -> None:
    w = Wal()
    obj = w.put(3, "full", segment(3))
    cipher = bytearray(w.mem.objects[obj.key])
    cipher[300] ^= 1  # in the first age chunk: age's own authentication fails first
    w.mem.objects[obj.key] = bytes(cipher)
    tar = WalTar(w.ctx, [obj], [wal.segment_name(1, 3, SMALL)], SMALL)
    with pytest.raises((IntegrityError, CryptoError)) as e:
        read_all(tar, 64 * 1024)
    assert obj.key in str(e.value)
    assert w.verified == []


def test_wal_tar_refuses_an_object_swapped_for_another_valid_one() -> None:
    w = Wal()
    obj3 = w.put(3, "full", segment(3))
    obj4 = w.put(4, "full", segment(4))
    w.mem.objects[obj3.key] = w.mem.objects[obj4.key]  # a valid age file, not the recorded one
    tar = WalTar(w.ctx, [obj3], [wal.segment_name(1, 3, SMALL)], SMALL)
    with pytest.raises(IntegrityError) as e:
        read_all(tar, 64 * 1024)
    assert obj3.key in str(e.value)


def test_wal_tar_reads_a_partial_stored_again_through_its_newer_record() -> None:
    w = Wal()
    old = w.put(5, "partial", b"A" * 1000)
    newer = w.put(5, "partial", b"A" * 1000 + b"B" * 500)  # the stream stored it again
    # a key of its own; the old object is gone once the record names the new one
    assert newer.key != old.key and old.key not in w.mem.objects
    n = wal.segment_name(1, 5, SMALL)
    got = members(read_all(WalTar(w.ctx, [old], [n], SMALL), 64 * 1024))
    assert got[n] == b"A" * 1000 + b"B" * 500 + bytes(SMALL - 1500)
    assert len(w.verified) == 1


def test_wal_tar_reads_the_whole_segment_once_its_partial_is_gone() -> None:
    w = Wal()
    old = w.put(5, "partial", b"A" * 1000)
    w.store.delete(1, wal.segment_name(1, 5, SMALL), "partial")
    full = w.put(5, "full", segment(5))
    n = wal.segment_name(1, 5, SMALL)
    got = members(read_all(WalTar(w.ctx, [old], [n], SMALL), 64 * 1024))
    assert got[n] == segment(5)  # whole: not padded again
    assert w.verified[0].startswith(full.key + ":")


def test_stored_again_is_none_when_the_record_did_not_change() -> None:
    w = Wal()
    obj = w.put(5, "partial", b"A" * 1000)
    assert stored_again(w.mem, obj, "db") is None
    w.mem.objects.clear()
    assert stored_again(w.mem, obj, "db") is None


def test_stored_again_never_trades_a_segment_or_partial_for_a_shorter_one() -> None:
    w = Wal()
    # a whole segment whose object went bad is not replaced by a stale partial of it
    full = w.put(5, "full", segment(5))
    w.put(5, "partial", b"A" * 1000)
    assert stored_again(w.mem, full, "db") is None
    # a partial is not replaced by a shorter one stored after it (a restart re-receiving)
    w2 = Wal()
    long = w2.put(6, "partial", b"A" * 2000)
    short = w2.put(6, "partial", b"A" * 1000)
    assert stored_again(w2.mem, long, "db") is None
    assert stored_again(w2.mem, short, "db") is None  # the record is this one: unchanged
    # a whole segment stored again after a restart (new ciphertext) replaces a whole one
    again = w.put(5, "full", segment(5))
    found = stored_again(w.mem, full, "db")
    assert found is not None and found.sha256 == again.sha256


def test_stored_again_ignores_a_record_that_does_not_decode() -> None:
    w = Wal()
    obj = w.put(5, "partial", b"A" * 1000)
    w.mem.objects[wal.record_key(obj.key)] = b'{"version": 1}'
    assert stored_again(w.mem, obj, "db") is None


def test_wal_tar_refuses_an_object_larger_than_a_segment() -> None:
    w = Wal()
    # a signed record whose ciphertext holds one byte more than a segment
    n = wal.segment_name(1, 6, SMALL)
    cipher = encrypt_bytes(b"x" * (SMALL + 1), [w.ident.recipient()])
    rec = replace(
        w.store.put(1, n, "partial", b"x" * SMALL),
        sha256=hashlib.sha256(cipher).hexdigest(),
        size=len(cipher),
    )
    w.mem.objects[rec.key] = cipher
    w.mem.objects[wal.record_key(rec.key)] = rec.encode()
    with pytest.raises(IntegrityError) as e:
        read_all(WalTar(w.ctx, [wal_object(rec, "db")], [n], SMALL), 64 * 1024)
    assert "larger than a WAL segment" in str(e.value) and rec.key in str(e.value)


def test_wal_tar_needs_a_name_for_each_object() -> None:
    w = Wal()
    obj = w.put(3, "full", segment(3))
    with pytest.raises(ValueError):
        read_all(WalTar(w.ctx, [obj], [], SMALL), 64 * 1024)
