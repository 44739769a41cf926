"""Monitoring: pings on start, success and failure, and a Prometheus textfile.

Nothing here ever fails a backup: every problem is logged as a warning and
returned as a message, never raised.

Pings go to a healthchecks.io-style URL (`<url>/start`, `<url>`, `<url>/fail`;
"{host}" in the URL is replaced by the host name, for one check per host)
and/or a webhook that receives one JSON document per event. Every text sent
goes through vkbackup.logs.redact, so a registered secret never leaves the
machine, and the summary carries only ids, status, sizes and source names.

Every job reports: snapshot, and verify, prune, drill and copy. A job's name
replaces "{job}" in the URLs, and is the webhook document's "job"; a job run
on a copy (`--storage NAME`) is named "JOB-NAME" by the CLI
(`AppContext.monitoring_job`), which writes no ages for it.
A healthchecks URL without "{job}" is one check that the snapshot pings; the
other jobs send it only their failures, never "start" or "success": their
start with no success on the snapshot's schedule would raise false alarms, and
a prune's success after a failed snapshot would mark the check up again.

The node_exporter textfile is rewritten atomically (temp file in the same
directory, fsync, rename). It replaces the series of the hosts this run
reports and keeps every other host's (the old file is parsed), and keeps a
host's last-success time when this run is not complete: an alert on "no
complete snapshot for a day" fires even while runs keep failing. A run that
failed before any source ran reports every source known from the last run as
not saved, so an alert on vkbackup_source_ok fires too.

The textfile also carries, per host, the ages of the newest complete
snapshot, passing verify and successful drill (+Inf: none on record), as of
the moment it was written: every job and every `vkbackup check` rewrites
them, so a live age is `age + time() - node_textfile_mtime_seconds`. Writing
ages replaces only the ages of those hosts; writing a snapshot run replaces
only its run series.

This module knows no action: a run's outcome reaches it as anything shaped
like `RunResult` (the snapshot action's result is), or as `RunMetrics`; ages
as anything shaped like `HostAges`; another job's outcome as a `JobOutcome`.
`report_result`, `report_job` and `report_error` are the calls the CLI makes
around each host's run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from vkbackup import __version__
from vkbackup.config.model import MonitoringConfig
from vkbackup.logs import get_logger, redact

log = get_logger("monitoring")

Event = Literal["start", "success", "failure"]
EVENTS: tuple[str, ...] = ("start", "success", "failure")
#: the job whose pings a healthchecks URL without "{job}" is for
SNAPSHOT_JOB = "snapshot"
#: healthchecks.io stores at most 100 kB of a ping body; stay well below.
MAX_BODY_CHARS = 10_000
USER_AGENT = f"vkbackup/{__version__}"


# -- what a run reports ------------------------------------------------------------


class SourceOutcome(Protocol):
    """One source of a run, as monitoring reads it."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...  # "ok" when saved
    @property
    def error(self) -> str | None: ...
    @property
    def bytes_new(self) -> int: ...
    @property
    def bytes_reused(self) -> int: ...


