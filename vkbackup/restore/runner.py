"""The step runner: dispatch, resume state and concurrency.

Dispatch is a table from a step's parameter class to its handler. Handlers of
data steps live in the source modules (files, images, volumes, databases);
the ones here act on the host as a whole: preflight, Docker, compose starts,
health and the DNS checklist.

Resume: each resumable step is recorded on the target when it is done
(`target.save_state`), and a re-run skips what is recorded, so a restore cut
by a failure or Ctrl-C continues where it stopped, and a re-run after
success changes nothing. The state is written right after preflight too:
from then on the target's contents are this restore's own, and a re-run may
resume over them without --force.

Concurrency: the plan is a graph, not a queue. Each step lists the steps it
waits for (`Step.after`, decided by `vkbackup.restore.plan`), and the runner
starts, in plan order, every step whose waits are done, up to STEP_PARALLEL at
a time, each worker thread on its own SSH connection (opened on its first step,
reused after). So images load while the rest of the host's packages install,
and the database's container starts as soon as its image and files are in.
Preflight runs alone first, on the main connection, which also writes the
resume state. Each result is recorded the moment its step ends, so a kill
loses no finished step. After a failure nothing new starts (the running ones
finish: their data is sound) and the restore stops. Ctrl-C closes every
connection, which ends the remote commands.

Three at a time: on two cores a third stream costs the others little (most
steps wait on the network, dpkg or dockerd), and more would only add
connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from vkbackup.errors import RestoreError, VkError
from vkbackup.logs import get_logger
from vkbackup.restore import target
from vkbackup.restore.plan import Plan
from vkbackup.restore.steps import (
    ComposeName,
    DatabaseParams,
    DnsParams,
    EnsureDockerParams,
    FilesParams,
    HealthParams,
    HostFilesParams,
    HostFirewallParams,
    HostPackagesParams,
    HostServicesParams,
    HostUsersParams,
    HttpCheckParams,
    ImageParams,
    PitrParams,
    PreflightParams,
    StartParams,
    Step,
    StepContext,
    StepParams,
    VolumeParams,
)
from vkbackup.sources import docker_image, docker_volume, files, host, postgres
from vkbackup.transport.base import Transport, pipeline_argv

log = get_logger("restore")

STEP_PARALLEL = 3  # steps running at a time, each on its own connection
HEALTH_POLL_SECONDS = 0.5


@dataclass
class StepResult:
    id: str
    kind: str
    title: str
    status: str  # done | already-done | failed | skipped
    seconds: float = 0.0
    detail: str = ""
    started: float = 0.0  # seconds after the restore's first step started


@dataclass
class Run:
    """What the host-wide steps need beyond their own parameters."""

    plan: Plan
    target_address: str
    force: bool = False
    resuming: bool = False  # the target holds this snapshot's resume state
    dns: list[str] = field(default_factory=list)  # filled by the dns step
    # a NEW connection to the target (the firewall step confirms it can still get in)
    reconnect: Callable[[], Transport] | None = None


Handler = Callable[[StepContext, Step, Run], str]


# -- host-wide steps ---------------------------------------------------------------


def preflight(ctx: StepContext, step: Step, run: Run) -> str:
    """Refuse a target that already runs the snapshot's containers, has data in its
    volumes or has its files, unless --force or resuming our own restore."""
    names = set(ctx.t.run(target.LIST_CONTAINERS).stdout.decode().split())
    problems: list[str] = []
    expected = {c for h in run.plan.params_of(HealthParams) for c in h.containers}
    clash = sorted(names & expected)
    if clash:
        problems.append(f"containers already exist: {', '.join(clash[:8])}")
    for v in run.plan.params_of(VolumeParams):
        script = docker_volume.volume_state_script(v.volume)
        state = ctx.t.run(pipeline_argv(script), check=False).stdout.decode().strip()
        if state == "data":
            problems.append(f"volume {v.volume} exists and holds data")
    for f in run.plan.params_of(FilesParams):
        if f.members:
            out = ctx.t.run(target.existing_paths_argv(list(f.members))).stdout.decode()
            found = [p for p in out.split("\n") if p]
            if found:
                problems.append(f"files exist: {', '.join(found[:5])}")
    if problems and not (run.force or run.resuming):
        raise RestoreError(
            f"{ctx.t.name}: refusing to restore over a target that is not empty: "
            + "; ".join(problems),
            hint="is this the right host? To overwrite it on purpose, add --force",
        )
    if problems:
        return ("resuming; " if run.resuming else "--force: ") + "; ".join(problems)
    return "target is empty"


def ensure_docker(ctx: StepContext, step: Step, run: Run) -> str:
    """Docker Engine and compose on the target, in the flavour prod ran; refuse (before
    anything starts) a compose that would name prod's containers differently."""
    p = step.params
    assert isinstance(p, EnsureDockerParams)
    res = ctx.t.run(pipeline_argv(target.ENSURE_DOCKER))
    ctx.compose = target.compose_flavor(ctx.t, p.compose)
    if ctx.compose is None:
        raise RestoreError(f"{ctx.t.name}: docker compose is not available")
    flavour = "v2" if ctx.compose == ["docker", "compose"] else _standalone_flavour(ctx)
    clashes = target.compose_name_clashes(
        flavour, [(n.name, n.project, n.service) for n in p.names]
    )
    if clashes:
        raise RestoreError(
            f"{ctx.t.name}: its compose ({flavour}) would name containers differently from "
            f"prod ({p.compose}): " + ", ".join(clashes[:6]),
            hint="install the compose flavour prod ran (Compose v2: the docker compose plugin, "
            "Debian 13's docker-compose package) and run the restore again",
        )
    return f"Docker {res.stdout.decode().strip()}, compose: {' '.join(ctx.compose)} ({flavour})"


