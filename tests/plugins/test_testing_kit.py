"""The test kit drives a job through the orchestrator with public helpers only."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker, add_mapping
from aiimpl_core.types import RunPhase


@pytest.fixture
def tracker() -> FakeTracker:
    return FakeTracker()


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    return [tracker.plugin, runner.plugin]


def test_poll_once_dispatches_and_reconcile_links_and_ends_the_run(
    app: Any, tracker: FakeTracker, runner: FakeRunner
) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")

    report = orchestrator.poll_once(reconcile=False)

    assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
    [job] = orchestrator.jobs("ENG-1")
    assert (job.status, job.backend) == ("dispatched", "github-actions")
    runner.set_state(job.id, RunPhase.RUNNING)
    assert orchestrator.reconcile().polled == {"github-actions": 1}
    assert orchestrator.jobs("ENG-1")[0].status == "running"
    runner.set_state(job.id, RunPhase.FAILED, log_excerpt="it broke")
    orchestrator.reconcile()
    assert orchestrator.jobs("ENG-1")[0].status == "failed"


def test_dispatch_issue_dispatches_one_issue(app: Any, tracker: FakeTracker, runner: FakeRunner) -> None:
    add_mapping("ENG")
    tracker.add("ENG-2")
    tracker.add("ENG-3")

    report = orchestrator.dispatch_issue("ENG-3")

    assert [d.issue_key for d in report.dispatched] == ["ENG-3"]
    assert [j.issue_key for j in orchestrator.jobs()] == ["ENG-3"]


def test_reconcile_takes_a_clock(app: Any, tracker: FakeTracker, runner: FakeRunner) -> None:
    add_mapping("ENG")
    tracker.add("ENG-4")
    orchestrator.poll_once(reconcile=False)
    [job] = orchestrator.jobs("ENG-4")
    runner.runs.clear()  # the backend knows no run for the job any more

    assert orchestrator.reconcile().ended == 0
    orchestrator.reconcile(job.dispatched_at + timedelta(hours=3))
    assert (orchestrator.jobs("ENG-4")[0].status, orchestrator.jobs("ENG-4")[0].timeout_reason) == (
        "timed_out", "machine_timeout")


def test_fresh_shows_what_another_thread_committed(
    app: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker, runner: FakeRunner
) -> None:
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    add_mapping("ENG")
    row = db.session.scalar(db.select(Mapping))
    assert row.paused is False

    def pause() -> None:
        with app.app_context():
            db.session.execute(db.update(Mapping).values(paused=True))
            db.session.commit()
            db.session.remove()

    thread = threading.Thread(target=pause)
    thread.start()
    thread.join()
    assert row.paused is False  # the test's session still has the row as it read it

    orchestrator.fresh()

    assert row.paused is True
    [listed] = client.get("/api/mappings", headers=admin_headers).get_json()
    assert listed["paused"] is True


def test_each_released_together_answers_in_the_order_of_its_calls() -> None:
    """Every thread has its resource before any call starts; the answers keep the calls' order
    whatever order the calls finish in."""
    import time
    from contextlib import contextmanager

    prepared: list[int] = []

    @contextmanager
    def resource() -> Any:
        prepared.append(1)
        yield len(prepared)

    def call(n: int) -> Any:
        def answer(_resource: int) -> tuple[int, int]:
            seen = len(prepared)
            time.sleep(0.05 * (3 - n))  # the last call finishes first
            return n, seen
        return answer

    answers = orchestrator.each_released_together(resource, [call(n) for n in range(3)])
    assert answers == [(0, 3), (1, 3), (2, 3)]
    assert orchestrator.each_released_together(resource, []) == [] and len(prepared) == 3


def test_released_together_fails_on_a_call_that_raised_or_still_runs() -> None:
    from contextlib import nullcontext

    def fails(_: None) -> None:
        raise ValueError("from a thread")

    with pytest.raises(ValueError, match="from a thread"):
        orchestrator.each_released_together(nullcontext, [lambda _: 1, fails])
    gate = threading.Event()
    try:
        with pytest.raises(AssertionError, match="1 of 2 calls still running after 0.2 s"):
            orchestrator.each_released_together(nullcontext, [lambda _: 1, lambda _: gate.wait(10)],
                                                timeout=0.2)
    finally:
        gate.set()


def test_each_at_once_runs_each_call_in_a_session_of_its_own(app: Any, client: Any) -> None:
    from aiimpl_core.extensions import db

    answers = orchestrator.each_at_once(app, [lambda c: (c.get("/healthz").status_code, db.session())] * 2)
    assert [code for code, _ in answers] == [200, 200]
    first, second = (session for _, session in answers)  # held here, so neither id is reused
    assert first is not second and db.session() not in (first, second)


def test_first_holds_second_waits_orders_two_writers_of_one_row(app: Any, monkeypatch: Any) -> None:
    """The first worker writes the row and is held before its commit; the second is seen waiting to
    write it, and writes after the first committed: its change is the one left."""
    import types

    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    add_mapping("ENG")
    db.session.commit()
    points = types.SimpleNamespace(written=lambda: None)
    pause = orchestrator.Pause(monkeypatch, points, "written", thread="first")

    def write(title: str) -> str:
        db.session.execute(db.update(Mapping).values(default_branch=title))
        points.written()  # held here in the first worker, its write uncommitted
        db.session.commit()
        return title

    answers = orchestrator.first_holds_second_waits(
        app, pause, orchestrator.Worker(app, "first", lambda: write("first")),
        lambda: orchestrator.Worker(app, "second", lambda: write("second")),
    )
    assert answers == ("first", "second")
    orchestrator.fresh()
    assert db.session.scalar(db.select(Mapping.default_branch)) == "second"
