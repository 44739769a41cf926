"""The postgres source references an earlier dump only when the cluster's transaction
counter proves nothing was committed since; anything unprovable means a dump."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from vkbackup.config.model import SourceConfig
from vkbackup.errors import SnapshotError
from vkbackup.manifest import ObjectRecord
from vkbackup.sources.base import PlanContext, fingerprint_tag
from vkbackup.sources.postgres import STATE_MARK, PostgresSource, split_probe, state_fingerprint
from vkbackup.streams import Readable
from vkbackup.transport.base import Completed, Process

DUMP_VERSION = "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
INFO = "version_num\t150018\nsize\t1000\n"
COUNTS = "public.accounts\t5\npublic.users\t40\n"


def state_out(
    xmax: str = "866", xmin: str | None = None, recovery: str = "false", seqs: str = "d9e4"
) -> str:
    xmin = xmax if xmin is None else xmin
    return (
        f"{xmin}\t{xmax}\t7712585002496303120\t00000001\t150018\t{recovery}\t{seqs}\n"
        f"{DUMP_VERSION}\n"
    )


def test_fingerprint_names_next_xid_cluster_versions_and_options() -> None:
    fp = state_fingerprint(state_out(), "chatwoot", "postgres", 1)
    assert fp is not None
    for part in (":866:", "7712585002496303120", "150018", DUMP_VERSION, "chatwoot"):
        assert part in fp
    assert state_fingerprint(state_out(), "chatwoot", "postgres", 6) != fp
    assert state_fingerprint(state_out(), "other", "postgres", 1) != fp
    assert state_fingerprint(state_out(xmax="867"), "chatwoot", "postgres", 1) != fp
    # a committed nextval inside the pre-logged values takes no transaction id: the
    # sequences' digest moves instead
    assert state_fingerprint(state_out(seqs="77aa"), "chatwoot", "postgres", 1) != fp


def test_no_fingerprint_when_nothing_is_proven() -> None:
    # a transaction holding id 860 is running: it may commit after the dump's snapshot
    assert state_fingerprint(state_out(xmin="860"), "d", "u", 1) is None
    assert state_fingerprint(state_out(recovery="true"), "d", "u", 1) is None  # a standby
    assert state_fingerprint("", "d", "u", 1) is None
    assert state_fingerprint("garbage\n", "d", "u", 1) is None
    assert state_fingerprint("1\t1\t\t1\t150018\tfalse\tab\nv\n", "d", "u", 1) is None
    assert state_fingerprint("x\tx\t1\t1\t150018\tfalse\tab\nv\n", "d", "u", 1) is None
    assert state_fingerprint("1\t1\t1\t1\t150018\tfalse\nv\n", "d", "u", 1) is None


@dataclass
class FakeHost:
    """Answers the source's small queries; the next transaction id moves when told to."""

    xids: list[str]
    calls: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "prod"

    def run(
        self, argv: list[str], *, input: bytes = b"", check: bool = True, timeout: Any = None
    ) -> Completed:
        text = " ".join(argv)
        self.calls.append(text)
        if STATE_MARK in text:  # one docker exec: info or counts, the mark, the state
            first = COUNTS if "query_to_xml" in text else INFO
            xid = self.xids.pop(0) if len(self.xids) > 1 else self.xids[0]
            out = first + STATE_MARK + "\n" + self.state(xid)
            return Completed(argv, 0, out.encode(), "")
        return Completed(argv, 0, b"postgres:15\n", "")

    def state(self, xid: str) -> str:
        return state_out(xid)

    def start(self, argv: list[str]) -> Process:
        raise AssertionError("plan runs no stream")

    def feed(self, argv: list[str], src: Readable) -> Completed:
        raise AssertionError("plan feeds nothing")

    def close(self) -> None:
        pass


CFG = SourceConfig(
    type="postgres", name="db", where="hosts.prod.sources[0]", container="pg", database="chatwoot"
)