def _standalone_flavour(ctx: StepContext) -> str:
    out = ctx.t.run(["bash", "-c", target.COMPOSE_VERSIONS]).stdout.decode()
    found = target.parse_compose_versions(out)
    return "v2" if found.get("v2") == "docker-compose" else "v1"


def start(ctx: StepContext, step: Step, run: Run) -> str:
    p = step.params
    assert isinstance(p, StartParams)
    if ctx.compose is None:
        flavour = next(
            (s.params.compose for s in run.plan.steps if isinstance(s.params, EnsureDockerParams)),
            None,
        )
        ctx.compose = target.compose_flavor(ctx.t, flavour)
    if ctx.compose is None:
        raise RestoreError(f"{ctx.t.name}: docker compose is not available")
    if not p.working_dir:
        raise RestoreError(f"compose project {p.project}: no working directory")
    cfgs = target.compose_files(p.working_dir, p.config_files)
    wanted = cfgs or [f"{p.working_dir}/docker-compose.yml"]
    missing = ctx.t.run(target.missing_files_argv(wanted)).stdout.decode().strip()
    if missing:
        raise RestoreError(
            f"{ctx.t.name}: compose file missing for project {p.project}: {missing}",
            hint="add the compose files to a `files` source so the snapshot carries them",
        )
    up = target.compose_up_argv(
        ctx.compose, p.working_dir, p.project, cfgs, list(p.services), no_deps=p.no_deps
    )
    ctx.t.run(up)
    return f"{' '.join(ctx.compose)} up -d {'--no-deps ' if p.no_deps else ''}" + " ".join(
        p.services
    )


def health_problems(
    containers: Sequence[str],
    checked: Sequence[str],
    http: Sequence[HttpCheckParams],
    seen: dict[str, tuple[str, str]],
    answers: dict[str, str],
    services: Sequence[ComposeName] = (),
) -> list[str]:
    """Given the expected containers (by name; those in *services* are found by their
    compose project and service instead), those with a healthcheck, the HTTP checks
    and one parsed probe round, return what is not healthy yet, one phrase each
    (empty: all healthy)."""
    by_name = {n.name: f"{n.project}/{n.service}" for n in services}
    bad: list[str] = []
    for c in containers:
        key = by_name.get(c, c)
        running, hstatus = seen.get(key, ("missing", "none"))
        if running != "true":
            bad.append(f"{c} not running")
        elif c in checked and hstatus != "healthy":
            bad.append(f"{c} {hstatus}")
    for h in http:
        line = answers.get(h.url, "")
        if target.http_status(line) != h.expect_status:
            bad.append(f"{h.name} ({h.url}): {line or 'no answer'}")
    return bad


def health(ctx: StepContext, step: Step, run: Run) -> str:
    p = step.params
    assert isinstance(p, HealthParams)
    deadline = time.monotonic() + p.timeout
    cas = {h.url: h.ca for h in p.http if h.ca}
    argv = target.health_probe_argv(list(p.containers), [h.url for h in p.http], cas)
    while True:
        res = ctx.t.run(argv, check=False)
        seen, answers = target.parse_health_probe(res.stdout.decode(errors="replace"))
        bad = health_problems(p.containers, p.healthchecked, p.http, seen, answers, p.services)
        if not bad:
            ctx.verified += [f"container {c} running" for c in p.containers]
            ctx.verified += [f"{h.name}: {h.url} answered" for h in p.http]
            return f"{len(p.containers)} containers running, {len(p.http)} HTTP checks passed"
        if time.monotonic() > deadline:
            raise RestoreError(
                f"{ctx.t.name}: not healthy after {p.timeout:.0f}s: " + "; ".join(bad),
                hint="docker logs <container> on the target shows why",
            )
        time.sleep(HEALTH_POLL_SECONDS)


