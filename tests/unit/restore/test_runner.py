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
