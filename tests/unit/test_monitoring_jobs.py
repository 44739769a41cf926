"""Monitoring of every job, not only snapshot: the freshness ages in the
Prometheus textfile (exact lines), the pings of verify, prune and drill (a
healthchecks URL without "{job}" gets only their failures), and
`AppContext.monitored_job` around a job. Endpoints are replaced by a recorder
of what would be POSTed; the real HTTP path is tested in
tests/integration/lifecycle/test_monitoring.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import monitoring
from vkbackup.actions.drill import DrillResult
from vkbackup.actions.prune import HostPrune, PruneReport
from vkbackup.actions.verify import BadObject, SnapshotVerify
from vkbackup.cli.context import AppContext
from vkbackup.cli.outcomes import drill_outcome, prune_outcomes, verify_outcomes
from vkbackup.config import parse_config
from vkbackup.config.model import MonitoringConfig
from vkbackup.crypto import generate_identity
from vkbackup.errors import LockError, StorageError
from vkbackup.monitoring import (
    JobOutcome,
    RunMetrics,
    notify,
    parse_textfile,
    report_error,
    report_job,
    write_textfile,
)
from vkbackup.restore.session import RestoreReport
from vkbackup.retention import PrunePlan

T1 = datetime(2026, 1, 2, 2, 20, tzinfo=UTC)


@dataclass(frozen=True)
class Ages:
    host: str
    snapshot_age_seconds: float | None
    verify_age_seconds: float | None
    drill_age_seconds: float | None


@pytest.fixture
def posts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every POST monitoring would make, as (url, body)."""
    sent: list[tuple[str, str]] = []

    def post(url: str, body: bytes, content_type: str, timeout: float, attempts: int) -> None:
        sent.append((url, body.decode()))

    monkeypatch.setattr(monitoring, "_post", post)
    return sent


# -- the textfile ------------------------------------------------------------------------

AGES_PROD = [
    "# HELP vkbackup_last_drill_age_seconds Age of the newest successful restore drill when "
    "this file was written (+Inf: none).",
    "# TYPE vkbackup_last_drill_age_seconds gauge",
    'vkbackup_last_drill_age_seconds{host="prod"} 86400',
    "# HELP vkbackup_last_snapshot_age_seconds Age of the newest complete snapshot when this "
    "file was written (+Inf: none).",
    "# TYPE vkbackup_last_snapshot_age_seconds gauge",
    'vkbackup_last_snapshot_age_seconds{host="prod"} 3600',
    "# HELP vkbackup_last_verify_age_seconds Age of the newest passing verify record when this "
    "file was written (+Inf: none).",
    "# TYPE vkbackup_last_verify_age_seconds gauge",
    'vkbackup_last_verify_age_seconds{host="prod"} +Inf',
]


def test_textfile_ages_exact_lines(tmp_path: Path) -> None:
    path = tmp_path / "vkbackup.prom"
    assert write_textfile(path, [], [Ages("prod", 3600.7, None, 86400.0)]) == []
    assert path.read_text() == "\n".join(AGES_PROD) + "\n"
    back = {(s.name, s.labels): s.value for s in parse_textfile(path.read_text())}
    assert back[("vkbackup_last_verify_age_seconds", (("host", "prod"),))] == float("inf")


def test_ages_and_run_series_replace_only_their_own(tmp_path: Path) -> None:
    path = tmp_path / "vkbackup.prom"
    write_textfile(path, [], [Ages("prod", 3600, None, 86400), Ages("db", 10, 20, 30)])
    # a snapshot run of prod: its run series are added, every age is kept
    write_textfile(path, [RunMetrics("prod", "complete", T1, 12.0)])
    lines = path.read_text().splitlines()
    assert [ln for ln in AGES_PROD if ln in lines] == AGES_PROD  # every age line kept
    assert 'vkbackup_last_status{host="prod"} 0' in lines
    assert 'vkbackup_last_drill_age_seconds{host="db"} 30' in lines
    # new ages of prod: prod's ages replaced, db's ages and prod's run kept
    write_textfile(path, [], [Ages("prod", 5, 6, None)])
    lines = path.read_text().splitlines()
    assert 'vkbackup_last_snapshot_age_seconds{host="prod"} 5' in lines
    assert 'vkbackup_last_verify_age_seconds{host="prod"} 6' in lines
    assert 'vkbackup_last_drill_age_seconds{host="prod"} +Inf' in lines
    assert 'vkbackup_last_snapshot_age_seconds{host="db"} 10' in lines
    assert 'vkbackup_last_status{host="prod"} 0' in lines
    assert sum(ln.startswith("vkbackup_last_snapshot_age_seconds") for ln in lines) == 2