def dns(ctx: StepContext, step: Step, run: Run) -> str:
    p = step.params
    assert isinstance(p, DnsParams)
    records = [f"{r}.{p.zone}" if p.zone and not r.endswith(p.zone) else r for r in p.records]
    if not records:
        text = ctx.t.run(target.CADDYFILE_ARGV).stdout.decode(errors="replace")
        records = target.caddy_sites(text)
    run.dns[:] = [f"A  {r}  ->  {run.target_address}" for r in records]
    return f"{len(records)} records to point at {run.target_address}"


def _recover(ctx: StepContext, step: Step) -> str:
    from vkbackup.pitr.recover import recover  # it imports the plan: not at the top

    return recover(ctx, step)


def _reconnect(run: Run) -> Callable[[], Transport]:
    if run.reconnect is None:
        raise RestoreError("the firewall step needs a way to open a new connection")
    return run.reconnect


HANDLERS: dict[type[StepParams], Handler] = {
    PreflightParams: preflight,
    EnsureDockerParams: ensure_docker,
    FilesParams: lambda ctx, step, _run: files.restore_files(ctx, step),
    ImageParams: lambda ctx, step, _run: docker_image.load_images(ctx, step),
    VolumeParams: lambda ctx, step, _run: docker_volume.restore_volume(ctx, step),
    DatabaseParams: lambda ctx, step, _run: postgres.restore_database(ctx, step),
    PitrParams: lambda ctx, step, _run: _recover(ctx, step),
    HostPackagesParams: lambda ctx, step, _run: host.restore_packages(ctx, step),
    HostUsersParams: lambda ctx, step, _run: host.restore_users(ctx, step),
    HostFilesParams: lambda ctx, step, _run: host.restore_host_files(ctx, step),
    HostServicesParams: lambda ctx, step, _run: host.restore_services(ctx, step),
    HostFirewallParams: lambda ctx, step, run: host.restore_firewall(ctx, step, _reconnect(run)),
    StartParams: start,
    HealthParams: health,
    DnsParams: dns,
}


# -- running -----------------------------------------------------------------------


RunOne = Callable[[StepContext, Step], StepResult]
Record = Callable[[Step, StepResult], None]


def ready(step: Step, done: set[str], planned: set[str]) -> bool:
    """True when every step *step* waits for is done or not in the plan."""
    return all(a in done or a not in planned for a in step.after)


def check_order(steps: Sequence[Step]) -> None:
    """Refuse a plan where a step waits for itself or for a later step: the plan's
    order must be one the steps can run in (so no cycle can hang the runner)."""
    seen: set[str] = set()
    planned = {s.id for s in steps}
    for step in steps:
        late = [a for a in step.after if a in planned and a not in seen]
        if late:
            raise RestoreError(f"restore plan: step {step.id} waits for a later step: {late[0]}")
        seen.add(step.id)


