"""The runner walks the plan as a graph: a step starts once the steps it waits for
are done, at most STEP_PARALLEL at a time, each worker on its own connection
(reused for its next steps, all closed at the end). Each result is recorded as
its step ends; after a failure the running steps finish and nothing new starts;
a connection that cannot be made is a failed step (not an exception)."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from vkbackup.errors import RestoreError, TransportError, VkError
from vkbackup.restore import runner
from vkbackup.restore.runner import StepResult, check_order, run_graph
from vkbackup.restore.steps import Step, VolumeParams


class Conn:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Context:
    """Stands in for StepContext: a step's context on another connection."""

    compose = None

    def on(self, t: Any) -> Any:
        return self


def step(name: str, *after: str) -> Step:
    return Step(name, f"fill {name}", VolumeParams(volume=name), after=after)


def run(
    plan: list[Step], work: Any, connect: Any = None, done: set[str] | None = None
) -> tuple[list[tuple[Step, StepResult]], list[str], dict[str, VkError], list[Conn]]:
    conns: list[Conn] = []
    recorded: list[str] = []
    errors: dict[str, VkError] = {}
    lock = threading.Lock()

    def make() -> Conn:
        c = Conn()
        with lock:
            conns.append(c)
        return c

    def run_one(_r: Any, s: Step) -> StepResult:
        res: StepResult = work(s, errors)
        return res

    out = run_graph(
        plan,
        Context(),  # type: ignore[arg-type]
        cast(Any, connect or make),
        run_one,
        lambda s, res: recorded.append(f"{s.id}={res.status}"),
        errors,
        set() if done is None else done,
    )
    return out, recorded, errors, conns