# -- pings of jobs other than snapshot ----------------------------------------------------

UUID = "5f1c3e9a-0000-4000-8000-0123456789ab"


def test_a_shared_healthchecks_check_gets_only_the_failures_of_other_jobs(
    posts: list[tuple[str, str]],
) -> None:
    cfg = MonitoringConfig(healthchecks_url=f"https://hc.test/{UUID}")
    for event in ("start", "success"):
        assert notify(cfg, event, host="prod", job="verify") == []
    assert posts == []
    notify(cfg, "failure", host="prod", job="prune", reason="prune of prod: lock held")
    notify(cfg, "failure", host="prod", job="drill")
    notify(cfg, "start", host="prod")  # the snapshot's own
    assert posts == [
        (f"https://hc.test/{UUID}/fail", "prune of prod: lock held"),
        (f"https://hc.test/{UUID}/fail", "vkbackup drill prod: failed"),
        (f"https://hc.test/{UUID}/start", ""),
    ]


def test_job_placeholder_gives_each_job_its_own_check_and_the_webhook_the_job(
    posts: list[tuple[str, str]],
) -> None:
    cfg = MonitoringConfig(
        healthchecks_url="https://hc.test/KEY/{host}-{job}",
        webhook_url="https://hook.test/{job}",
    )
    notify(cfg, "start", host="prod", job="verify")
    notify(cfg, "success", host="prod", job="verify", summary={"snapshots": 2, "bad": 0})
    notify(cfg, "success", host="prod", summary={"id": "x"})
    urls = [u for u, _ in posts]
    assert urls == [
        "https://hc.test/KEY/prod-verify/start",
        "https://hook.test/verify",
        "https://hc.test/KEY/prod-verify",
        "https://hook.test/verify",
        "https://hc.test/KEY/prod-snapshot",
        "https://hook.test/snapshot",
    ]
    assert posts[2][1] == "vkbackup verify prod: snapshots=2 bad=0"
    assert posts[4][1] == "vkbackup prod: id=x"  # the snapshot's line is unchanged
    hook = json.loads(posts[3][1])
    assert (hook["job"], hook["event"], hook["host"]) == ("verify", "success", "prod")
    assert hook["summary"] == {"snapshots": 2, "bad": 0}


def test_report_job_pings_each_host_and_writes_the_ages_once(
    posts: list[tuple[str, str]], tmp_path: Path
) -> None:
    prom = tmp_path / "vkbackup.prom"
    cfg = MonitoringConfig(healthchecks_url="https://hc.test/{host}/{job}", textfile=prom)
    outcomes = [
        JobOutcome("verify", "prod", True, {"bad": 0}),
        JobOutcome("verify", "db", False, {"bad": 1}, "verify of db found 1 bad: x: sha256: k"),
    ]
    assert report_job(cfg, outcomes, [Ages("prod", 3600, None, 86400)]) == []
    assert posts == [
        ("https://hc.test/prod/verify", "vkbackup verify prod: bad=0"),
        ("https://hc.test/db/verify/fail", "verify of db found 1 bad: x: sha256: k"),
    ]
    assert prom.read_text() == "\n".join(AGES_PROD) + "\n"


def test_report_error_of_another_job_records_no_snapshot_run(
    posts: list[tuple[str, str]], tmp_path: Path
) -> None:
    prom = tmp_path / "vkbackup.prom"
    cfg = MonitoringConfig(healthchecks_url="https://hc.test/{job}", textfile=prom)
    report_error(cfg, "prod", LockError("host prod: lock held"), 1.0, job="prune")
    assert posts == [("https://hc.test/prune/fail", "prune of prod failed: host prod: lock held")]
    assert not prom.exists()  # no ages, no snapshot run: nothing to write
    report_error(cfg, "prod", "boom", 1.0, job="prune", ages=[Ages("prod", 3600, None, 86400)])
    assert "vkbackup_last_status" not in prom.read_text()
    assert 'vkbackup_last_snapshot_age_seconds{host="prod"} 3600' in prom.read_text()


# -- outcomes of each job ------------------------------------------------------------------


