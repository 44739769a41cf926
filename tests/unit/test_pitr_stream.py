"""`vkbackup wal-stream`, the parts that run without prod (`vkbackup.pitr.stream`,
`vkbackup.pitr.tunnel`): the spool must be memory and is read as pg_receivewal
leaves it, the facts query's answer is checked, and what the spool holds reaches
a (dict-backed) storage encrypted, with a record that pins it; a partial only
when it grew and its time came, a finished segment's partial removed, nothing
lost when a put fails. The monitoring textfile, and the Unix-socket tunnel
carrying bytes both ways."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import queue
import socket
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from vkbackup import monitoring
from vkbackup.config.model import MonitoringConfig
from vkbackup.crypto import X25519Identity, decrypt_bytes, generate_identity
from vkbackup.errors import (
    ConfigError,
    IntegrityError,
    ObjectNotFoundError,
    StorageError,
    VkError,
)
from vkbackup.pitr import wal
from vkbackup.pitr.stream import (
    ProdDb,
    ProdFacts,
    SpoolFiles,
    Store,
    Stored,
    StreamSettings,
    WalStream,
    conninfo,
    filesystem_type,
    names_the_stream,
    open_spool,
    parse_facts,
    scan,
    seed,
    store_spool,
)
from vkbackup.pitr.tunnel import Tunnel
from vkbackup.storage.base import ObjectInfo
from vkbackup.streams import Readable
from vkbackup.transport.ssh import SshTransport

MIB = 1024 * 1024
SEG = MIB  # the smallest segment size PostgreSQL allows keeps these tests fast
SYSID = "7441234567890123456"
HOST = "prod"
FACTS = ProdFacts(SYSID, SEG, 15, 1, False)


def seg_name(segno: int, tli: int = 1) -> str:
    return wal.segment_name(tli, segno, SEG)


# -- a storage in memory ---------------------------------------------------------------


class MemStorage:
    """A dict-backed Storage: put reads the Readable fully; *fail_puts* makes every
    put raise StorageError (storage away); *puts* logs the keys put, in order."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.fail_puts = False

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        if self.fail_puts:
            raise StorageError(f"mem: {key}: the storage is away")
        parts: list[bytes] = []
        while chunk := src.read(64 * 1024):
            parts.append(chunk)
        self.objects[key] = b"".join(parts)
        self.puts.append(key)
        return ObjectInfo(key, len(self.objects[key]))

    def open(self, key: str) -> io.BytesIO:
        if key not in self.objects:
            raise ObjectNotFoundError(f"mem: {key}: not found")
        return io.BytesIO(self.objects[key])

    def head(self, key: str) -> ObjectInfo | None:
        data = self.objects.get(key)
        return None if data is None else ObjectInfo(key, len(data))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key]))

    def delete(self, key: str) -> None:
        self.deletes.append(key)
        self.objects.pop(key, None)

    def describe(self) -> str:
        return "mem:"

    def retention_until(self, key: str) -> datetime | None:
        return None

    def extend_retention(self, key: str) -> datetime | None:
        return None

    def list_incomplete_uploads(self) -> builtins.list[tuple[str, str, datetime]]:
        return []

    def abort_upload(self, key: str, upload_id: str) -> None:
        pass


# -- the spool's filesystem ------------------------------------------------------------

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw,errors=remount-ro
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=1k,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=1k
40 27 0:40 / /srv/wal\\040spool rw,relatime - tmpfs tmpfs rw,size=1k
41 27 0:41 / /srv/wal rw,relatime - xfs /dev/sdb1 rw
this line is no mount
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/dev/shm/vkbackup-wal", "tmpfs"),
        ("/dev/shm", "tmpfs"),
        ("/dev/null", "devtmpfs"),
        ("/var/lib/vkbackup", "ext4"),
        ("/", "ext4"),
        ("/srv/wal spool/prod", "tmpfs"),  # \040 in mountinfo is a space
        ("/srv/wal/prod", "xfs"),
        ("/srv/walx", "ext4"),  # a prefix of a name is no mount of it
        ("/dev/shmx", "devtmpfs"),
    ],
)
def test_filesystem_type_is_the_longest_mount_holding_the_path(path: str, kind: str) -> None:
    assert filesystem_type(Path(path), MOUNTINFO) == kind


def test_filesystem_type_of_a_path_no_mount_holds_is_unknown() -> None:
    assert filesystem_type(Path("/srv/x"), "25 24 0:23 / /dev/shm rw - tmpfs tmpfs rw\n") == (
        "unknown"
    )


def test_filesystem_type_reads_this_process_mountinfo_by_default() -> None:
    # /proc is procfs on any Linux this runs on
    assert filesystem_type(Path("/proc/self")) == "proc"