@runtime_checkable
class RunResult(Protocol):
    """One host's finished run, as monitoring reads it (a snapshot result is one)."""

    @property
    def host(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...  # "complete" | "partial" | "failed"
    @property
    def finished(self) -> str: ...  # ISO 8601
    @property
    def seconds(self) -> float: ...
    @property
    def bytes_new(self) -> int: ...
    @property
    def bytes_reused(self) -> int: ...
    @property
    def sources(self) -> Sequence[SourceOutcome]: ...


class HostAges(Protocol):
    """How old the newest complete snapshot, passing verify and successful drill
    of a host are, in seconds (None: none on record); `vkbackup check`'s
    per-host result is one."""

    @property
    def host(self) -> str: ...
    @property
    def snapshot_age_seconds(self) -> float | None: ...
    @property
    def verify_age_seconds(self) -> float | None: ...
    @property
    def drill_age_seconds(self) -> float | None: ...


@dataclass(frozen=True)
class JobOutcome:
    """One host's finished run of a job other than snapshot (verify, prune,
    drill, copy): whether it did what was asked, the summary sent with the
    pings (ids, counts, sizes: no secrets), and why it failed."""

    job: str
    host: str
    ok: bool
    summary: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None


# -- pings ---------------------------------------------------------------------


def safe_url(url: str) -> str:
    """Given a URL, return it with its path, query and credentials hidden (they
    often carry the token): "https://hc-ping.com/…"."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme}://{host}{port}/…"


def _redact_doc(value: Any) -> Any:
    """Given a JSON-able value, return it with every string passed through redact()."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): _redact_doc(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_doc(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact(str(value))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_BODY_CHARS else text[: MAX_BODY_CHARS - 12] + "\n[truncated]"


def summary_line(host: str, summary: Mapping[str, Any] | None, job: str = SNAPSHOT_JOB) -> str:
    """Given a host, a summary dict and the job, return one human line for a ping
    body: "vkbackup prod: id=... status=complete", "vkbackup verify prod: ..."."""
    who = f"vkbackup {host}" if job == SNAPSHOT_JOB else f"vkbackup {job} {host}"
    if not summary:
        return who
    fields = " ".join(
        f"{k}={v}" for k, v in summary.items() if isinstance(v, str | int | float | bool)
    )
    return f"{who}: {fields}".strip()


def _post(url: str, body: bytes, content_type: str, timeout: float, attempts: int) -> str | None:
    """POST *body* to *url*; return None on a 2xx answer, else what went wrong."""
    if urlsplit(url).scheme not in ("http", "https"):
        return f"{safe_url(url)}: only http:// and https:// URLs are pinged"
    problem = "not attempted"
    for attempt in range(1, max(1, attempts) + 1):
        req = urllib.request.Request(  # noqa: S310 - scheme checked above
            url,
            data=body,
            method="POST",
            headers={"Content-Type": content_type, "User-Agent": USER_AGENT},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                resp.read(65536)
                return None
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code} {e.reason}"
            if 400 <= e.code < 500 and e.code not in (408, 429):
                break  # our request is wrong: retrying does not help
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            problem = f"{type(e).__name__}: {reason}"
        if attempt < attempts:
            time.sleep(min(2.0, 0.5 * attempt))
    return f"{safe_url(url)}: {problem}"


def notify(
    cfg: MonitoringConfig,
    event: Event,
    *,
    host: str,
    summary: Mapping[str, Any] | None = None,
    reason: str | None = None,
    job: str = SNAPSHOT_JOB,
    timeout: float = 10.0,
    attempts: int = 2,
) -> list[str]:
    """Given the monitoring config and an event of *host*'s run of *job*, ping
    every configured endpoint (a healthchecks URL without "{job}" gets only the
    failures of jobs other than snapshot: see the module docstring). Return the
    warnings (each also logged); never raise."""
    warnings: list[str] = []
    try:
        if event not in EVENTS:
            raise ValueError(f"unknown monitoring event {event!r} (expected {EVENTS})")
        text_reason = _clip(redact(reason)) if reason else ""
        hc = cfg.healthchecks_url
        shared = hc is not None and job != SNAPSHOT_JOB and "{job}" not in hc
        if hc and not (shared and event != "failure"):
            base = hc.replace("{host}", host).replace("{job}", job).rstrip("/")
            if event == "start":
                url, body = base + "/start", b""
            elif event == "success":
                url, body = base, _clip(redact(summary_line(host, summary, job))).encode()
            else:
                url = base + "/fail"
                body = (text_reason or f"{summary_line(host, None, job)}: failed").encode()
            problem = _post(url, body, "text/plain; charset=utf-8", timeout, attempts)
            if problem:
                warnings.append(f"healthchecks ping ({event}) failed: {problem}")
        if cfg.webhook_url:
            doc = {
                "tool": "vkbackup",
                "version": __version__,
                "event": event,
                "job": job,
                "host": host,
                "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "summary": _redact_doc(dict(summary or {})),
                "reason": text_reason or None,
            }
            body = json.dumps(doc, sort_keys=True, default=str).encode()
            url = cfg.webhook_url.replace("{host}", host).replace("{job}", job)
            problem = _post(url, body, "application/json", timeout, attempts)
            if problem:
                warnings.append(f"webhook ({event}) failed: {problem}")
    except Exception as e:  # monitoring never fails a backup
        warnings.append(f"monitoring ({event}) failed: {type(e).__name__}: {redact(str(e))}")
    for w in warnings:
        log.warning("%s", w)
    return warnings


# -- Prometheus textfile ---------------------------------------------------------

METRICS: dict[str, tuple[str, str]] = {
    # name: (type, help)
    "vkbackup_last_success_timestamp_seconds": (
        "gauge",
        "Unix time of the last complete snapshot (0: never).",
    ),
    "vkbackup_last_run_timestamp_seconds": ("gauge", "Unix time the last snapshot run ended."),
    "vkbackup_last_status": ("gauge", "Last snapshot run: 0 complete, 1 partial, 2 failed."),
    "vkbackup_duration_seconds": ("gauge", "Duration of the last snapshot run."),
    "vkbackup_bytes_new": ("gauge", "Ciphertext bytes uploaded by the last snapshot."),
    "vkbackup_bytes_reused": (
        "gauge",
        "Ciphertext bytes the last snapshot reused from earlier ones.",
    ),
    "vkbackup_source_bytes": (
        "gauge",
        "Ciphertext bytes of one source in the last snapshot (new + reused).",
    ),
    "vkbackup_source_ok": ("gauge", "1 if the source was saved by the last snapshot, else 0."),
}
#: per host, as of the moment the file was written (+Inf: none on record)
AGE_METRICS: dict[str, tuple[str, str]] = {
    "vkbackup_last_snapshot_age_seconds": (
        "gauge",
        "Age of the newest complete snapshot when this file was written (+Inf: none).",
    ),
    "vkbackup_last_verify_age_seconds": (
        "gauge",
        "Age of the newest passing verify record when this file was written (+Inf: none).",
    ),
    "vkbackup_last_drill_age_seconds": (
        "gauge",
        "Age of the newest successful restore drill when this file was written (+Inf: none).",
    ),
}
#: the series a snapshot run replaces (the ages are not among them)
RUN_METRICS = frozenset(METRICS)
METRICS.update(AGE_METRICS)
STATUS_VALUE = {"complete": 0, "partial": 1, "failed": 2}


@dataclass(frozen=True)
class SourceMetrics:
    name: str
    bytes: int
    ok: bool


@dataclass(frozen=True)
class RunMetrics:
    """One host's snapshot run, as the textfile reports it."""

    host: str
    status: str  # "complete" | "partial" | "failed"
    finished: datetime
    seconds: float
    bytes_new: int = 0
    bytes_reused: int = 0
    sources: tuple[SourceMetrics, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUS_VALUE:
            raise ValueError(f"host {self.host}: unknown run status {self.status!r}")

    @classmethod
    def from_result(cls, result: RunResult) -> RunMetrics:
        """Given a run's result, return its metrics."""
        try:
            finished = datetime.fromisoformat(result.finished)
        except ValueError:
            finished = datetime.now(UTC)
        return cls(
            host=result.host,
            status=result.status,
            finished=finished,
            seconds=float(result.seconds),
            bytes_new=result.bytes_new,
            bytes_reused=result.bytes_reused,
            sources=tuple(
                SourceMetrics(s.name, s.bytes_new + s.bytes_reused, s.status == "ok")
                for s in result.sources
            ),
        )

    @classmethod
    def failed(cls, host: str, seconds: float, finished: datetime | None = None) -> RunMetrics:
        """A run of *host* that raised before it had a result (lock, connection...)."""
        return cls(host, "failed", finished or datetime.now(UTC), float(seconds))


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_textfile(text: str) -> list[Sample]:
    """Given Prometheus text exposition, return its samples (comments and lines
    that do not parse are skipped)."""
    out: list[Sample] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        labels: list[tuple[str, str]] = []
        raw = m.group("labels") or ""
        pos = 0
        ok = True
        while pos < len(raw):
            lm = _LABEL_RE.match(raw, pos)
            if not lm:
                ok = False
                break
            labels.append((lm.group(1), _unescape(lm.group(2))))
            pos = lm.end()
        try:
            value = float(m.group("value"))
        except ValueError:
            ok = False
        if ok:
            out.append(Sample(m.group("name"), tuple(labels), value))
    return out


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render_textfile(samples: Iterable[Sample]) -> str:
    """Given samples of the known metrics, return the textfile (HELP, TYPE, sorted)."""
    by_name: dict[str, list[Sample]] = {}
    for s in samples:
        by_name.setdefault(s.name, []).append(s)
    lines: list[str] = []
    for name in sorted(by_name):
        typ, help_text = METRICS.get(name, ("gauge", ""))
        if help_text:
            lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {typ}")
        for s in sorted(by_name[name], key=lambda s: s.labels):
            lbl = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels)
            lines.append(f"{name}{{{lbl}}} {_fmt(s.value)}" if lbl else f"{name} {_fmt(s.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _as_metrics(item: RunMetrics | RunResult) -> RunMetrics:
    if isinstance(item, RunMetrics):
        return item
    if isinstance(item, RunResult):
        return RunMetrics.from_result(item)
    raise TypeError(f"write_textfile: expected RunMetrics or a run result, got {type(item)}")


def _samples_for(run: RunMetrics, old: list[Sample]) -> list[Sample]:
    host = (("host", run.host),)
    last_success = 0.0
    if run.status == "complete":
        last_success = run.finished.timestamp()
    else:
        for s in old:
            if s.name == "vkbackup_last_success_timestamp_seconds" and s.label("host") == run.host:
                last_success = s.value
    out = [
        Sample("vkbackup_last_success_timestamp_seconds", host, last_success),
        Sample("vkbackup_last_run_timestamp_seconds", host, run.finished.timestamp()),
        Sample("vkbackup_last_status", host, float(STATUS_VALUE[run.status])),
        Sample("vkbackup_duration_seconds", host, round(run.seconds, 3)),
        Sample("vkbackup_bytes_new", host, float(run.bytes_new)),
        Sample("vkbackup_bytes_reused", host, float(run.bytes_reused)),
    ]
    sources = list(run.sources)
    if not sources and run.status == "failed":
        # A run that failed before any source ran: every source known from the
        # last run is reported as not saved, so an alert on source_ok fires.
        known = sorted(
            {
                name
                for s in old
                if s.name == "vkbackup_source_ok"
                and s.label("host") == run.host
                and (name := s.label("source")) is not None
            }
        )
        sources = [SourceMetrics(name, 0, False) for name in known]
    for src in sources:
        labels = (("host", run.host), ("source", src.name))
        out.append(Sample("vkbackup_source_bytes", labels, float(src.bytes)))
        out.append(Sample("vkbackup_source_ok", labels, 1.0 if src.ok else 0.0))
    return out


def _age_samples(ages: HostAges) -> list[Sample]:
    host = (("host", ages.host),)
    out = []
    for name, age in (
        ("vkbackup_last_snapshot_age_seconds", ages.snapshot_age_seconds),
        ("vkbackup_last_verify_age_seconds", ages.verify_age_seconds),
        ("vkbackup_last_drill_age_seconds", ages.drill_age_seconds),
    ):
        value = math.inf if age is None else float(max(0, int(age)))
        out.append(Sample(name, host, value))
    return out


def write_textfile(
    path: Path, results: Iterable[RunMetrics | RunResult], ages: Iterable[HostAges] = ()
) -> list[str]:
    """Given the textfile path, this run's snapshot results (RunResult or
    RunMetrics) and hosts' ages, rewrite the file atomically: the run series of
    the hosts in *results* and the ages of the hosts in *ages* are replaced,
    everything else kept. Return the warnings; never raise."""
    path = Path(path)
    try:
        runs = [_as_metrics(r) for r in results]
        aged = list(ages)
        old: list[Sample] = []
        with contextlib.suppress(FileNotFoundError):
            old = parse_textfile(path.read_text(encoding="utf-8", errors="replace"))
        run_hosts = {r.host for r in runs}
        age_hosts = {a.host for a in aged}
        keep = [
            s
            for s in old
            if (s.name in RUN_METRICS and s.label("host") not in run_hosts)
            or (s.name in AGE_METRICS and s.label("host") not in age_hosts)
        ]
        new: list[Sample] = []
        for run in runs:
            new.extend(_samples_for(run, old))
        for a in aged:
            new.extend(_age_samples(a))
        return write_samples(path, keep + new)
    except Exception as e:  # monitoring never fails a backup
        msg = f"{path}: could not write the Prometheus textfile: {type(e).__name__}: {e}"
        log.warning("%s", msg)
        return [msg]


def write_samples(path: Path, samples: Iterable[Sample]) -> list[str]:
    """Replace the textfile at *path* with *samples*, atomically (node_exporter
    never reads half a file). Return the warnings; never raise."""
    tmp: Path | None = None
    try:
        text = render_textfile(samples)
        # node_exporter reads only *.prom: the temporary name must not end so.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
        return []
    except Exception as e:  # monitoring never fails a backup
        msg = f"{path}: could not write the Prometheus textfile: {type(e).__name__}: {e}"
        log.warning("%s", msg)
        return [msg]
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


# -- the calls around each host's run ------------------------------------------------


def run_summary(result: RunResult) -> dict[str, Any]:
    """Given a run's result, return the summary sent with pings (no secrets:
    ids, status, sizes, source names)."""
    return {
        "id": result.id,
        "status": result.status,
        "seconds": round(result.seconds, 1),
        "bytes_new": result.bytes_new,
        "bytes_reused": result.bytes_reused,
        "sources_ok": sum(1 for s in result.sources if s.status == "ok"),
        "sources_failed": ",".join(s.name for s in result.sources if s.status != "ok"),
    }


def report_result(
    cfg: MonitoringConfig, result: RunResult, ages: Sequence[HostAges] = ()
) -> list[str]:
    """Given the monitoring config and one host's snapshot result (and the
    host's ages, measured after it), ping and write the textfile. Return the
    warnings; never raise."""
    summary = run_summary(result)
    if result.status == "complete":
        warnings = notify(cfg, "success", host=result.host, summary=summary)
    else:
        failed = "; ".join(
            f"{s.name}: {s.error or s.status}" for s in result.sources if s.status != "ok"
        )
        reason = f"snapshot {result.id} of {result.host} is {result.status}: {failed}"
        warnings = notify(cfg, "failure", host=result.host, summary=summary, reason=reason)
    if cfg.textfile is not None:
        warnings += write_textfile(cfg.textfile, [result], ages)
    return warnings


def report_job(
    cfg: MonitoringConfig, outcomes: Sequence[JobOutcome], ages: Sequence[HostAges] = ()
) -> list[str]:
    """Given the monitoring config and each host's outcome of a job other than
    snapshot (and the hosts' ages, measured after it), ping "success" or
    "failure" for each, then write the ages to the textfile once. Return the
    warnings; never raise."""
    warnings: list[str] = []
    for o in outcomes:
        if o.ok:
            warnings += notify(cfg, "success", host=o.host, summary=o.summary, job=o.job)
        else:
            reason = o.reason or f"{o.job} of {o.host} failed"
            warnings += notify(
                cfg, "failure", host=o.host, summary=o.summary, reason=reason, job=o.job
            )
    if cfg.textfile is not None and ages:
        warnings += write_textfile(cfg.textfile, [], ages)
    return warnings


def report_error(
    cfg: MonitoringConfig,
    host: str,
    error: BaseException | str,
    seconds: float,
    *,
    job: str = SNAPSHOT_JOB,
    ages: Sequence[HostAges] = (),
) -> list[str]:
    """Given a run of *host*'s *job* that raised, ping "failure" with the error;
    for a snapshot, record a failed run in the textfile. Write *ages* there too.
    Return the warnings; never raise."""
    text = str(error) or type(error).__name__
    reason = f"{job} of {host} failed: {text}"
    warnings = notify(
        cfg, "failure", host=host, summary={"status": "failed"}, reason=reason, job=job
    )
    if cfg.textfile is not None:
        runs = [RunMetrics.failed(host, seconds)] if job == SNAPSHOT_JOB else []
        if runs or ages:
            warnings += write_textfile(cfg.textfile, runs, ages)
    return warnings
