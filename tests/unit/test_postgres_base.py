"""Base backups of the postgres source (`pitr = true`): the facts read back from
pg_basebackup's stderr (missing ones refuse the snapshot), the record a restore
decodes from them (no relative or climbing data directory, no naive time, no bad
LSN), and when a snapshot takes a new base backup or references the previous
one."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vkbackup.config.model import SourceConfig
from vkbackup.errors import IntegrityError, SnapshotError
from vkbackup.manifest import ObjectRecord
from vkbackup.pitr import wal
from vkbackup.sources.base import PlanContext, fingerprint_tag
from vkbackup.sources.postgres import (
    BASE_MARK,
    BaseFacts,
    Meta,
    PostgresSource,
    base_due,
    base_facts_file,
    base_script,
    facts_argv,
    parse_base_facts,
    server_major,
)

SYSID = "7441234567890123456"
WHERE = "prod: postgres source db (hosts.prod.sources[0])"

STDERR = (
    "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n"
    "pg_basebackup: checkpoint completed\n"
    "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n"
    "pg_basebackup: write-ahead log end point: 0/2000138\n"
    "pg_basebackup: base backup completed\n"
    f"{BASE_MARK}\t2026-11-30T16:54:25.123456Z\t{SYSID}\t/var/lib/postgresql/data\t150018\n"
)


def test_parse_base_facts_of_pg_basebackup_verbose_output() -> None:
    assert parse_base_facts(STDERR, WHERE) == {
        "start_lsn": "0/2000028",
        "timeline": 1,
        "end_lsn": "0/2000138",
        "end_time": "2026-11-30T16:54:25.123456Z",
        "system_identifier": SYSID,
        "data_directory": "/var/lib/postgresql/data",
        "major": 15,
    }


def test_parse_base_facts_of_a_later_timeline_and_high_lsns() -> None:
    text = STDERR.replace("0/2000028 on timeline 1", "1A/B374D848 on timeline 12").replace(
        "0/2000138", "1A/C0000100"
    )
    facts = parse_base_facts(text, WHERE)
    assert (facts["start_lsn"], facts["end_lsn"], facts["timeline"]) == (
        "1A/B374D848",
        "1A/C0000100",
        12,
    )


def test_parse_base_facts_takes_the_last_facts_line() -> None:
    text = STDERR + f"{BASE_MARK}\t2026-11-30T17:00:00.000000Z\t{SYSID}\t/pgdata\t160004\n"
    facts = parse_base_facts(text, WHERE)
    assert facts["data_directory"] == "/pgdata" and facts["major"] == 16
    assert facts["end_time"] == "2026-11-30T17:00:00.000000Z"


def test_parse_base_facts_keeps_a_data_directory_with_spaces() -> None:
    text = STDERR.replace("/var/lib/postgresql/data", "/srv/pg data/main")
    assert parse_base_facts(text, WHERE)["data_directory"] == "/srv/pg data/main"


def without(line_start: str) -> str:
    return "".join(ln for ln in STDERR.splitlines(keepends=True) if line_start not in ln)


@pytest.mark.parametrize(
    "text",
    [
        "",
        without("start point"),
        without("end point"),
        without(BASE_MARK),
        STDERR.replace("on timeline 1", ""),
        STDERR.replace("0/2000028", "0/200002G"),
        # the facts line with a field missing, or one more
        STDERR.replace(f"\t{SYSID}", ""),
        STDERR.replace("\t150018", "\t150018\textra"),
        # the mark only at the start of a line counts
        STDERR.replace(f"{BASE_MARK}\t", f"x{BASE_MARK}\t"),
        STDERR.replace(f"{BASE_MARK}\t", f"{BASE_MARK} "),
    ],
)
def test_parse_base_facts_without_a_fact_refuses_the_snapshot(text: str) -> None:
    with pytest.raises(SnapshotError) as e:
        parse_base_facts(text, WHERE)
    assert WHERE in str(e.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (f"\t{SYSID}\t", "\tsysid\t"),
        ("\t150018\n", "\tv15\n"),
        ("\t/var/lib/postgresql/data\t", "\tvar/lib/postgresql/data\t"),
        ("\t/var/lib/postgresql/data\t", "\t\t"),
    ],
)
def test_parse_base_facts_refuses_unexpected_facts(old: str, new: str) -> None:
    with pytest.raises(SnapshotError) as e:
        parse_base_facts(STDERR.replace(old, new), WHERE)
    assert "unexpected facts" in str(e.value)


def test_parse_base_facts_error_quotes_what_pg_basebackup_said() -> None:
    said = "pg_basebackup: error: could not connect to server: FATAL:  role does not exist"
    with pytest.raises(SnapshotError) as e:
        parse_base_facts(said + "\n", WHERE)
    assert said in str(e.value)


@pytest.mark.parametrize(
    ("version_num", "major"), [(150018, 15), (160004, 16), (100023, 10), (170000, 17)]
)
def test_server_major(version_num: int, major: int) -> None:
    assert server_major(version_num) == major


def test_server_major_before_10_as_documented() -> None:
    assert server_major(90624) == 906  # 9.6: before 10 the major had two parts


# -- the record a restore reads ---------------------------------------------------------


def test_base_facts_decode_round_trips_the_parsed_facts() -> None:
    facts = BaseFacts.decode(parse_base_facts(STDERR, WHERE), "sources.db")
    assert facts == BaseFacts(
        start_lsn=0x2000028,
        end_lsn=0x2000138,
        timeline=1,
        end_time=datetime(2026, 11, 30, 16, 54, 25, 123456, tzinfo=UTC),
        system_identifier=SYSID,
        data_directory="/var/lib/postgresql/data",
        major=15,
    )
    assert facts.end_time.utcoffset() == timedelta(0)
    assert wal.format_lsn(facts.start_lsn) == "0/2000028"


def test_base_facts_decode_through_the_private_part() -> None:
    doc: dict[str, Any] = {
        "container": "pg",
        "database": "app",
        "user": "postgres",
        "server": {"major": 15, "image": "postgres:15"},
        "row_counts": {"public.t": 3},
        "base": parse_base_facts(STDERR, WHERE),
    }
    meta = Meta.decode(doc, "sources.db.meta")
    assert meta.base is not None and meta.base.end_lsn == 0x2000138
    del doc["base"]
    assert Meta.decode(doc, "sources.db.meta").base is None


def good_doc(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = dict(parse_base_facts(STDERR, WHERE))
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        good_doc(data_directory="var/lib/postgresql/data"),
        good_doc(data_directory=""),
        good_doc(data_directory="/var/lib/../../etc"),
        good_doc(data_directory="/var/lib/postgresql/.."),
        good_doc(data_directory="/var/lib/post\ngresql"),
        good_doc(data_directory="/var/lib/post\x00gresql"),
        good_doc(end_time="2026-11-30T16:54:25"),  # naive
        good_doc(end_time="yesterday"),
        good_doc(start_lsn="0/200002G"),
        good_doc(end_lsn="2000138"),
        good_doc(end_lsn="0/2000138\n"),
        good_doc(timeline=0),
        good_doc(timeline="one"),
        good_doc(system_identifier="-1"),
        good_doc(system_identifier="abc"),
        good_doc(major="fifteen"),
        {k: v for k, v in good_doc().items() if k != "end_lsn"},
        {k: v for k, v in good_doc().items() if k != "data_directory"},
        "a string",
        None,
        [1, 2],
    ],
)
def test_base_facts_decode_refuses_a_bad_record_naming_where(doc: object) -> None:
    with pytest.raises(IntegrityError) as e:
        BaseFacts.decode(doc, "sources.db")
    assert "sources.db.base" in str(e.value)


def test_base_facts_decode_refuses_a_timeline_postgresql_cannot_have() -> None:
    with pytest.raises(IntegrityError):
        BaseFacts.decode(good_doc(timeline=2**32), "sources.db")


@pytest.mark.parametrize(
    "data_directory", ["/", "/var/lib/postgresql/data/", "/srv/pg..data", "/srv/..x/y"]
)
def test_base_facts_decode_accepts_odd_but_harmless_directories(data_directory: str) -> None:
    facts = BaseFacts.decode(good_doc(data_directory=data_directory), "sources.db")
    assert facts.data_directory == data_directory


def test_base_facts_decode_keeps_an_offset_time_in_its_zone() -> None:
    facts = BaseFacts.decode(good_doc(end_time="2026-11-30T18:54:25+02:00"), "sources.db")
    assert facts.end_time == datetime(2026, 11, 30, 16, 54, 25, tzinfo=UTC)


# -- when a new base backup is due ------------------------------------------------------

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def snap_id(when: datetime, tag: str = "a1b2") -> str:
    return when.strftime("%Y%m%dT%H%M%SZ") + "-" + tag


def obj(role: str, uploaded_in: str, name: str = "base.tar.zst.age") -> ObjectRecord:
    return ObjectRecord(
        key=f"data/prod/{uploaded_in or 'S'}/db/{name}",
        source="db",
        name=name,
        role=role,
        size=10,
        sha256="0" * 64,
        compression="zstd",
        uploaded_in=uploaded_in,
        fingerprint=fingerprint_tag(
            f"{'pgbasefacts' if role == 'pg-base-facts' else 'pgbase'}:{uploaded_in}"
        ),
    )


def test_base_due_references_a_base_of_three_days_ago() -> None:
    earlier = obj("pg-base", snap_id(NOW - timedelta(days=3)))
    dump = obj("pg-dump", snap_id(NOW - timedelta(days=1)), "dump.pgdump.age")
    assert base_due([dump, earlier], NOW, 7) is earlier


@pytest.mark.parametrize("age", [timedelta(days=8), timedelta(days=7)])
def test_base_due_takes_a_new_one_when_it_is_old(age: timedelta) -> None:
    assert base_due([obj("pg-base", snap_id(NOW - age))], NOW, 7) is None


def test_base_due_just_before_the_limit_still_references_it() -> None:
    earlier = obj("pg-base", snap_id(NOW - timedelta(days=7) + timedelta(seconds=1)))
    assert base_due([earlier], NOW, 7) is earlier


def test_base_due_without_a_base_backup() -> None:
    assert base_due([], NOW, 7) is None
    dump = obj("pg-dump", snap_id(NOW - timedelta(hours=1)), "dump.pgdump.age")
    assert base_due([dump], NOW, 7) is None


def test_base_due_skips_unusable_records() -> None:
    assert base_due([obj("pg-base", "")], NOW, 7) is None
    assert base_due([obj("pg-base", "not-a-snapshot-id")], NOW, 7) is None


def test_base_due_every_zero_days_always_takes_a_new_one() -> None:
    assert base_due([obj("pg-base", snap_id(NOW))], NOW, 0) is None


# -- the plan's base stream -------------------------------------------------------------

CFG = SourceConfig(
    type="postgres",
    name="db",
    where="hosts.prod.sources[0]",
    container="pg-main",
    database="app",
    user="app_owner",
    pitr=True,
)
SNAPSHOT = snap_id(NOW, "ffff")


def test_base_plan_references_a_recent_base_and_its_facts() -> None:
    first = snap_id(NOW - timedelta(days=2))
    earlier = obj("pg-base", first)
    facts = obj("pg-base-facts", first, "base.facts.age")
    ctx = PlanContext(SNAPSHOT, compressor="gzip", previous=(earlier, facts), base_every_days=7)
    base, fact = PostgresSource(CFG).base_plan(ctx)
    assert base.argv == [] and fact.argv == []  # referenced, never run
    assert (base.role, fact.role) == ("pg-base", "pg-base-facts")
    assert base.name == "base.tar.zst"  # the earlier object's name, whatever compresses now
    assert base.fingerprint == f"pgbase:{first}"
    assert fact.fingerprint == f"pgbasefacts:{first}"
    # the snapshot that took them recorded the same fingerprints: the references match
    assert base.fingerprint is not None and fact.fingerprint is not None
    assert fingerprint_tag(base.fingerprint) == earlier.fingerprint
    assert fingerprint_tag(fact.fingerprint) == facts.fingerprint


def test_base_plan_takes_a_new_base_when_the_earlier_has_no_facts() -> None:
    # a base backup whose facts object is not there cannot be used by a restore
    # once its own snapshot is pruned: a new one is taken
    earlier = obj("pg-base", snap_id(NOW - timedelta(days=2)))
    ctx = PlanContext(SNAPSHOT, previous=(earlier,), base_every_days=7)
    base, _ = PostgresSource(CFG).base_plan(ctx)
    assert base.fingerprint == f"pgbase:{SNAPSHOT}" and base.argv


def test_base_plan_takes_a_new_base_when_due() -> None:
    old = obj("pg-base", snap_id(NOW - timedelta(days=8)))
    ctx = PlanContext(SNAPSHOT, compressor="zstd", previous=(old,), base_every_days=7)
    base, fact = PostgresSource(CFG).base_plan(ctx)
    assert base.role == "pg-base"
    assert base.name == "base.tar.zst"
    assert base.compression == "zstd"
    assert base.fingerprint == f"pgbase:{SNAPSHOT}"
    path = base_facts_file(SNAPSHOT, CFG.name)
    assert base.argv[:2] == ["bash", "-c"]
    assert base.argv[2] == "set -euo pipefail\n" + base_script("pg-main", "app_owner", "zstd", path)
    # the facts: the file the base script wrote, streamed and removed, as its own object
    assert fact.role == "pg-base-facts" and fact.name == "base.facts"
    assert fact.fingerprint == f"pgbasefacts:{SNAPSHOT}"
    assert fact.argv == facts_argv(path)
    assert f"cat {shlex.quote(path)}; rm -f {shlex.quote(path)}" in fact.argv[2]


@pytest.mark.parametrize(("compressor", "suffix"), [("gzip", ".gz"), ("none", "")])
def test_base_plan_new_stream_names_its_compression(compressor: str, suffix: str) -> None:
    ctx = PlanContext(SNAPSHOT, compressor=compressor)
    base, fact = PostgresSource(CFG).base_plan(ctx)
    assert base.name == "base.tar" + suffix and base.compression == compressor
    assert fact.compression == "none"


def test_base_plan_uses_the_context_clock_before_the_snapshot_id() -> None:
    first = snap_id(NOW - timedelta(days=6))
    earlier = (obj("pg-base", first), obj("pg-base-facts", first))
    # the snapshot id says NOW, the clock two days later: the base is 8 days old
    late = PlanContext(SNAPSHOT, previous=earlier, now=NOW + timedelta(days=2))
    assert PostgresSource(CFG).base_plan(late)[0].fingerprint == f"pgbase:{SNAPSHOT}"
    on_time = PlanContext(SNAPSHOT, previous=earlier)
    assert PostgresSource(CFG).base_plan(on_time)[0].argv == []


def test_base_script_runs_pg_basebackup_to_stdout_with_its_wal() -> None:
    script = base_script("pg main", "app'owner", "gzip", "/tmp/x.base")
    lines = [ln for ln in script.splitlines() if "pg_basebackup -U" in ln]
    assert len(lines) == 1
    words = shlex.split(lines[0].split(" || ")[0])
    assert words[:3] == ["docker", "exec", "$C"]  # shlex leaves "$C" as the shell sees it
    argv = words[3 : words.index("2>$F")]
    assert argv[0] == "pg_basebackup"
    assert argv[argv.index("-U") + 1] == "app'owner"
    assert argv[argv.index("-D") + 1] == "-"  # the tar on stdout
    assert "-Ft" in argv
    assert argv[argv.index("-X") + 1] == "fetch"  # the WAL it needs, inside the tar
    assert "-v" in argv  # the start and end points parse_base_facts reads, into the file
    assert words[words.index("|") + 1 :][:1] == ["gzip"]
    assert f"C={shlex.quote('pg main')}" in script and "F=/tmp/x.base" in script
    assert "umask 077" in script  # the facts file is root's only
    # prod's facts are appended to the file after the tar, as the source's user, and
    # the whole file goes to stderr too
    facts_line = next(ln for ln in script.splitlines() if BASE_MARK in ln)
    assert '>> "$F"' in facts_line and shlex.quote("app'owner") in facts_line
    assert script.strip().splitlines()[-1] == 'cat "$F" >&2'


def test_base_script_without_compression_pipes_nothing() -> None:
    script = base_script("pg", "postgres", "none", "/tmp/x.base")
    line = next(ln for ln in script.splitlines() if "pg_basebackup -U" in ln)
    assert "|" not in line.split(" || ")[0]
