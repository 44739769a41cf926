"""Image and volume steps run two at a time: each result is recorded as its step ends,
a failure keeps the steps not yet started from starting, a connection that cannot be
made is a failed step (not an exception), and every connection is closed."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from vkbackup.errors import RestoreError, TransportError, VkError
from vkbackup.restore.runner import StepResult, run_concurrently
from vkbackup.restore.steps import Step, VolumeParams


class Conn:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Context:
    """Stands in for StepContext: a step's context on another connection."""

    def on(self, t: Any) -> Any:
        return t


def steps(*names: str) -> list[Step]:
    return [Step(f"volume:{n}", f"fill {n}", VolumeParams(volume=n)) for n in names]


def run(
    plan: list[Step], work: Any, connect: Any = None
) -> tuple[list[tuple[Step, StepResult]], list[str], dict[str, VkError], list[Conn]]:
    conns: list[Conn] = []
    recorded: list[str] = []
    errors: dict[str, VkError] = {}

    def make() -> Conn:
        c = Conn()
        conns.append(c)
        return c

    def run_one(_r: Any, step: Step) -> StepResult:
        res: StepResult = work(step, errors)
        return res

    out = run_concurrently(
        plan,
        Context(),  # type: ignore[arg-type]
        cast(Any, connect or make),
        run_one,
        lambda step, res: recorded.append(f"{step.id}={res.status}"),
        errors,
    )
    return out, recorded, errors, conns


def test_results_recorded_as_they_end_returned_in_plan_order() -> None:
    def work(step: Step, _errors: Any) -> StepResult:
        time.sleep(0.3 if step.id == "volume:slow" else 0.01)
        return StepResult(step.id, step.kind, step.title, "done", 0.0)

    out, recorded, _, conns = run(steps("slow", "a", "b"), work)
    assert [s.id for s, _ in out] == ["volume:slow", "volume:a", "volume:b"]
    assert recorded[-1] == "volume:slow=done"  # a and b were saved before it ended
    assert sorted(recorded) == ["volume:a=done", "volume:b=done", "volume:slow=done"]
    assert len(conns) == 3 and all(c.closed for c in conns)


def test_a_failure_keeps_later_steps_from_starting() -> None:
    gate = threading.Event()
    started = threading.Event()

    def work(step: Step, errors: dict[str, VkError]) -> StepResult:
        if step.id == "volume:bad":
            started.wait(5)  # fail while the other step is running
            errors[step.id] = RestoreError("volume bad: hostile member")
            gate.set()
            return StepResult(step.id, step.kind, step.title, "failed", 0.0, "hostile")
        started.set()
        gate.wait(5)  # the running one finishes after the failure
        time.sleep(0.1)
        return StepResult(step.id, step.kind, step.title, "done", 0.0)

    out, _, errors, conns = run(steps("bad", "running", "later"), work)
    status = {s.id: r.status for s, r in out}
    assert status == {"volume:bad": "failed", "volume:running": "done", "volume:later": "skipped"}
    assert "hostile member" in str(errors["volume:bad"])
    assert all(c.closed for c in conns)


def test_a_connection_that_cannot_be_made_is_a_failed_step() -> None:
    def refuse() -> Conn:
        raise TransportError("fresh: connection refused (port 22)")

    def work(step: Step, _errors: Any) -> StepResult:
        raise AssertionError("no step runs without a connection")

    out, recorded, errors, _ = run(steps("a", "b"), work, connect=refuse)
    assert out[0][1].status == "failed" and "connection refused" in out[0][1].detail
    assert "connection refused" in str(errors["volume:a"])
    assert len(recorded) == 2


# -- run_plan: resume state on a real (local) target ---------------------------------


def test_run_plan_resumes_from_the_state_it_saved_on_the_target(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A failure stops the plan after its group and leaves the finished steps recorded
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
    steps = [
        Step("preflight", "check", PreflightParams()),
        Step("files:a", "files", FilesParams(members=("/a",))),
        Step("volume:b", "fill b", VolumeParams(volume="b")),
        Step("volume:c", "fill c", VolumeParams(volume="c")),
        Step("start:x", "start x", StartParams(project="x", services=("x",))),
        Step("health", "health", HealthParams()),
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
    # volume:b and volume:c ran together: recorded in the order they ended
    done = [r.id for r in results if r.status == "done"]
    assert done[:2] == ["preflight", "files:a"] and sorted(done[2:]) == ["volume:b", "volume:c"]
    assert "health" not in ran  # nothing after the failed step's group
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
