"""`HoldLocks` (issue 18 review): two docker-volume sources of one run that hold the
same container never stream at the same time; sources that share none run
together; a cancelled run stops waiting."""

from __future__ import annotations

import threading

import pytest

from vkbackup.actions.snapshot import HoldLocks
from vkbackup.errors import SnapshotError


def test_sources_sharing_a_container_take_turns_and_others_do_not_wait() -> None:
    holds = HoldLocks(threading.Event())
    order: list[str] = []
    b_in = threading.Event()

    def b() -> None:
        with holds.holding(["redis", "app"]):  # shares "app" with the first
            order.append("b")
            b_in.set()

    with holds.holding(["app", "sidekiq"]):
        t = threading.Thread(target=b)
        t.start()
        with holds.holding(["janus"]):  # shares nothing: enters at once
            order.append("other")
        assert not b_in.wait(0.5)  # still waiting for "app"
        order.append("a done")
    t.join(10)
    assert order == ["other", "a done", "b"]


def test_the_same_name_twice_is_one_lock_and_nothing_is_held_after() -> None:
    holds = HoldLocks(threading.Event())
    with holds.holding(["x", "x"]):
        pass
    with holds.holding(["x"]):  # released: taken again at once
        pass


def test_a_cancelled_run_stops_waiting() -> None:
    cancel = threading.Event()
    holds = HoldLocks(cancel)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            with holds.holding(["app"]):
                pass
        except SnapshotError as e:
            errors.append(e)

    with holds.holding(["app"]):
        t = threading.Thread(target=waiter)
        t.start()
        cancel.set()
        t.join(10)
    assert not t.is_alive()
    assert [str(e) for e in errors] == ["cancelled"]
    with pytest.raises(SnapshotError), holds.holding(["app"]), holds.holding(["app"]):
        pass  # and no new wait starts once cancelled