def test_verify_outcomes_one_per_host() -> None:
    ok = SnapshotVerify("prod", "20260101T020000Z-aaaa", "t", "full", objects=3, bytes=300)
    bad = SnapshotVerify("db", "20260101T020000Z-bbbb", "t", "no-decrypt", objects=2, bytes=20)
    bad.bad.append(BadObject("data/db/k.age", "pg", "sha256", "data/db/k.age: sha256 differs"))
    prod, db = sorted(verify_outcomes([ok, bad]), key=lambda o: o.host != "prod")
    assert (prod.job, prod.ok, prod.reason) == ("verify", True, None)
    assert dict(prod.summary) == {
        "status": "ok",
        "snapshots": 1,
        "latest": "20260101T020000Z-aaaa",
        "objects": 3,
        "bytes": 300,
        "bad": 0,
        "mode": "full",
    }
    assert not db.ok
    assert db.reason == "verify of db found 1 bad: 20260101T020000Z-bbbb: sha256: data/db/k.age"


def test_prune_outcomes_per_host_and_failed_hosts() -> None:
    plan = PrunePlan(decisions=(), deletable_keys=(), policy_empty=False)
    good = HostPrune("prod", plan, False, {"data/prod/a": 10}, {}, deleted=["data/prod/a"])
    partly = HostPrune("db", plan, False, {}, {}, failed=[("data/db/x", "HTTP 503")])
    report = PruneReport(
        [good, partly], False, errors=[("web", LockError("lock held")), ("-", LockError("x"))]
    )
    out = prune_outcomes(report)
    assert [(o.host, o.ok) for o in out] == [("prod", True), ("db", False), ("web", False)]
    assert out[0].summary["bytes_freed"] == 10 and out[0].summary["deleted"] == 1
    assert out[1].reason == "prune of db: 1 deletions failed: data/db/x: HTTP 503"
    assert out[2].reason == "prune of web: lock held"


def test_drill_outcome() -> None:
    rr = RestoreReport("20260101T020000Z-aaaa", "prod", "root@x:22", "derived", "t")
    rr.status = "failed"
    rr.error = "step health failed: caddy down"
    doc = {
        "host": "prod",
        "status": "failed",
        "error": rr.error,
        "rto_seconds": 12.34,
        "rpo_seconds": 3600.0,
        "restore": rr.to_json(),
    }
    [o] = drill_outcome(DrillResult(doc=doc, report=rr))
    assert (o.job, o.host, o.ok) == ("drill", "prod", False)
    assert o.reason == "drill of prod failed: step health failed: caddy down"
    assert dict(o.summary) == {
        "status": "failed",
        "snapshot": "20260101T020000Z-aaaa",
        "rto_seconds": 12.3,
        "rpo_seconds": 3600.0,
    }


# -- AppContext.monitored_job ---------------------------------------------------------------


def app_with(tmp_path: Path, **monitoring_keys: str) -> AppContext:
    (tmp_path / "store").mkdir(exist_ok=True)
    cfg = parse_config(
        {
            "storage": {"type": "local", "path": str(tmp_path / "store")},
            "copies": [{"name": "offsite", "path": str(tmp_path / "offsite")}],
            "monitoring": monitoring_keys,
            "hosts": {"prod": {"address": "127.0.0.1"}},
        },
        "vk.toml",
    )
    return AppContext(_config=cfg)


def test_monitored_job_pings_start_and_outcome_then_writes_the_ages(
    posts: list[tuple[str, str]], tmp_path: Path
) -> None:
    prom = tmp_path / "vkbackup.prom"
    app = app_with(tmp_path, healthchecks_url="https://hc.test/{host}-{job}", textfile=str(prom))
    now = datetime.now(UTC).replace(microsecond=0)
    builder = SnapshotBuilder(app.storage(), "prod", [generate_identity().recipient()])
    builder.snapshot(now - timedelta(hours=2), new={"db": b"dump"})

    def outcomes(n: int) -> list[JobOutcome]:
        return [JobOutcome("verify", "prod", True, {"n": n})]

    assert app.monitored_job("verify", ["prod"], lambda: 7, outcomes) == 7
    assert posts == [
        ("https://hc.test/prod-verify/start", ""),
        ("https://hc.test/prod-verify", "vkbackup verify prod: n=7"),
    ]
    lines = prom.read_text().splitlines()
    [age] = [ln for ln in lines if ln.startswith("vkbackup_last_snapshot_age_seconds")]
    assert age.startswith('vkbackup_last_snapshot_age_seconds{host="prod"} ')
    assert 7200 <= float(age.split()[-1]) < 7200 + 600
    assert 'vkbackup_last_verify_age_seconds{host="prod"} +Inf' in lines