class Clock:
    """Records when each step started and ended, and how many ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self.running = 0
        self.most = 0

    def work(self, seconds: dict[str, float]) -> Any:
        def go(s: Step, _errors: Any) -> StepResult:
            with self.lock:
                self.start[s.id] = time.monotonic()
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(seconds.get(s.id, 0.02))
            with self.lock:
                self.running -= 1
                self.end[s.id] = time.monotonic()
            return StepResult(s.id, s.kind, s.title, "done", 0.0)

        return go


def test_a_step_starts_only_after_the_steps_it_waits_for_and_others_overlap() -> None:
    clock = Clock()
    plan = [
        step("docker"),
        step("packages", "docker"),  # long, beside the data
        step("image", "docker"),
        step("volume", "docker"),
        step("start-db", "image", "volume"),
        step("database", "start-db"),
        step("firewall", "docker", "packages", "image", "volume", "start-db", "database"),
    ]
    out, recorded, _, conns = run(
        plan, clock.work({"packages": 0.4, "image": 0.15, "volume": 0.05})
    )
    for s in plan:
        for a in s.after:
            assert clock.start[s.id] >= clock.end[a], f"{s.id} started before {a} ended"
    # the database went in while the packages were still installing
    assert clock.end["database"] < clock.end["packages"]
    assert clock.most == runner.STEP_PARALLEL
    assert recorded[-1] == "firewall=done" and len(recorded) == len(plan)
    assert {s.id for s, _ in out} == {s.id for s in plan}
    # one connection per worker, reused, every one closed
    assert 1 <= len(conns) <= runner.STEP_PARALLEL and all(c.closed for c in conns)


def test_results_are_recorded_as_they_end() -> None:
    clock = Clock()
    _, recorded, _, _ = run([step("slow"), step("a"), step("b")], clock.work({"slow": 0.3}))
    assert recorded[-1] == "slow=done"  # a and b were saved before it ended
    assert sorted(recorded) == ["a=done", "b=done", "slow=done"]


def test_a_step_waiting_for_one_outside_the_plan_or_already_done_runs() -> None:
    clock = Clock()
    plan = [step("start", "database", "cut-by-only")]
    out, _, _, _ = run(plan, clock.work({}), done={"database"})
    assert [(s.id, r.status) for s, r in out] == [("start", "done")]


def test_a_failure_lets_running_steps_finish_and_starts_nothing_new() -> None:
    gate = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def work(s: Step, errors: dict[str, VkError]) -> StepResult:
        ran.append(s.id)
        if s.id == "bad":
            started.wait(5)  # fail while the other step is running
            errors[s.id] = RestoreError("volume bad: hostile member")
            gate.set()
            return StepResult(s.id, s.kind, s.title, "failed", 0.0, "hostile")
        started.set()
        gate.wait(5)  # the running one finishes after the failure
        time.sleep(0.1)
        return StepResult(s.id, s.kind, s.title, "done", 0.0)

    plan = [step("bad"), step("running"), step("after-bad", "bad"), step("after-running",
            "running")]  # fmt: skip
    out, recorded, errors, conns = run(plan, work)
    status = {s.id: r.status for s, r in out}
    assert status == {"bad": "failed", "running": "done"}  # nothing else started
    assert sorted(ran) == ["bad", "running"]
    assert sorted(recorded) == ["bad=failed", "running=done"]
    assert "hostile member" in str(errors["bad"])
    assert all(c.closed for c in conns)


def test_a_connection_that_cannot_be_made_is_a_failed_step() -> None:
    def refuse() -> Conn:
        raise TransportError("fresh: connection refused (port 22)")

    def work(s: Step, _errors: Any) -> StepResult:
        raise AssertionError("no step runs without a connection")

    out, recorded, errors, _ = run([step("a"), step("b", "a")], work, connect=refuse)
    assert [(s.id, r.status) for s, r in out] == [("a", "failed")]
    assert "connection refused" in out[0][1].detail and "connection refused" in str(errors["a"])
    assert recorded == ["a=failed"]


def test_an_exception_closes_every_connection_and_propagates() -> None:
    conns: list[Conn] = []
    inside = threading.Event()

    def connect() -> Conn:
        conns.append(Conn())
        return conns[-1]

    def run_one(_c: Any, s: Step) -> StepResult:
        inside.set()
        time.sleep(0.5)  # still running when Ctrl-C reaches the main thread
        return StepResult(s.id, s.kind, s.title, "done", 0.0)

    def record(s: Step, res: StepResult) -> None:
        raise KeyboardInterrupt  # Ctrl-C as the first result comes in

    with pytest.raises(KeyboardInterrupt):
        run_graph([step("a"), step("b")], Context(), connect, run_one, record,  # type: ignore[arg-type]
                  {}, set())  # fmt: skip
    assert inside.is_set() and len(conns) == 2 and all(c.closed for c in conns)


def test_a_plan_whose_step_waits_for_a_later_step_is_refused() -> None:
    with pytest.raises(RestoreError, match="step a waits for a later step: b"):
        check_order([step("a", "b"), step("b")])
    with pytest.raises(RestoreError, match="waits for a later step: a"):
        check_order([step("a", "a")])
    check_order([step("a"), step("b", "a", "not-in-plan")])


# -- run_plan: resume state on a real (local) target ---------------------------------


def test_run_plan_resumes_from_the_state_it_saved_on_the_target(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A failure stops the plan and leaves the finished steps recorded
    on the target; the re-run skips them and finishes; a third run changes nothing.
    The state file is real (bash on this machine, in a temporary STATE_DIR)."""
    from vkbackup.progress import Progress
    from vkbackup.restore import runner, target
    from vkbackup.restore.plan import Plan
    from vkbackup.restore.steps import (
        FilesParams,
        HealthParams,
        PreflightParams,
        StartParams,
        StepContext,
    )
    from vkbackup.transport.local import LocalTransport

    monkeypatch.setattr(target, "STATE_DIR", str(tmp_path / "state"))
    ran: list[str] = []
    broken = {"start:x"}

    def handler(ctx: Any, step: Step, run: Any) -> str:
        ran.append(step.id)
        if step.id in broken:
            raise RestoreError(f"{step.id}: compose up failed")
        return "ok"

    for kind in (PreflightParams, FilesParams, VolumeParams, StartParams, HealthParams):
        monkeypatch.setitem(runner.HANDLERS, kind, handler)
    data = ("files:a", "volume:b", "volume:c")
    steps = [
        Step("preflight", "check", PreflightParams()),
        Step("files:a", "files", FilesParams(members=("/a",)), after=("preflight",)),
        Step("volume:b", "fill b", VolumeParams(volume="b"), after=("preflight",)),
        Step("volume:c", "fill c", VolumeParams(volume="c"), after=("preflight",)),
        Step("start:x", "start x", StartParams(project="x", services=("x",)), after=data),
        Step("health", "health", HealthParams(), after=(*data, "start:x")),
    ]
    plan = Plan("20261130T000000Z-abcd", "prod", "derived", steps)

    def attempt() -> tuple[Any, list[StepResult]]:
        t = LocalTransport("target")
        ctx = StepContext(t, cast(Any, None), [], plan.snapshot_id, Progress(enabled=False), [])
        results: list[StepResult] = []
        failure = runner.run_plan(
            runner.Run(plan, "203.0.113.9"), ctx, lambda: LocalTransport("target"), results,
            lambda: "2026-11-30T00:00:00Z",
        )  # fmt: skip
        return failure, results

    failure, results = attempt()
    assert failure is not None and failure.step.id == "start:x"
    assert "compose up failed" in str(failure.error)
    # the data steps ran side by side after preflight: recorded in the order they ended
    done = [r.id for r in results if r.status == "done"]
    assert done[0] == "preflight" and sorted(done[1:]) == ["files:a", "volume:b", "volume:c"]
    assert "health" not in ran  # nothing after the failed step
    state = target.load_state(LocalTransport("target"), plan.snapshot_id)
    assert state is not None and sorted(state["done"]) == ["files:a", "volume:b", "volume:c"]

    broken.clear()
    ran.clear()
    failure, results = attempt()
    assert failure is None
    status = {r.id: r.status for r in results}
    assert status == {
        "preflight": "done", "files:a": "already-done", "volume:b": "already-done",
        "volume:c": "already-done", "start:x": "done", "health": "done",
    }  # fmt: skip
    assert ran == ["preflight", "start:x", "health"]

    ran.clear()
    failure, results = attempt()
    assert failure is None
    assert ran == ["preflight", "health"]  # the checks run again; nothing else does