def mount_line(point: Path, kind: str) -> str:
    return f"99 27 0:99 / {str(point).replace(' ', chr(92) + '040')} rw - {kind} none rw\n"


def test_open_spool_refuses_a_disk_naming_the_directory(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    info = MOUNTINFO + mount_line(tmp_path, "ext4")
    with pytest.raises(ConfigError) as e:
        open_spool(spool, info)
    assert str(spool) in str(e.value)
    assert "ext4" in str(e.value)
    assert e.value.hint is not None and "tmpfs" in e.value.hint


@pytest.mark.parametrize("kind", ["tmpfs", "ramfs"])
def test_open_spool_accepts_memory_and_creates_it_0700(tmp_path: Path, kind: str) -> None:
    spool = tmp_path / "spool"
    assert open_spool(spool, MOUNTINFO + mount_line(tmp_path, kind)) == spool
    assert spool.is_dir()
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert open_spool(spool, MOUNTINFO + mount_line(tmp_path, kind)) == spool  # ours: fine


def test_open_spool_refuses_a_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        open_spool(tmp_path / "a" / "spool", mount_line(tmp_path, "tmpfs"))
    assert str(tmp_path / "a") in str(e.value)


def test_open_spool_refuses_a_directory_others_could_write_or_made(tmp_path: Path) -> None:
    # /dev/shm is everyone's: a spool someone else made first, or opened up, is refused
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    spool.chmod(0o755)
    with pytest.raises(ConfigError) as e:
        open_spool(spool, mount_line(tmp_path, "tmpfs"))
    assert str(spool) in str(e.value) and "0700" in str(e.value)
    spool.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(spool)
    with pytest.raises(ConfigError):
        open_spool(link, mount_line(tmp_path, "tmpfs"))


# -- what pg_receivewal left -----------------------------------------------------------


def test_scan_lists_finished_files_history_first_and_the_partial(tmp_path: Path) -> None:
    (tmp_path / seg_name(5)).write_bytes(bytes(SEG))
    (tmp_path / seg_name(3)).write_bytes(bytes(SEG))
    (tmp_path / "00000002.history").write_text("1\t0/3000000\tno recovery target specified\n")
    (tmp_path / "00000001.history").write_text("")
    (tmp_path / seg_name(4)).write_bytes(bytes(SEG - 1))  # still being written: not finished
    (tmp_path / f"{seg_name(6)}.partial").write_bytes(bytes(SEG))
    # strays
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / seg_name(10).lower()).write_bytes(bytes(SEG))  # "...0a": not PostgreSQL's
    (tmp_path / (seg_name(8) + "0")).write_bytes(bytes(SEG))
    (tmp_path / "1.history").write_text("")
    (tmp_path / "junk.partial").write_bytes(b"")
    (tmp_path / ".s.PGSQL.5432").write_bytes(b"")
    files = scan(tmp_path, SEG)
    assert files == SpoolFiles(
        finished=["00000001.history", "00000002.history", seg_name(3), seg_name(5)],
        partial=seg_name(6),
    )


def test_scan_of_an_empty_spool(tmp_path: Path) -> None:
    assert scan(tmp_path, SEG) == SpoolFiles([], None)


def test_scan_takes_the_newest_of_two_partials(tmp_path: Path) -> None:
    (tmp_path / f"{seg_name(6)}.partial").write_bytes(b"")
    (tmp_path / f"{seg_name(7)}.partial").write_bytes(b"")
    assert scan(tmp_path, SEG).partial == seg_name(7)


def test_seed_writes_a_sparse_zero_partial_of_a_segment(tmp_path: Path) -> None:
    seed(tmp_path, seg_name(9), SEG)
    path = tmp_path / f"{seg_name(9)}.partial"
    st = path.stat()
    assert st.st_size == SEG
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0
    assert st.st_blocks * 512 < SEG  # sparse: nothing written
    assert path.read_bytes() == bytes(SEG)
    assert scan(tmp_path, SEG) == SpoolFiles([], seg_name(9))


def test_seed_refuses_an_existing_partial(tmp_path: Path) -> None:
    path = tmp_path / f"{seg_name(9)}.partial"
    path.write_bytes(b"received WAL")
    with pytest.raises(FileExistsError):
        seed(tmp_path, seg_name(9), SEG)
    assert path.read_bytes() == b"received WAL"


# -- prod's facts and the connection string --------------------------------------------


def test_parse_facts_of_a_primary() -> None:
    text = f"{SYSID}\t16MB\t16777216\t150018\t3\tfalse\n"
    assert parse_facts(text, "prod: pg") == ProdFacts(SYSID, 16 * MIB, 15, 3, False)