def run_graph(
    steps: list[Step],
    ctx: StepContext,
    connect: Callable[[], Any],
    run_one: RunOne,
    record: Record,
    errors: dict[str, VkError],
    done: set[str],
    t0: float | None = None,
) -> list[tuple[Step, StepResult]]:
    """Run *steps* (in plan order, each after the steps it waits for; those in
    *done* are already done), STEP_PARALLEL at a time. Each worker thread has its
    own connection from *connect*, opened on its first step and reused. Each
    result is *record*ed as soon as its step ends. A connection that cannot be
    made is a failed step. After a failure nothing new starts; the running steps
    finish (their data is sound) and the steps never started are not in the
    result. On any exception here (Ctrl-C), every open connection is closed, which
    ends the remote commands, and nothing new starts. Each result's `started` is
    in seconds after *t0* (time.monotonic; default: now)."""
    check_order(steps)
    planned = {s.id for s in steps} | done
    local = threading.local()
    transports: list[Transport] = []
    lock = threading.Lock()
    stop = threading.Event()
    start = time.monotonic() if t0 is None else t0

    def work(step: Step) -> StepResult:
        at = time.monotonic() - start
        if stop.is_set():
            return StepResult(step.id, step.kind, step.title, "skipped", 0.0, "not started")
        t: Transport | None = getattr(local, "t", None)
        if t is None:
            try:
                t = connect()
            except VkError as e:
                errors[step.id] = e
                return StepResult(step.id, step.kind, step.title, "failed", 0.0, str(e), at)
            with lock:
                transports.append(t)
                if stop.is_set():
                    t.close()
                    return StepResult(step.id, step.kind, step.title, "skipped", 0.0, "not started")
            local.t = t
        c = ctx.on(t)
        res = run_one(c, step)
        if c.compose is not None and ctx.compose is None:
            ctx.compose = c.compose  # found by ensure-docker: every later step knows it
        res.started = at
        return res

    pool = ThreadPoolExecutor(max_workers=STEP_PARALLEL)
    out: list[tuple[Step, StepResult]] = []
    waiting = list(steps)
    running: dict[Future[StepResult], Step] = {}
    failed = False
    try:
        while waiting or running:
            if not failed:
                for step in list(waiting):
                    if len(running) >= STEP_PARALLEL:
                        break
                    if ready(step, done, planned):
                        waiting.remove(step)
                        running[pool.submit(work, step)] = step
            if not running:
                if failed:
                    break
                stuck = waiting[0]
                raise RestoreError(
                    f"restore plan: step {stuck.id} waits for a step that never ends: "
                    + ", ".join(stuck.after)
                )
            finished, _ = wait(set(running), return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: steps.index(running[f])):
                step = running.pop(f)
                res = f.result()
                if res.status == "skipped":
                    continue
                record(step, res)
                out.append((step, res))
                if res.status == "done":
                    done.add(step.id)
                else:
                    failed = True
                    stop.set()
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for t in transports:
                t.close()
        raise
    pool.shutdown(wait=True)
    with lock:
        for t in transports:
            t.close()
    return out


@dataclass
class Failure:
    step: Step
    result: StepResult
    error: VkError


def run_plan(
    run: Run,
    ctx: StepContext,
    connect: Callable[[], Transport],
    results: list[StepResult],
    now: Callable[[], str],
) -> Failure | None:
    """Run *run.plan* on the target *ctx* is connected to, resuming from its state
    there; append each step's result to *results* as it ends. Return the first
    failure (the steps running beside it finished; nothing new started), or None
    when every step passed. *ctx*'s own connection keeps the resume state; the
    steps run on connections of their own."""
    snapshot_id = ctx.snapshot_id
    state = target.load_state(ctx.t, snapshot_id)
    recorded: dict[str, Any] = dict((state or {}).get("done") or {})
    run.resuming = state is not None  # our own restore of this snapshot was under way
    if run.reconnect is None:
        run.reconnect = connect
    errors: dict[str, VkError] = {}  # step id -> why it failed
    save = threading.Lock()

    def run_one(c: StepContext, step: Step) -> StepResult:
        s0 = time.monotonic()
        log.info("step %s: %s", step.id, step.title)
        try:
            detail = HANDLERS[type(step.params)](c, step, run)
        except VkError as e:
            errors[step.id] = e
            return StepResult(
                step.id, step.kind, step.title, "failed", time.monotonic() - s0, str(e)
            )
        return StepResult(step.id, step.kind, step.title, "done", time.monotonic() - s0, detail)

    def record(step: Step, res: StepResult) -> None:
        nonlocal state
        results.append(res)
        if res.status != "done":
            return
        with save:
            if step.resumable:
                recorded[step.id] = {"at": now(), "seconds": round(res.seconds, 2)}
            if step.resumable or (step.kind == "preflight" and state is None):
                target.save_state(ctx.t, snapshot_id, {"snapshot": snapshot_id, "done": recorded})
                state = {"done": recorded}

    t0 = time.monotonic()
    done: set[str] = set()
    todo: list[Step] = []
    for step in run.plan.steps:
        if step.resumable and step.id in recorded:
            results.append(StepResult(step.id, step.kind, step.title, "already-done", 0.0))
            done.add(step.id)
        else:
            todo.append(step)
    # preflight alone first: it decides whether the target may be written at all
    first = [s for s in todo if s.kind == "preflight"]
    for step in first:
        res = run_one(ctx, step)
        record(step, res)
        if res.status != "done":
            return Failure(step, res, errors[step.id])
        done.add(step.id)
    rest = [s for s in todo if s.kind != "preflight"]
    for step, res in run_graph(rest, ctx, connect, run_one, record, errors, done, t0):
        if res.status == "failed":
            return Failure(step, res, errors[step.id])
    return None