def test_monitored_job_reports_the_error_for_every_host_and_reraises(
    posts: list[tuple[str, str]], tmp_path: Path
) -> None:
    app = app_with(tmp_path, healthchecks_url="https://hc.test/{host}-{job}")

    def run() -> int:
        raise StorageError("s3://b: unreachable")

    with pytest.raises(StorageError, match="unreachable"):
        app.monitored_job("prune", ["a", "b"], run, lambda _: [])
    assert posts == [
        ("https://hc.test/a-prune/start", ""),
        ("https://hc.test/b-prune/start", ""),
        ("https://hc.test/a-prune/fail", "prune of a failed: s3://b: unreachable"),
        ("https://hc.test/b-prune/fail", "prune of b failed: s3://b: unreachable"),
    ]


def test_freshness_reads_nothing_without_a_textfile(tmp_path: Path) -> None:
    app = app_with(tmp_path)
    app._storage = None  # would be opened on first use: it must not be
    assert app.freshness(["prod"]) == []
    assert app._storage is None


def test_a_job_of_a_copy_pings_its_own_check_and_writes_no_ages(
    posts: list[tuple[str, str]], tmp_path: Path
) -> None:
    prom = tmp_path / "vkbackup.prom"
    app = app_with(tmp_path, healthchecks_url="https://hc.test/{host}-{job}", textfile=str(prom))
    builder = SnapshotBuilder(app.storage(), "prod", [generate_identity().recipient()])
    builder.snapshot(datetime.now(UTC) - timedelta(hours=2), new={"db": b"dump"})
    assert app.monitored_job("verify", ["prod"], lambda: 7, outcomes_of("verify")) == 7
    primary = prom.read_text()
    assert 'vkbackup_last_snapshot_age_seconds{host="prod"} 7' in primary
    posts.clear()
    # `vkbackup --storage offsite verify`: an empty copy, whose ages would be +Inf
    (tmp_path / "offsite").mkdir()
    app = app_with(tmp_path, healthchecks_url="https://hc.test/{host}-{job}", textfile=str(prom))
    app.storage_name = "offsite"
    assert app.monitoring_job("verify") == "verify-offsite"
    assert app.monitored_job("verify", ["prod"], lambda: 1, outcomes_of("verify")) == 1
    assert posts == [
        ("https://hc.test/prod-verify-offsite/start", ""),
        ("https://hc.test/prod-verify-offsite", "vkbackup verify-offsite prod: n=1"),
    ]
    assert prom.read_text() == primary  # the primary's ages stand
    assert app.freshness(["prod"]) == []
    # a failure of the copy's job is the copy's too, and leaves the textfile alone
    posts.clear()

    def run() -> int:
        raise StorageError("offsite: unreachable")

    with pytest.raises(StorageError):
        app.monitored_job("drill", ["prod"], run, lambda _: [])
    assert [u for u, _ in posts] == [
        "https://hc.test/prod-drill-offsite/start",
        "https://hc.test/prod-drill-offsite/fail",
    ]
    assert prom.read_text() == primary


def test_a_shared_check_hears_a_copys_failures_named_as_the_copys(
    posts: list[tuple[str, str]], tmp_path: Path
) -> None:
    app = app_with(
        tmp_path, healthchecks_url=f"https://hc.test/{UUID}", webhook_url="https://hook.test/"
    )
    app.storage_name = "offsite"
    app.monitored_job("verify", ["prod"], lambda: 0, outcomes_of("verify", ok=False))
    pings = [(u, b) for u, b in posts if u.startswith("https://hc.test/")]
    assert pings == [
        (f"https://hc.test/{UUID}/fail", "verify of prod failed (in the copy offsite, --storage)")
    ]
    hooks = [json.loads(b) for u, b in posts if u == "https://hook.test/"]
    assert [(d["event"], d["job"]) for d in hooks] == [
        ("start", "verify-offsite"),
        ("failure", "verify-offsite"),
    ]
    posts.clear()
    app.monitored_job("verify", ["prod"], lambda: 0, outcomes_of("verify"))
    assert [u for u, _ in posts] == ["https://hook.test/"] * 2  # no hc start or success


def outcomes_of(job: str, ok: bool = True) -> Callable[[int], list[JobOutcome]]:
    """What the CLI's outcome builders give: the job's plain name, whatever the storage."""
    return lambda n: [
        JobOutcome(job, "prod", ok, {"n": n}, None if ok else f"{job} of prod failed")
    ]