def test_parse_facts_of_a_standby_with_other_sizes() -> None:
    facts = parse_facts(f"{SYSID}\t64MB\t67108864\t100023\t1\ttrue", "prod: pg")
    assert facts == ProdFacts(SYSID, 64 * MIB, 10, 1, True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "ERROR:  permission denied for function pg_control_system\n",
        f"{SYSID}\t16MB\t16777216\t150018\t3\n",  # five fields
        f"{SYSID}\t16MB\t16777216\t150018\t3\tfalse\textra\n",
        f"x{SYSID}\t16MB\t16777216\t150018\t3\tfalse\n",
        f"{SYSID}\t16MB\t16MB\t150018\t3\tfalse\n",
        f"{SYSID}\t16MB\t16777216\tv15\t3\tfalse\n",
        f"{SYSID}\t16MB\t16777216\t150018\t-3\tfalse\n",
        f"{SYSID}\t16MB\t16777215\t150018\t3\tfalse\n",  # not a power of two
        f"{SYSID}\t512kB\t524288\t150018\t3\tfalse\n",  # too small
    ],
)
def test_parse_facts_refuses_garbage_naming_where(text: str) -> None:
    with pytest.raises(IntegrityError) as e:
        parse_facts(text, "prod: pg-main")
    assert "prod: pg-main" in str(e.value)


def test_conninfo_quotes_the_socket_directory_and_role() -> None:
    info = conninfo(Path("/run/o'neil\\dir x"), 5432, "wal'er")
    assert info == (
        "host='/run/o\\'neil\\\\dir x' port=5432 user='wal\\'er' "
        "application_name=vkbackup_wal_stream"
    )