def previous_with(fp: str) -> tuple[ObjectRecord, ...]:
    def rec(name: str, role: str, tag: str) -> ObjectRecord:
        return ObjectRecord(
            key=f"data/prod/S1/db/{name}", source="db", name=name, role=role, size=10,
            sha256="0" * 64, compression="none", chain=0, fingerprint=tag, uploaded_in="S1",
        )  # fmt: skip

    return (
        rec("dump.pgdump.age", "pg-dump", fingerprint_tag(fp)),
        rec("globals.sql.age", "pg-globals", fingerprint_tag("globals:" + fp)),
    )


def fp_at(xid: str) -> str:
    fp = state_fingerprint(state_out(xid), "chatwoot", "postgres", 1)
    assert fp is not None
    return fp


def test_unchanged_cluster_references_the_earlier_dump_and_recounts_rows() -> None:
    host = FakeHost(xids=["10"])
    plan = PostgresSource(CFG).plan(host, PlanContext("S2", previous=previous_with(fp_at("10"))))
    dump = plan.streams[0]
    assert dump.fingerprint == fp_at("10") and dump.argv == []
    assert plan.streams[1].fingerprint == "globals:" + fp_at("10")
    assert plan.meta["row_counts"] == {"public.accounts": 5, "public.users": 40}
    assert plan.meta["unchanged_since"] == "S1"


def test_a_commit_since_the_earlier_dump_means_a_full_dump() -> None:
    host = FakeHost(xids=["20"])
    plan = PostgresSource(CFG).plan(host, PlanContext("S2", previous=previous_with(fp_at("10"))))
    dump = plan.streams[0]
    assert "pg_dump" in " ".join(dump.argv)
    assert dump.fingerprint == fp_at("20")  # the next snapshot may reuse this one
    assert "row_counts" not in plan.meta


def test_a_commit_while_counting_drops_the_reuse() -> None:
    host = FakeHost(xids=["10", "30"])
    plan = PostgresSource(CFG).plan(host, PlanContext("S2", previous=previous_with(fp_at("10"))))
    dump = plan.streams[0]
    assert "pg_dump" in " ".join(dump.argv)
    assert dump.fingerprint is None and plan.streams[1].fingerprint is None
    assert "row_counts" not in plan.meta


def test_unreadable_state_means_a_full_dump() -> None:
    class Refusing(FakeHost):
        """psql stops at the state query (ON_ERROR_STOP): the info came, then the mark."""

        def run(self, argv: list[str], **kw: Any) -> Completed:
            done = super().run(argv, **kw)
            if STATE_MARK not in " ".join(argv):
                return done
            out = done.stdout.split((STATE_MARK + "\n").encode())[0] + (STATE_MARK + "\n").encode()
            return Completed(argv, 1, out, "permission denied for function pg_control_system")

    plan = PostgresSource(CFG).plan(Refusing(xids=["10"]), PlanContext("S2"))
    assert plan.streams[0].fingerprint is None
    assert "pg_dump" in " ".join(plan.streams[0].argv)
    assert plan.meta["server"]["version_num"] == "150018"  # the info part still counts


def test_failing_info_query_names_database_and_container() -> None:
    class Broken(FakeHost):
        def run(self, argv: list[str], **kw: Any) -> Completed:
            return Completed(argv, 2, b"", 'FATAL:  database "chatwoot" does not exist')

    with pytest.raises(SnapshotError) as info:
        PostgresSource(CFG).plan(Broken(xids=["10"]), PlanContext("S2"))
    msg = str(info.value)
    assert "'chatwoot'" in msg and "'pg'" in msg and "does not exist" in msg


def test_probe_output_is_split_at_the_mark() -> None:
    assert split_probe(0, "a\tb\n" + STATE_MARK + "\nstate\nversion\n") == (
        "a\tb\n",
        "state\nversion\n",
    )
    assert split_probe(1, "a\tb\n" + STATE_MARK + "\n") == ("a\tb\n", None)
    assert split_probe(1, "") == (None, None)
