"""Streamed WAL, the pure part (`vkbackup.pitr.wal`): LSNs and segment names as
PostgreSQL prints them, timeline history files, trimmed partials, the storage
keys (no hostile name climbs out of its place), the records beside each object
(a tampered or swapped record is refused, naming it), and the chain a restore
replays: gaps named, later segments unreachable, the newest of duplicates, the
partial that continues the run, and the segments a target time needs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vkbackup.errors import IntegrityError
from vkbackup.pitr import wal
from vkbackup.pitr.wal import DEFAULT_SEGMENT_SIZE as SEG
from vkbackup.pitr.wal import WalRecord

MIB = 1024 * 1024
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
SYSID = "7441234567890123456"
SHA = "ab" * 32


def record(
    segno: int = 3,
    *,
    kind: str = "full",
    tli: int = 1,
    minutes: float | None = None,
    plain: int | None = None,
    sysid: str = SYSID,
    host: str = "prod",
    seg: int = SEG,
    sha: str = SHA,
) -> WalRecord:
    """A valid record of segment *segno* (or of timeline *tli*'s history file),
    stored *minutes* (default: *segno*) after T0."""
    name = wal.history_name(tli) if kind == "history" else wal.segment_name(tli, segno, seg)
    if plain is None:
        plain = seg if kind == "full" else 1000
    return WalRecord(
        host=host,
        timeline=tli,
        name=name,
        kind=kind,
        key=wal.object_key(host, tli, name, kind),
        sha256=sha,
        size=plain + 200,
        plain_size=plain,
        segment_size=seg,
        system_identifier=sysid,
        time=T0 + timedelta(minutes=segno if minutes is None else minutes),
    )


# -- segment sizes and LSNs --------------------------------------------------------------------


@pytest.mark.parametrize("n", [MIB, 2 * MIB, SEG, 64 * MIB, 1024 * MIB])
def test_valid_segment_sizes(n: int) -> None:
    assert wal.valid_segment_size(n)


@pytest.mark.parametrize("n", [0, -SEG, MIB // 2, 3 * MIB, SEG + 1, 2048 * MIB, True])
def test_invalid_segment_sizes(n: int) -> None:
    assert not wal.valid_segment_size(n)


@pytest.mark.parametrize(
    ("text", "lsn"),
    [
        ("0/0", 0),
        ("0/3000000", 0x3000000),
        ("16/B374D848", 0x16B374D848),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        ("1/0", 2**32),
    ],
)
def test_lsn_round_trip(text: str, lsn: int) -> None:
    assert wal.parse_lsn(text) == lsn
    assert wal.format_lsn(lsn) == text


def test_parse_lsn_takes_lowercase_hex_like_postgresql() -> None:
    assert wal.parse_lsn("16/b374d848") == 0x16B374D848
    assert wal.parse_lsn("00000016/0B374D84") == 0x160B374D84


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_round_trip_any(lsn: int) -> None:
    assert wal.parse_lsn(wal.format_lsn(lsn)) == lsn


@pytest.mark.parametrize(
    "text",
    [
        "",
        "16",
        "16/",
        "/B374D848",
        "16/B374D848/0",
        "123456789/0",
        "0/123456789",
        "g/0",
        " 0/0",
        "0/0 ",
        "0/0\n",
        "+1/0",
        "-1/0",
        "0x1/0",
        "1_0/0",
        "\u0663/0",  # an Arabic-Indic digit three
        "\uff11/0",  # a fullwidth one
        "16:B374D848",
    ],
)
def test_parse_lsn_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="LSN"):
        wal.parse_lsn(text)


@pytest.mark.parametrize("lsn", [-1, 2**64, True])
def test_format_lsn_refuses(lsn: int) -> None:
    with pytest.raises(ValueError):
        wal.format_lsn(lsn)


# -- segment names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tli", "lsn", "seg", "name"),
    [
        (1, "0/3000028", SEG, "000000010000000000000003"),
        (1, "0/3000000", SEG, "000000010000000000000003"),
        (1, "0/2FFFFFF", SEG, "000000010000000000000002"),
        (1, "1/0", SEG, "000000010000000100000000"),
        (1, "0/FF000000", SEG, "0000000100000000000000FF"),
        (1, "16/B374D848", SEG, "0000000100000016000000B3"),
        (2, "0/5000060", SEG, "000000020000000000000005"),
        (0xFFFFFFFF, "FFFFFFFF/FF000000", SEG, "FFFFFFFFFFFFFFFF000000FF"),
        (1, "1/0", 64 * MIB, "000000010000000100000000"),
        (1, "0/FC000000", 64 * MIB, "00000001000000000000003F"),
        (1, "2/C0000000", 1024 * MIB, "000000010000000200000003"),
        (1, "0/1FFFFF", MIB, "000000010000000000000001"),
        (1, "0/FFFFFFFF", MIB, "000000010000000000000FFF"),
    ],
)
def test_segment_names_match_postgresql(tli: int, lsn: str, seg: int, name: str) -> None:
    segno = wal.segno_of(wal.parse_lsn(lsn), seg)
    assert wal.segment_name(tli, segno, seg) == name
    assert wal.parse_segment_name(name, seg) == (tli, segno)
    start = wal.segment_start(segno, seg)
    assert start <= wal.parse_lsn(lsn) < start + seg


def test_segno_math_with_64_mib_segments() -> None:
    seg = 64 * MIB
    assert wal.segno_of(wal.parse_lsn("1/0"), seg) == 64  # 64 segments per xlogid
    assert wal.segno_of(wal.parse_lsn("1/4000000"), seg) == 65
    assert wal.segment_start(65, seg) == wal.parse_lsn("1/4000000")
    assert wal.segment_name(1, 65, seg) == "000000010000000100000001"


@given(
    st.integers(min_value=1, max_value=0xFFFFFFFF),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.sampled_from([MIB, SEG, 64 * MIB, 1024 * MIB]),
)
def test_segment_name_round_trip(tli: int, lsn: int, seg: int) -> None:
    segno = wal.segno_of(lsn, seg)
    assert wal.parse_segment_name(wal.segment_name(tli, segno, seg), seg) == (tli, segno)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "00000001000000000000003",  # 23 digits
        "0000000100000000000000030",  # 25
        "00000001000000000000000a",  # lowercase
        "000000010000000000000003\n",
        "000000010000000000000003.partial",
        "00000000000000000000000A",  # timeline 0
        "000000010000000000000100",  # low part 0x100 with 16 MiB segments: 0..0xFF
        "00000001000000000000000\uff11",
        "../0000010000000000000003",
    ],
)
def test_parse_segment_name_refuses(name: str) -> None:
    with pytest.raises(ValueError):
        wal.parse_segment_name(name, SEG)


def test_low_part_is_checked_against_the_segment_size() -> None:
    assert wal.parse_segment_name("00000001000000000000003F", 64 * MIB) == (1, 63)
    with pytest.raises(ValueError, match="no such segment"):
        wal.parse_segment_name("000000010000000000000040", 64 * MIB)


@pytest.mark.parametrize(
    "call",
    [
        lambda: wal.segment_name(0, 3, SEG),
        lambda: wal.segment_name(2**32, 3, SEG),
        lambda: wal.segment_name(1, -1, SEG),
        lambda: wal.segment_name(1, 2**40, SEG),  # past the last LSN
        lambda: wal.segment_name(1, 3, 3 * MIB),
        lambda: wal.segno_of(-1, SEG),
        lambda: wal.segment_start(-1, SEG),
        lambda: wal.parse_segment_name("000000010000000000000003", 1000),
    ],
)
def test_wal_arithmetic_refuses(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# -- timeline history ---------------------------------------------------------------------------


def test_history_names() -> None:
    assert wal.history_name(2) == "00000002.history"
    assert wal.history_name(0x1A) == "0000001A.history"
    assert wal.parse_history_name("0000001A.history") == 0x1A
    for bad in [
        "0000001a.history",
        "00000000.history",
        "00000002.history\n",
        "0000002.history",
        "00000002.History",
        "00000002",
        "x/00000002.history",
    ]:
        with pytest.raises(ValueError):
            wal.parse_history_name(bad)
    with pytest.raises(ValueError):
        wal.history_name(0)


def test_parse_history_as_postgresql_writes_it() -> None:
    text = (
        "1\t0/3000158\tno recovery target specified\n"
        "\n"
        "# a comment\n"
        "  # an indented comment\n"
        '2\t0/5000000\tat restore point "before\tthe migration"\n'
        "5\t1A/B374D848\tbefore 2026-11-26 02:00:00+00\n"
    )
    assert wal.parse_history(text) == [
        (1, 0x3000158),
        (2, 0x5000000),
        (5, 0x1AB374D848),
    ]


def test_parse_history_empty_and_without_reason() -> None:
    assert wal.parse_history("") == []
    assert wal.parse_history("1\t0/3000158") == [(1, 0x3000158)]
    assert wal.parse_history("1\t0/3000158\r\n") == [(1, 0x3000158)]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("1\t0/3000158\treason\ngarbage\n", 2),
        ("x\t0/3000158\n", 1),
        ("1\n", 1),
        ("1\tnot-an-lsn\n", 1),
        ("1\t0/3000158x\n", 1),
        ("0\t0/3000158\n", 1),
        ("1\t0/1\n2\t0/2\n2\t0/3\n", 3),  # timelines must increase
        ("2\t0/1\n1\t0/2\n", 2),
        ("99999999999\t0/1\n", 1),
    ],
)
def test_parse_history_refuses_naming_the_line(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=f"line {line}"):
        wal.parse_history(text)


# -- partial segments --------------------------------------------------------------------------


def test_trim_and_pad_give_the_exact_partial_file_back() -> None:
    written = b"\x01\x00WAL\x00\x00record\x00\x00\x00"
    partial_file = written + bytes(MIB - len(written))
    trimmed = wal.trim_partial(partial_file)
    assert trimmed == b"\x01\x00WAL\x00\x00record"
    assert wal.pad_segment(trimmed, MIB) == partial_file
    assert wal.trim_partial(bytes(MIB)) == b""
    assert wal.pad_segment(b"", MIB) == bytes(MIB)


def test_pad_refuses_more_than_a_segment() -> None:
    assert len(wal.pad_segment(b"x" * MIB, MIB)) == MIB
    with pytest.raises(ValueError, match="do not fit"):
        wal.pad_segment(b"x" * (MIB + 1), MIB)
    with pytest.raises(ValueError):
        wal.pad_segment(b"x", 1000)


# -- keys --------------------------------------------------------------------------------------


def test_keys() -> None:
    assert wal.wal_prefix() == "wal/"
    assert wal.wal_prefix("prod") == "wal/prod/"
    full = wal.object_key("prod", 1, "000000010000000000000003", "full")
    partial = wal.object_key("prod", 1, "000000010000000000000003", "partial")
    history = wal.object_key("prod", 2, "00000002.history", "history")
    assert full == "wal/prod/00000001/000000010000000000000003.age"
    assert partial == "wal/prod/00000001/000000010000000000000003.partial.age"
    assert history == "wal/prod/00000002/00000002.history.age"
    assert wal.record_key(full) == "wal/prod/00000001/000000010000000000000003.json"
    assert wal.record_key(partial) == "wal/prod/00000001/000000010000000000000003.partial.json"
    assert wal.record_key(history) == "wal/prod/00000002/00000002.history.json"
    assert wal.parse_record_key(wal.record_key(full)) == (
        "prod",
        1,
        "000000010000000000000003",
        "full",
    )
    assert wal.parse_record_key(wal.record_key(partial)) == (
        "prod",
        1,
        "000000010000000000000003",
        "partial",
    )
    assert wal.parse_record_key(wal.record_key(history)) == (
        "prod",
        2,
        "00000002.history",
        "history",
    )
    assert wal.parse_object_key(full) == ("prod", 1, "000000010000000000000003", "full")
    assert wal.parse_object_key(wal.record_key(full)) is None
    assert wal.parse_record_key(full) is None


HOSTILE_HOSTS = ["../x", "..", ".", "a/b", "a\nb", "prod\n", "", "-x", ".x", "a b", "x" * 129]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_keys_refuse_hostile_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        wal.wal_prefix(host)
    with pytest.raises(ValueError, match="host"):
        wal.object_key(host, 1, "000000010000000000000003", "full")
    key = f"wal/{host}/00000001/000000010000000000000003.json"
    assert wal.parse_record_key(key) is None


@pytest.mark.parametrize(
    ("tli", "name", "kind"),
    [
        (1, "00000001000000000000000a", "full"),  # lowercase
        (1, "../00000001000000000000003", "full"),
        (1, "000000010000000000000003/x", "full"),
        (1, "000000010000000000000003\n", "partial"),
        (2, "000000010000000000000003", "full"),  # the name's timeline is 1
        (1, "000000010000000000001000", "full"),  # no segment size has that many
        (0, "000000000000000000000003", "full"),
        (2, "00000003.history", "history"),
        (2, "00000002.history\n", "history"),
        (2, "000000020000000000000003", "history"),
        (1, "000000010000000000000003", "segment"),
        (1, "000000010000000000000003", "FULL"),
    ],
)
def test_object_key_refuses(tli: int, name: str, kind: str) -> None:
    with pytest.raises(ValueError):
        wal.object_key("prod", tli, name, kind)


@pytest.mark.parametrize(
    "key",
    [
        "wal/prod/00000001/000000010000000000000003.age",  # an object, not a record
        "wal/prod/00000001/000000010000000000000003.json.sig",
        "wal/prod/00000001/00000001000000000000000a.json",  # lowercase
        "wal/prod/00000001/00000001000000000000000A.JSON",
        "wal/prod/0000000a/0000000A0000000000000003.json",  # lowercase timeline
        "wal/prod/00000002/000000010000000000000003.json",  # another timeline's segment
        "wal/prod/00000001/00000002.history.json",  # another timeline's history
        "wal/prod/00000000/000000000000000000000003.json",
        "wal/prod/00000001/000000010000000000000003.partial.partial.json",
        "wal/prod/00000001/000000010000000000000003.history.json",
        "wal/prod/00000001/000000010000000000000003.json\n",
        "wal/prod/00000001/000000010000000000000003\n.json",
        "wal/prod/00000001/.json",
        "wal/prod/00000001/x/000000010000000000000003.json",
        "wal/prod/000000010000000000000003.json",
        "wal/00000001/000000010000000000000003.json",
        "/wal/prod/00000001/000000010000000000000003.json",
        "WAL/prod/00000001/000000010000000000000003.json",
        "snapshots/prod/00000001/000000010000000000000003.json",
        "wal/prod/1/000000010000000000000003.json",
        "wal/prod/00000001/000000010000000000000003.partial.age",
        "",
    ],
)
def test_parse_record_key_refuses(key: str) -> None:
    assert wal.parse_record_key(key) is None


def test_record_key_needs_an_object_key() -> None:
    for bad in [
        "snapshots/prod/x.age",
        "wal/prod/00000001/000000010000000000000003.json",
        "wal/../00000001/000000010000000000000003.age",
    ]:
        with pytest.raises(ValueError):
            wal.record_key(bad)


# -- records -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["full", "partial", "history"])
def test_record_round_trip(kind: str) -> None:
    r = record(kind=kind, tli=2, minutes=1.5)
    data = r.encode()
    doc = json.loads(data)
    assert doc["version"] == 1
    assert doc["type"] == "vkbackup-wal"
    assert list(doc) == sorted(doc)
    back = WalRecord.decode(data, wal.record_key(r.key))
    assert back == r
    assert back.time.tzinfo is UTC


def test_record_time_is_made_utc() -> None:
    east = timezone(timedelta(hours=3))
    r = replace(record(), time=datetime(2026, 11, 26, 5, 0, tzinfo=east))
    assert r.time == T0
    assert r.time.tzinfo is UTC
    assert json.loads(r.encode())["time"] == "2026-11-26T02:00:00+00:00"


def test_record_lsns() -> None:
    full = record(3)
    assert full.segno == 3
    assert full.start_lsn == wal.parse_lsn("0/3000000")
    assert full.end_lsn == wal.parse_lsn("0/4000000")
    partial = record(4, kind="partial", plain=0x1234)
    assert partial.segno == 4
    assert partial.end_lsn == wal.parse_lsn("0/4001234")
    history = record(kind="history", tli=2)
    with pytest.raises(ValueError, match="history"):
        _ = history.segno
    with pytest.raises(ValueError):
        _ = history.end_lsn


def _tampered(r: WalRecord, **changes: Any) -> bytes:
    doc = json.loads(r.encode())
    for name, value in changes.items():
        if value is _DROP:
            del doc[name]
        else:
            doc[name] = value
    return json.dumps(doc).encode()


_DROP = object()
FULL3 = "wal/prod/00000001/000000010000000000000003"


@pytest.mark.parametrize(
    "changes",
    [
        # a record claiming another object than the one beside it
        {"name": "000000010000000000000004"},
        {
            "name": "000000010000000000000004",
            "key": "wal/prod/00000001/000000010000000000000004.age",
        },
        {"kind": "partial"},
        {"kind": "partial", "key": FULL3 + ".partial.age", "plain_size": 1000},
        {"key": FULL3 + ".partial.age"},
        {"key": "wal/prod/00000001/000000010000000000000004.age"},
        {"key": "wal/other/00000001/000000010000000000000003.age"},
        {"host": "other"},
        {"host": "../prod"},
        {"timeline": 2},
        {"timeline": 0},
        {"timeline": True},
        {"timeline": "1"},
        # ill-formed fields
        {"sha256": "AB" * 32},
        {"sha256": "ab" * 31},
        {"sha256": "ab" * 32 + "\n"},
        {"sha256": 5},
        {"size": -1},
        {"size": 1.0},
        {"size": "100"},
        {"size": 2**64},
        {"plain_size": -1},
        {"plain_size": SEG - 1},  # a full segment is whole
        {"segment_size": 3 * MIB},
        {"segment_size": 32 * MIB},  # then plain_size is not a whole segment
        {"system_identifier": "abc"},
        {"system_identifier": 7441234567890123456},
        {"system_identifier": "1" * 21},
        {"system_identifier": "99999999999999999999"},  # above 2**64
        {"time": "2026-11-26T02:00:00"},  # naive
        {"time": "2026-11-26"},
        {"time": "yesterday"},
        {"time": 1764122400},
        {"kind": "segment"},
        {"kind": None},
        {"version": 2},
        {"version": True},
        {"type": "vkbackup-verify"},
        {"extra": 1},
        {"sha256": _DROP},
        {"time": _DROP},
    ],
)
def test_decode_refuses_a_tampered_record(changes: dict[str, Any]) -> None:
    r = record(3)
    key = wal.record_key(r.key)
    with pytest.raises(IntegrityError, match="^" + re.escape(key) + ": "):
        WalRecord.decode(_tampered(r, **changes), key)


def test_decode_refuses_a_record_under_another_key() -> None:
    """A good record moved beside another object (or its record key) is refused."""
    r = record(3)
    data = r.encode()
    for key in [
        wal.record_key(record(4).key),
        wal.record_key(record(3, kind="partial").key),
        wal.record_key(record(3, host="other").key),
        wal.record_key(record(3, tli=2).key),
        r.key,  # the object key itself
        "wal/prod/00000001/000000010000000000000003.json.sig",
    ]:
        with pytest.raises(IntegrityError, match="^" + re.escape(key)):
            WalRecord.decode(data, key)


def test_partial_swapped_for_full_is_refused() -> None:
    partial = record(3, kind="partial")
    with pytest.raises(IntegrityError):
        WalRecord.decode(partial.encode(), wal.record_key(record(3).key))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'"x"',
        b"\xff\xfe",
        b'{"size": NaN}',
        b"[" * 100_000,
        b" " * (64 * 1024 + 1),
    ],
)
def test_decode_refuses_garbage(data: bytes) -> None:
    key = FULL3 + ".json"
    with pytest.raises(IntegrityError, match="^" + re.escape(key)):
        WalRecord.decode(data, key)


def test_decode_refuses_a_repeated_field() -> None:
    r = record(3)
    text = r.encode().decode()
    doubled = text.replace('"host": "prod"', '"host": "prod", "host": "prod"', 1)
    assert doubled != text
    with pytest.raises(IntegrityError, match="twice"):
        WalRecord.decode(doubled.encode(), wal.record_key(r.key))


def test_decode_error_shows_a_hostile_key_inertly() -> None:
    with pytest.raises(IntegrityError) as e:
        WalRecord.decode(b"{}", "wal/prod\x1b[2J/x.json")
    assert "\x1b" not in str(e.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"key": "wal/prod/00000001/000000010000000000000004.age"},
        {"kind": "partial"},
        {"host": "../x"},
        {"sha256": "x"},
        {"size": -1},
        {"plain_size": SEG + 1},
        {"segment_size": 1000},
        {"system_identifier": ""},
        {"time": datetime(2026, 11, 26)},  # naive
        {"timeline": 2},
    ],
)
def test_constructor_refuses_what_decode_would(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        replace(record(3), **changes)


def test_partial_may_be_empty_or_whole() -> None:
    assert record(3, kind="partial", plain=0).end_lsn == wal.segment_start(3, SEG)
    assert record(3, kind="partial", plain=SEG).end_lsn == wal.segment_start(4, SEG)


# -- chains ------------------------------------------------------------------------------------

START = wal.parse_lsn("0/3000028")  # in segment 3


def names(records: tuple[WalRecord, ...] | list[WalRecord]) -> list[str]:
    return [r.name[-2:] + (".p" if r.kind == "partial" else "") for r in records]


def test_chain_without_gap() -> None:
    chain = wal.chain_from([record(n) for n in (5, 3, 4)], 1, START)
    assert names(chain.segments) == ["03", "04", "05"]
    assert chain.partial is None
    assert chain.gaps == ()
    assert chain.gap_count == 0
    assert chain.end_lsn == wal.segment_start(6, SEG)
    assert chain.end_time == T0 + timedelta(minutes=5)
    assert chain.foreign == ()


def test_chain_ignores_segments_before_the_start() -> None:
    chain = wal.chain_from([record(n) for n in (1, 2, 3, 4)], 1, START)
    assert names(chain.segments) == ["03", "04"]


def test_chain_with_partial() -> None:
    records = [
        record(3),
        record(4),
        record(4, kind="partial", minutes=3.5),  # of a segment since finished
        record(5, kind="partial", plain=0x100),
        record(7, kind="partial"),  # not next to the run
    ]
    chain = wal.chain_from(records, 1, START)
    assert names(chain.segments) == ["03", "04"]
    assert chain.partial is not None
    assert names([chain.partial]) == ["05.p"]
    assert chain.end_lsn == wal.parse_lsn("0/5000100")
    assert chain.end_time == T0 + timedelta(minutes=5)
    assert chain.gaps == ()


def test_chain_with_gaps_names_them_and_later_segments_are_unreachable() -> None:
    chain = wal.chain_from([record(n) for n in (3, 4, 6, 7, 9)], 1, START)
    assert names(chain.segments) == ["03", "04"]
    assert chain.gaps == ("000000010000000000000005", "000000010000000000000008")
    assert chain.gap_count == 2
    assert chain.end_lsn == wal.segment_start(5, SEG)
    assert chain.end_time == T0 + timedelta(minutes=4)


def test_partial_of_the_missing_segment_still_leaves_a_gap() -> None:
    records = [record(3), record(5, kind="partial"), record(6)]
    chain = wal.chain_from(records, 1, START)
    assert names(chain.segments) == ["03"]
    assert chain.partial is None  # the partial is of 5, not of 4
    assert chain.gaps == ("000000010000000000000004", "000000010000000000000005")

    records = [record(3), record(4, kind="partial", plain=10), record(5)]
    chain = wal.chain_from(records, 1, START)
    assert chain.partial is not None and chain.partial.name.endswith("04")
    assert chain.gaps == ("000000010000000000000004",)
    assert chain.end_lsn == wal.segment_start(4, SEG) + 10


def test_chain_with_nothing_at_the_start() -> None:
    chain = wal.chain_from([record(5)], 1, START)
    assert chain.segments == ()
    assert chain.partial is None
    assert chain.gaps == ("000000010000000000000003", "000000010000000000000004")
    assert chain.end_lsn == START
    assert chain.end_time is None


def test_chain_of_only_the_start_partial() -> None:
    chain = wal.chain_from([record(3, kind="partial", plain=0x200)], 1, START)
    assert chain.segments == ()
    assert chain.partial is not None
    assert chain.end_lsn == wal.parse_lsn("0/3000200")
    # a partial that ends before the start takes replay nowhere
    chain = wal.chain_from([record(3, kind="partial", plain=0x10)], 1, START)
    assert chain.end_lsn == START


def test_empty_chain() -> None:
    chain = wal.chain_from([], 1, START)
    assert chain == wal.Chain(1, START, (), None, (), 0, START, None, (), None)
    assert not wal.covers(chain, T0)


def test_duplicates_keep_the_newest_whatever_the_order() -> None:
    old = record(4, minutes=4, sha="11" * 32)
    new = record(4, minutes=40, sha="22" * 32)
    old_partial = record(5, kind="partial", minutes=5, plain=10)
    new_partial = record(5, kind="partial", minutes=50, plain=20)
    records = [record(3), old, new, old_partial, new_partial]
    for order in (records, records[::-1]):
        chain = wal.chain_from(order, 1, START)
        assert chain.segments[1] is new
        assert chain.partial is new_partial
        assert chain.end_time == T0 + timedelta(minutes=50)
    tie = [record(4, sha="11" * 32), record(4, sha="22" * 32), record(3)]
    assert wal.chain_from(tie, 1, START).segments[1].sha256 == "22" * 32
    assert wal.chain_from(tie[::-1], 1, START).segments[1].sha256 == "22" * 32


def test_chain_follows_one_timeline() -> None:
    records = [record(3), record(4, tli=2), record(5, tli=2), record(4), record(6, tli=2)]
    one = wal.chain_from(records, 1, START)
    assert [r.name for r in one.segments] == [
        "000000010000000000000003",
        "000000010000000000000004",
    ]
    two = wal.chain_from(records, 2, wal.parse_lsn("0/4000000"))
    assert [r.name for r in two.segments] == [
        "000000020000000000000004",
        "000000020000000000000005",
        "000000020000000000000006",
    ]
    assert two.history is None


def test_chain_keeps_the_timelines_history_file() -> None:
    records = [
        record(kind="history", tli=2, minutes=1),
        record(kind="history", tli=2, minutes=2, sha="22" * 32),
        record(kind="history", tli=3),
        record(4, tli=2),
    ]
    chain = wal.chain_from(records, 2, wal.parse_lsn("0/4000000"))
    assert chain.history is records[1]
    assert names(chain.segments) == ["04"]


def test_chain_crosses_an_xlogid() -> None:
    start = wal.parse_lsn("0/FF000000")
    chain = wal.chain_from([record(255), record(256), record(257)], 1, start)
    assert [r.name for r in chain.segments] == [
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert chain.end_lsn == wal.parse_lsn("1/2000000")


def test_chain_ignores_another_cluster_and_says_so() -> None:
    stranger = "7000000000000000001"
    records = [
        record(3),
        record(4, sysid=stranger),
        record(4, minutes=1),
        record(5, tli=2, sysid=stranger),
    ]
    chain = wal.chain_from(records, 1, START, system_identifier=SYSID)
    assert names(chain.segments) == ["03", "04"]
    assert chain.segments[1].system_identifier == SYSID
    assert chain.foreign == (
        "wal/prod/00000001/000000010000000000000004.age",
        "wal/prod/00000002/000000020000000000000005.age",
    )
    unchecked = wal.chain_from(records, 1, START)
    assert unchecked.foreign == ()
    assert unchecked.segments[1].system_identifier == stranger  # newer, unchecked


def test_chain_refuses_mixed_segment_sizes() -> None:
    records = [record(3), record(1, seg=64 * MIB)]
    with pytest.raises(IntegrityError, match="segment sizes differ"):
        wal.chain_from(records, 1, START)


def test_chain_refuses_records_of_two_hosts() -> None:
    with pytest.raises(ValueError, match="more than one host"):
        wal.chain_from([record(3), record(4, host="other")], 1, START)


def test_chain_with_a_huge_gap_lists_only_some_names() -> None:
    chain = wal.chain_from([record(3), record(10**9)], 1, START)
    assert len(chain.gaps) == wal.MAX_GAP_NAMES
    assert chain.gaps[0] == "000000010000000000000004"
    assert chain.gap_count == 10**9 - 4


def test_chain_with_64_mib_segments() -> None:
    seg = 64 * MIB
    records = [record(n, seg=seg) for n in (63, 64, 65)]
    chain = wal.chain_from(records, 1, wal.parse_lsn("0/FC000028"))
    assert [r.name for r in chain.segments] == [
        "00000001000000000000003F",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert chain.end_lsn == wal.parse_lsn("1/8000000")


def test_chain_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        wal.chain_from([], 0, START)
    with pytest.raises(ValueError):
        wal.chain_from([], 1, -1)


# -- what a restore stages ---------------------------------------------------------------------


def _chain() -> wal.Chain:
    """Segments 3, 4, 5 stored at T0 + 3, 4, 5 minutes; the partial of 6 at + 6."""
    records = [record(3), record(4), record(5), record(6, kind="partial")]
    return wal.chain_from(records, 1, START)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_covers() -> None:
    chain = _chain()
    assert wal.covers(chain, at(5.9))
    assert wal.covers(chain, at(6))
    assert not wal.covers(chain, at(6.1))
    no_partial = wal.chain_from([record(3), record(4)], 1, START)
    assert wal.covers(no_partial, at(4))
    assert not wal.covers(no_partial, at(4.5))
    with pytest.raises(ValueError):
        wal.covers(chain, datetime(2026, 11, 26))


def test_a_partial_has_a_key_per_upload_and_one_record() -> None:
    name = wal.segment_name(1, 4, wal.DEFAULT_SEGMENT_SIZE)
    key = wal.object_key("prod", 1, name, "partial", "0123456789abcdef")
    assert key == f"wal/prod/00000001/{name}.partial.0123456789abcdef.age"
    assert wal.parse_object_key(key) == ("prod", 1, name, "partial")
    assert wal.record_key(key) == f"wal/prod/00000001/{name}.partial.json"
    assert wal.parse_record_key(key.replace(".age", ".json")) is None  # no versioned record
    for bad in ("0123", "0123456789ABCDEF", "0123456789abcdeg"):
        with pytest.raises(ValueError):
            wal.object_key("prod", 1, name, "partial", bad)
    with pytest.raises(ValueError):  # whole segments and history files have one key
        wal.object_key("prod", 1, name, "full", "0123456789abcdef")