def parse_conninfo(text: str) -> dict[str, str]:
    """libpq's rules for `key = 'value'` pairs (backslash escapes in quotes)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        while i < len(text) and text[i] == " ":
            i += 1
        if i >= len(text):
            break
        eq = text.index("=", i)
        key = text[i:eq]
        i = eq + 1
        value = []
        if text[i] == "'":
            i += 1
            while text[i] != "'":
                if text[i] == "\\":
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
        else:
            while i < len(text) and text[i] != " ":
                value.append(text[i])
                i += 1
        out[key] = "".join(value)
    return out


@pytest.mark.parametrize("directory", ["/tmp/a", "/tmp/a b", "/x/'", "/x/\\", "/x/\\'", "/x/' '"])
def test_conninfo_round_trips_through_libpq_quoting(directory: str) -> None:
    parsed = parse_conninfo(conninfo(Path(directory), 6543, "vkbackup_wal"))
    assert parsed == {
        "host": directory,
        "port": "6543",
        "user": "vkbackup_wal",
        "application_name": "vkbackup_wal_stream",
    }


# -- storing ---------------------------------------------------------------------------


@pytest.fixture
def ident() -> X25519Identity:
    return generate_identity()


@pytest.fixture
def mem() -> MemStorage:
    return MemStorage()


@pytest.fixture
def store(mem: MemStorage, ident: X25519Identity) -> Store:
    return Store(mem, [ident.recipient()], HOST, FACTS)


def segment_bytes(segno: int) -> bytes:
    return hashlib.sha256(str(segno).encode()).digest() * (SEG // 32)


def partial_bytes(length: int) -> bytes:
    """A .partial file as pg_receivewal leaves it: *length* bytes of WAL, zero-padded."""
    data = (b"WAL!" * (length // 4 + 1))[:length]
    return data + bytes(SEG - length)


def stored_object(
    mem: MemStorage, ident: X25519Identity, name: str, kind: str, tli: int = 1
) -> tuple[wal.WalRecord, bytes]:
    """The record of one stored WAL object (decoded), checked against the ciphertext,
    and the plaintext."""
    rec_key = wal.record_key(wal.object_key(HOST, tli, name, kind))
    rec = wal.WalRecord.decode(mem.objects[rec_key], rec_key)
    key = rec.key  # a partial's: versioned, one key per upload
    assert wal.parse_object_key(key) == (HOST, tli, name, kind)
    assert (key == wal.object_key(HOST, tli, name, kind)) == (kind != "partial")
    cipher = mem.objects[key]
    assert rec.sha256 == hashlib.sha256(cipher).hexdigest()
    assert rec.size == len(cipher)
    assert rec.kind == kind and rec.name == name and rec.host == HOST
    assert rec.system_identifier == SYSID and rec.segment_size == SEG
    plain = decrypt_bytes(cipher, [ident], key)
    assert rec.plain_size == len(plain)
    return rec, plain


def test_a_finished_segment_is_stored_encrypted_with_its_record_then_removed(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    name = seg_name(3)
    (tmp_path / name).write_bytes(segment_bytes(3))
    advanced: list[int] = []
    stored = Stored()
    before = datetime.now(UTC)
    assert store_spool(tmp_path, store, stored, partial_every=0, advance=advanced.append) == 1
    rec, plain = stored_object(mem, ident, name, "full")
    assert plain == segment_bytes(3)
    assert before <= rec.time <= datetime.now(UTC)
    assert not (tmp_path / name).exists()
    # the slot may move to the start of the next segment: this one is safe
    assert advanced == [wal.segment_start(4, SEG)] == [4 * SEG]
    assert stored.newest is not None and stored.newest >= before
    # the object before its record: a record never names an object not there yet
    key = wal.object_key(HOST, 1, name, "full")
    assert mem.puts == [key, wal.record_key(key)]


def test_history_files_go_first_and_do_not_move_the_slot(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    history = "1\t0/4000000\tno recovery target specified\n"
    (tmp_path / seg_name(4, tli=2)).write_bytes(segment_bytes(4))
    (tmp_path / "00000002.history").write_text(history)
    advanced: list[int] = []
    assert store_spool(tmp_path, store, Stored(), partial_every=0, advance=advanced.append) == 2
    rec, plain = stored_object(mem, ident, "00000002.history", "history", tli=2)
    assert plain.decode() == history and rec.timeline == 2
    stored_object(mem, ident, seg_name(4, tli=2), "full", tli=2)
    hist_key = wal.object_key(HOST, 2, "00000002.history", "history")
    assert mem.puts[:2] == [hist_key, wal.record_key(hist_key)]
    assert advanced == [5 * SEG]
    assert list(tmp_path.iterdir()) == []


def test_segments_are_stored_in_order_and_the_slot_follows(
    tmp_path: Path, mem: MemStorage, store: Store
) -> None:
    for n in (7, 5, 6):
        (tmp_path / seg_name(n)).write_bytes(segment_bytes(n))
    advanced: list[int] = []
    assert store_spool(tmp_path, store, Stored(), partial_every=0, advance=advanced.append) == 3
    assert advanced == [6 * SEG, 7 * SEG, 8 * SEG]
    fulls = [k for k in mem.puts if k.endswith(".age")]
    assert fulls == [wal.object_key(HOST, 1, seg_name(n), "full") for n in (5, 6, 7)]


def test_a_failed_put_leaves_the_segment_in_the_spool_for_the_next_pass(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    name = seg_name(3)
    (tmp_path / name).write_bytes(segment_bytes(3))
    advanced: list[int] = []
    mem.fail_puts = True
    with pytest.raises(StorageError):
        store_spool(tmp_path, store, Stored(), partial_every=0, advance=advanced.append)
    assert (tmp_path / name).read_bytes() == segment_bytes(3)
    assert advanced == []  # the slot keeps the segment on prod
    assert mem.objects == {}
    mem.fail_puts = False
    assert store_spool(tmp_path, store, Stored(), partial_every=0, advance=advanced.append) == 1
    assert stored_object(mem, ident, name, "full")[1] == segment_bytes(3)
    assert advanced == [4 * SEG]
    assert not (tmp_path / name).exists()


def write_partial(spool: Path, name: str, length: int, mtime_s: int) -> Path:
    path = spool / f"{name}.partial"
    path.write_bytes(partial_bytes(length))
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))
    return path


def test_a_partial_is_stored_trimmed(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    name = seg_name(4)
    write_partial(tmp_path, name, 1000, 1_000)
    stored = Stored()
    assert store_spool(tmp_path, store, stored, partial_every=0) == 1
    rec, plain = stored_object(mem, ident, name, "partial")
    assert plain == partial_bytes(1000)[:1000] and rec.plain_size == 1000
    assert rec.end_lsn == 4 * SEG + 1000
    assert stored.partial_size == {name: 1000}
    assert stored.newest is not None
    assert (tmp_path / f"{name}.partial").exists()  # pg_receivewal is still writing it


def test_a_partial_waits_for_its_time(tmp_path: Path, mem: MemStorage, store: Store) -> None:
    name = seg_name(4)
    write_partial(tmp_path, name, 1000, 1_000)
    stored = Stored(last_partial=time.monotonic())
    assert store_spool(tmp_path, store, stored, partial_every=3600) == 0
    assert mem.objects == {}
    # the time came
    stored.last_partial = time.monotonic() - 3601
    assert store_spool(tmp_path, store, stored, partial_every=3600) == 1
    assert stored.last_partial > time.monotonic() - 60
    # it grew, but the next one waits again
    write_partial(tmp_path, name, 2000, 1_001)
    assert store_spool(tmp_path, store, stored, partial_every=3600) == 0
    assert stored.partial_size[name] == 1000
    # except when stopping: everything in the spool is stored
    assert store_spool(tmp_path, store, stored, partial_every=3600, final=True) == 1
    assert stored.partial_size[name] == 2000


def test_an_unchanged_partial_is_not_stored_again(
    tmp_path: Path, mem: MemStorage, store: Store
) -> None:
    name = seg_name(4)
    path = write_partial(tmp_path, name, 1000, 1_000)
    stored = Stored()
    assert store_spool(tmp_path, store, stored, partial_every=0) == 1
    puts = len(mem.puts)
    assert store_spool(tmp_path, store, stored, partial_every=0) == 0
    assert store_spool(tmp_path, store, stored, partial_every=0, final=True) == 0
    # same mtime: not even read again, whatever the bytes say
    path.write_bytes(partial_bytes(3000))
    os.utime(path, ns=(1_000 * 10**9, 1_000 * 10**9))
    assert store_spool(tmp_path, store, stored, partial_every=0) == 0
    assert len(mem.puts) == puts


def test_a_partial_no_longer_than_the_stored_one_is_not_stored(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    name = seg_name(4)
    # after a restart the segment is received again from its start: storage holds 5000
    stored = Stored(partial_size={name: 5000})
    write_partial(tmp_path, name, 3000, 1_000)
    assert store_spool(tmp_path, store, stored, partial_every=0) == 0
    write_partial(tmp_path, name, 5000, 1_001)
    assert store_spool(tmp_path, store, stored, partial_every=0) == 0
    assert mem.objects == {}
    write_partial(tmp_path, name, 5001, 1_002)
    assert store_spool(tmp_path, store, stored, partial_every=0) == 1
    assert stored_object(mem, ident, name, "partial")[0].plain_size == 5001
    assert stored.partial_size[name] == 5001


def test_an_empty_partial_is_not_stored(tmp_path: Path, mem: MemStorage, store: Store) -> None:
    seed(tmp_path, seg_name(4), SEG)
    assert store_spool(tmp_path, store, Stored(), partial_every=0, final=True) == 0
    assert mem.objects == {}


def test_the_full_segment_replaces_its_partial(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    name = seg_name(4)
    write_partial(tmp_path, name, 1000, 1_000)
    stored = Stored()
    assert store_spool(tmp_path, store, stored, partial_every=0) == 1
    partial_key = stored_object(mem, ident, name, "partial")[0].key
    assert partial_key in mem.objects
    # pg_receivewal finished it: renamed without .partial
    (tmp_path / f"{name}.partial").unlink()
    (tmp_path / name).write_bytes(segment_bytes(4))
    assert store_spool(tmp_path, store, stored, partial_every=0) == 1
    assert stored_object(mem, ident, name, "full")[1] == segment_bytes(4)
    assert partial_key not in mem.objects
    assert wal.record_key(partial_key) not in mem.objects
    # the record goes first: an object without its record is never trusted
    assert mem.deletes == [wal.record_key(partial_key), partial_key]
    assert not any(".partial" in k for k in mem.objects)
    assert name not in stored.partial_size
    assert name not in stored.partial_hash
    assert name not in stored.partial_mtime


def test_a_full_segment_is_stored_even_when_deleting_its_partial_fails(
    tmp_path: Path, mem: MemStorage, store: Store
) -> None:
    class NoDelete(MemStorage):
        def delete(self, key: str) -> None:
            raise StorageError(f"mem: {key}: access denied")

    nd = NoDelete()
    s = Store(nd, store.recipients, HOST, FACTS)
    (tmp_path / seg_name(4)).write_bytes(segment_bytes(4))
    advanced: list[int] = []
    assert store_spool(tmp_path, s, Stored(), partial_every=0, advance=advanced.append) == 1
    assert wal.object_key(HOST, 1, seg_name(4), "full") in nd.objects
    assert advanced == [5 * SEG]


def test_a_failed_partial_put_propagates(tmp_path: Path, mem: MemStorage, store: Store) -> None:
    name = seg_name(4)
    path = write_partial(tmp_path, name, 1000, 1_000)
    mem.fail_puts = True
    stored = Stored()
    with pytest.raises(StorageError):
        store_spool(tmp_path, store, stored, partial_every=0)
    assert path.exists()
    assert stored.partial_size.get(name, 0) == 0  # nothing stored: what was there before


def test_a_partial_stored_again_gets_a_key_of_its_own_and_the_old_goes_after(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    name = seg_name(4)
    write_partial(tmp_path, name, 1000, 1_000)
    stored = Stored()
    assert store_spool(tmp_path, store, stored, partial_every=0) == 1
    first = stored_object(mem, ident, name, "partial")[0].key
    write_partial(tmp_path, name, 3000, 1_001)
    assert store_spool(tmp_path, store, stored, partial_every=0) == 1
    second, plain = stored_object(mem, ident, name, "partial")
    assert second.key != first and plain == partial_bytes(3000)[:3000]
    # the new object and the swapped record first, then the old object: a reader
    # holding the old record finds its object, or finds it gone (and reads the new)
    assert first not in mem.objects and mem.deletes == [first]
    last_record = len(mem.puts) - 1 - mem.puts[::-1].index(wal.record_key(second.key))
    assert mem.puts.index(second.key) < last_record


def test_a_failed_partial_put_is_tried_again_on_the_next_pass(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity, store: Store
) -> None:
    name = seg_name(4)
    write_partial(tmp_path, name, 1000, 1_000)
    stored = Stored()
    mem.fail_puts = True
    with pytest.raises(StorageError):
        store_spool(tmp_path, store, stored, partial_every=0)
    mem.fail_puts = False
    # the storage is back; prod was idle, the file is as it was
    assert store_spool(tmp_path, store, stored, partial_every=0, final=True) == 1
    assert stored_object(mem, ident, name, "partial")[1] == partial_bytes(1000)[:1000]


def test_stored_partial_size_reads_the_record(
    tmp_path: Path, mem: MemStorage, store: Store
) -> None:
    name = seg_name(4)
    assert store.stored_partial_size(1, name) == 0
    store.put(1, name, "partial", b"x" * 777)
    assert store.stored_partial_size(1, name) == 777
    # an unreadable record counts as none
    key = wal.record_key(wal.object_key(HOST, 1, name, "partial"))
    mem.objects[key] = b"{not json"
    assert store.stored_partial_size(1, name) == 0


# -- the report ------------------------------------------------------------------------


def settings(tmp_path: Path, mon: MonitoringConfig) -> StreamSettings:
    return StreamSettings(
        host=HOST,
        container="pg",
        user="postgres",
        port=5432,
        role="vkbackup_wal",
        password="s3cret-pw",
        slot="vkbackup",
        spool=tmp_path / "spool" / HOST,
        max_lag=timedelta(minutes=5),
        max_slot_lag_mib=1024,
        monitoring=mon,
    )


def no_connect() -> SshTransport:
    raise AssertionError("the report connects nowhere")


def test_report_writes_its_own_textfile_beside_the_configured_one(tmp_path: Path) -> None:
    mon = MonitoringConfig(textfile=tmp_path / "x.prom")
    stream = WalStream(settings(tmp_path, mon), no_connect, MemStorage(), [])
    stream.up = True
    stream.slot_lag = 3 * MIB
    stream.stored.newest = datetime(2026, 11, 30, 16, 54, 25, 500000, tzinfo=UTC)
    stream._report(0.0, force=True)
    path = tmp_path / f"vkbackup-wal-{HOST}.prom"
    assert not (tmp_path / "x.prom").exists()  # the snapshot's own file is not touched
    samples = {s.name: s for s in monitoring.parse_textfile(path.read_text())}
    assert set(samples) == {
        "vkbackup_wal_stream_up",
        "vkbackup_wal_last_stored_timestamp_seconds",
        "vkbackup_wal_slot_lag_bytes",
    }
    assert all(s.labels == (("host", HOST),) for s in samples.values())
    assert samples["vkbackup_wal_stream_up"].value == 1.0
    assert samples["vkbackup_wal_last_stored_timestamp_seconds"].value == float(
        int(stream.stored.newest.timestamp())
    )
    assert samples["vkbackup_wal_slot_lag_bytes"].value == float(3 * MIB)


def test_report_of_a_down_stream_with_nothing_stored(tmp_path: Path) -> None:
    mon = MonitoringConfig(textfile=tmp_path / "x.prom")
    stream = WalStream(settings(tmp_path, mon), no_connect, MemStorage(), [])
    stream._report(0.0, force=True)
    samples = monitoring.parse_textfile((tmp_path / f"vkbackup-wal-{HOST}.prom").read_text())
    assert [(s.name, s.value) for s in samples] == [("vkbackup_wal_stream_up", 0.0)]


def test_report_waits_for_the_heartbeat_unless_forced(tmp_path: Path) -> None:
    mon = MonitoringConfig(textfile=tmp_path / "x.prom")
    stream = WalStream(settings(tmp_path, mon), no_connect, MemStorage(), [])
    now = time.monotonic()
    assert stream._report(now) == now  # too early: nothing done
    assert not (tmp_path / f"vkbackup-wal-{HOST}.prom").exists()
    assert stream._report(now, force=True) >= now
    assert (tmp_path / f"vkbackup-wal-{HOST}.prom").exists()


def test_report_without_a_textfile_writes_none(tmp_path: Path) -> None:
    stream = WalStream(settings(tmp_path, MonitoringConfig()), no_connect, MemStorage(), [])
    stream._report(0.0, force=True)
    assert list(tmp_path.iterdir()) == []


# -- the tunnel ------------------------------------------------------------------------


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


@pytest.fixture
def far() -> Iterator[tuple[queue.Queue[socket.socket], list[socket.socket]]]:
    """connect() hands the tunnel one end of a socketpair; the test gets the other
    (the database's side) from the queue."""
    peers: queue.Queue[socket.socket] = queue.Queue()
    opened: list[socket.socket] = []
    yield peers, opened
    for s in opened:
        s.close()


def pair_connect(peers: queue.Queue[socket.socket], opened: list[socket.socket]) -> socket.socket:
    mine, theirs = socket.socketpair()
    opened += [mine, theirs]
    peers.put(theirs)
    return mine


def test_tunnel_carries_bytes_both_ways_and_its_socket_is_private(
    tmp_path: Path, far: tuple[queue.Queue[socket.socket], list[socket.socket]]
) -> None:
    peers, opened = far
    with Tunnel(tmp_path, 5432, lambda: pair_connect(peers, opened)) as tunnel:
        assert tunnel.path == tmp_path / ".s.PGSQL.5432"
        mode = tunnel.path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert mode & 0o077 == 0  # only this user reaches prod's database through it
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        opened.append(client)
        client.connect(str(tunnel.path))
        db = peers.get(timeout=10)
        db.settimeout(10)
        db.sendall(b"server first")
        assert recv_exactly(client, 12) == b"server first"
        big = os.urandom(300 * 1024)  # more than one 64 KiB read
        client.sendall(big)
        assert recv_exactly(db, len(big)) == big
        db.sendall(b"R" * 100_000)
        assert recv_exactly(client, 100_000) == b"R" * 100_000
        # a second connection gets a channel of its own
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.settimeout(10)
        opened.append(other)
        other.connect(str(tunnel.path))
        db2 = peers.get(timeout=10)
        db2.sendall(b"two")
        assert recv_exactly(other, 3) == b"two"
    assert not tunnel.path.exists()
    with pytest.raises(OSError):  # nothing listens there any more
        late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        opened.append(late)
        late.connect(str(tunnel.path))


def test_tunnel_closes_the_client_when_the_database_side_ends(
    tmp_path: Path, far: tuple[queue.Queue[socket.socket], list[socket.socket]]
) -> None:
    peers, opened = far
    with Tunnel(tmp_path, 5432, lambda: pair_connect(peers, opened)) as tunnel:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(3)
        opened.append(client)
        client.connect(str(tunnel.path))
        db = peers.get(timeout=10)
        db.sendall(b"bye")
        db.close()
        assert recv_exactly(client, 3) == b"bye"
        assert client.recv(10) == b""  # the PostgreSQL protocol never half-closes


def test_closing_the_tunnel_ends_its_live_connections(
    tmp_path: Path, far: tuple[queue.Queue[socket.socket], list[socket.socket]]
) -> None:
    peers, opened = far
    with Tunnel(tmp_path, 5432, lambda: pair_connect(peers, opened)) as tunnel:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(3)
        opened.append(client)
        client.connect(str(tunnel.path))
        db = peers.get(timeout=10)
        db.sendall(b"hi")
        assert recv_exactly(client, 2) == b"hi"
    assert client.recv(10) == b""


def test_tunnel_survives_a_failed_connect(
    tmp_path: Path, far: tuple[queue.Queue[socket.socket], list[socket.socket]]
) -> None:
    peers, opened = far
    calls: list[int] = []

    def connect() -> socket.socket:
        calls.append(1)
        if len(calls) == 1:
            raise VkError("prod: cannot open a TCP channel to 172.18.0.2:5432")
        return pair_connect(peers, opened)

    with Tunnel(tmp_path, 5432, connect) as tunnel:
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        first.settimeout(10)
        opened.append(first)
        first.connect(str(tunnel.path))
        assert first.recv(10) == b""  # closed: nothing behind it
        second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        second.settimeout(10)
        opened.append(second)
        second.connect(str(tunnel.path))
        db = peers.get(timeout=10)
        second.sendall(b"ping")
        db.settimeout(10)
        assert recv_exactly(db, 4) == b"ping"


def no_pipe() -> socket.socket:
    raise AssertionError("nobody connects")


def test_tunnel_replaces_a_stale_socket_file_and_close_is_idempotent(tmp_path: Path) -> None:
    stale = tmp_path / ".s.PGSQL.6000"
    stale.write_bytes(b"")
    tunnel = Tunnel(tmp_path, 6000, no_pipe)
    try:
        assert stat.S_ISSOCK(stale.stat().st_mode)
    finally:
        tunnel.close()
    tunnel.close()
    assert not stale.exists()
    # the accept thread ends with the listener
    tunnel._thread.join(10)
    assert not tunnel._thread.is_alive()


@pytest.mark.parametrize(
    ("setting", "blocks"),
    [
        ("", False),
        ("*", True),
        ("standby1", False),
        ("FIRST 1 (standby1, *)", True),
        ("ANY 2 (a, vkbackup_wal_stream, b)", True),
        # PostgreSQL compares standby names case-insensitively, quoted or not, and
        # takes "*" for any standby, quoted or not
        ('ANY 1 ("VKBACKUP_WAL_STREAM")', True),
        ('ANY 1 ("a,b", "*")', True),
        ('ANY 1 ("a,b", "c")', False),
        ("2 (s1, s2)", False),
        ("VKBACKUP_WAL_STREAM", True),  # unquoted names fold to lower case
    ],
)
def test_names_the_stream(setting: str, blocks: bool) -> None:
    assert names_the_stream(setting) is blocks


class FakeSlotDb:
    """What _check_slot asks prod: its WAL position and the slot's lag."""

    def __init__(self) -> None:
        self.current = 0x5000000
        self.lag: int | None = 0

    def slot_lag(self) -> tuple[int, int | None]:
        return self.current, self.lag


def test_check_slot_warns_alerts_and_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stream = WalStream(settings(tmp_path, MonitoringConfig()), no_connect, MemStorage(), [])
    db = FakeSlotDb()
    stream.stored.end_lsn = db.current
    mib = 1024 * 1024
    db.lag = 600 * mib  # over half of 1024 MiB: a warning only
    stream._check_slot(cast(ProdDb, db))
    assert stream.problem is None and "half of pitr.max_slot_lag_mib" in caplog.text
    db.lag = 1100 * mib  # over the limit: a monitoring failure naming the setting
    stream._check_slot(cast(ProdDb, db))
    assert stream.problem is not None and "max_slot_lag_mib = 1024" in stream.problem
    db.lag = 10 * mib  # caught up: the failure is cleared
    stream._check_slot(cast(ProdDb, db))
    assert stream.problem is None
    db.lag = None
    stream._check_slot(cast(ProdDb, db))
    assert stream.problem is not None and "is gone" in stream.problem


def test_check_slot_fails_a_stalled_stream_after_twice_max_lag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("vkbackup.pitr.stream.time.monotonic", lambda: clock[0])
    stream = WalStream(settings(tmp_path, MonitoringConfig()), no_connect, MemStorage(), [])
    db = FakeSlotDb()
    stream.stored.end_lsn = 0x4000000  # stored up to here
    db.current = 0x4800000  # prod is ahead
    stream._check_slot(cast(ProdDb, db))
    assert stream.problem is None  # just seen: the stream has max_lag to store it
    clock[0] += 2 * 300 + 1  # max_lag is 5 minutes in these settings
    stream._check_slot(cast(ProdDb, db))
    assert stream.problem is not None and "0/4800000" in stream.problem
    assert "only up to 0/4000000 is stored" in stream.problem
    stream.stored.end_lsn = 0x4800000  # it caught up
    clock[0] += 60
    stream._check_slot(cast(ProdDb, db))
    assert stream.problem is None


def test_what_the_spool_holds_is_stored_when_prod_is_gone(
    tmp_path: Path, mem: MemStorage, ident: X25519Identity
) -> None:
    # a session remembered prod's facts, then ended with its final store failed;
    # prod is unreachable now: the leftovers are stored with the remembered facts
    s = settings(tmp_path, MonitoringConfig())
    s.spool.mkdir(parents=True)
    stream = WalStream(s, no_connect, mem, [ident.recipient()])
    stream._remember(FACTS)
    name = seg_name(4)
    write_partial(s.spool, name, 1000, 1_000)
    (s.spool / seg_name(3)).write_bytes(segment_bytes(3))
    stream._store_leftovers()
    assert stored_object(mem, ident, seg_name(3), "full")[1] == segment_bytes(3)
    assert stored_object(mem, ident, name, "partial")[0].plain_size == 1000
    assert not (s.spool / seg_name(3)).exists()


def test_a_second_stream_on_one_spool_is_refused(
    tmp_path: Path, mem: MemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(tmp_path, MonitoringConfig())
    info = mount_line(tmp_path, "tmpfs")
    real = open_spool
    monkeypatch.setattr("vkbackup.pitr.stream.open_spool", lambda d: real(d, info))
    WalStream(s, no_connect, mem, [])._open_spool()
    with pytest.raises(ConfigError) as e:
        WalStream(s, no_connect, mem, [])._open_spool()
    assert "another vkbackup wal-stream" in str(e.value)
