"""The test kit drives a job through the orchestrator with public helpers only."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.clock import Clock
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker, add_mapping
from aiimpl_core.types import RunPhase


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


# -- a session's callbacks --------------------------------------------------------------------


def _dispatched(tracker: FakeTracker, runner: FakeRunner, key: str = "ENG-1", **mapping: Any) -> Any:
    """``key``'s job, dispatched to the fake runner; and the request the runner was handed."""
    add_mapping("ENG", **mapping)
    tracker.add(key)
    orchestrator.poll_once(reconcile=False)
    [job] = orchestrator.jobs(key)
    return job, runner.runs[job.id].request


def test_post_result_ends_the_job_with_its_comments(
    app: Any, client: Any, tracker: FakeTracker, runner: FakeRunner
) -> None:
    job, request = _dispatched(tracker, runner)
    pr_url = "https://github.com/acme/eng/pull/7"

    resp = orchestrator.post_result(client, request.env, "success", pr_url=pr_url, comments=["Added **it**"])

    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"jobId": job.id, "status": "completed", "ended": True}
    assert orchestrator.jobs("ENG-1")[0].pr_url == pr_url
    assert tracker.stage_labels("ENG-1") == {"Ready for Review"}
    assert "Added **it**" in tracker.comments["ENG-1"]
    again = orchestrator.post_result(client, request.env, "failure", error="late")
    assert (again.status_code, again.get_json()) == (409, {"error": "already_consumed"})


def test_post_result_takes_the_request_and_any_field_of_the_reference(
    app: Any, client: Any, tracker: FakeTracker, runner: FakeRunner
) -> None:
    job, request = _dispatched(tracker, runner)

    resp = orchestrator.post_result(client, request, "failure", error="git clone failed (exit 128): denied",
                                    logExcerpt="fatal: denied")

    assert resp.get_json() == {"jobId": job.id, "status": "failed", "ended": True,
                               "failureKind": "clone_failed"}
    job = orchestrator.jobs("ENG-1")[0]
    assert (job.status, job.log_excerpt) == ("failed", "fatal: denied")


def test_post_result_answers_the_reference_s_errors(
    app: Any, client: Any, tracker: FakeTracker, runner: FakeRunner
) -> None:
    _job, request = _dispatched(tracker, runner)

    assert orchestrator.post_result(client, request.env, "success").get_json() == {"error": "missing_prUrl"}
    assert orchestrator.post_result(client, request.env, "failure", phase="planning").get_json() == {
        "error": "phase_mismatch"}
    assert orchestrator.jobs("ENG-1")[0].status == "dispatched"


def test_result_request_is_the_reference_s_body_with_the_result_token() -> None:
    env = {"AIIMPL_PHASE": "implementation", "AIIMPL_RESULT_TOKEN": "result-token"}

    body, headers = orchestrator.result_request(
        env, "success", pr_url="https://github.com/acme/api/pull/3", pr_number=3,
        comments=["one", {"body": "two"}], costUsd=0.5, plan=None, review=None,
    )

    assert body == {"outcome": "success", "phase": "implementation",
                    "comments": [{"body": "one"}, {"body": "two"}],
                    "prUrl": "https://github.com/acme/api/pull/3", "prNumber": 3,
                    "costUsd": 0.5, "review": None}
    assert headers == {"Authorization": "Bearer result-token"}
    with pytest.raises(AssertionError, match="the environment holds no AIIMPL_RESULT_TOKEN"):
        orchestrator.result_request({"AIIMPL_PHASE": "planning"}, "failure")


def test_post_progress_moves_the_job_to_running(
    app: Any, client: Any, tracker: FakeTracker, runner: FakeRunner
) -> None:
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import JobStep

    job, request = _dispatched(tracker, runner)

    resp = orchestrator.post_progress(client, request.env, "clone", detail={"ref": "main"})

    assert resp.status_code == 200 and resp.get_json()["status"] == "running", resp.get_json()
    assert orchestrator.jobs("ENG-1")[0].status == "running"
    step = db.session.scalar(db.select(JobStep).where(JobStep.job_id == job.id))
    assert (step.step_id, step.type, step.status) == ("clone", "clone", "running")
    assert step.detail == {"ref": "main"}
    body, headers = orchestrator.progress_request(request.env, "clone", status="succeeded",
                                                  started_at="2026-11-29T06:00:00Z",
                                                  finished_at="2026-11-29T06:01:00Z")
    assert body == {"step": {"id": "clone", "type": "clone", "status": "succeeded",
                             "started_at": "2026-11-29T06:00:00Z", "finished_at": "2026-11-29T06:01:00Z"}}
    assert headers == {"Authorization": f"Bearer {request.env['AIIMPL_PROGRESS_TOKEN']}"}


# -- the providers' clock -----------------------------------------------------------------------


def _clock_of_polls(runner: FakeRunner, monkeypatch: Any) -> list[datetime]:
    """What the fake runner's ``context.clock()`` reads at each ``poll_runs``."""
    read: list[datetime] = []
    poll_runs = runner.backend_class.poll_runs

    def recording(self: Any, runs: Any) -> Any:
        read.append(self.context.clock())
        return poll_runs(self, runs)

    monkeypatch.setattr(runner.backend_class, "poll_runs", recording)
    return read


def test_reconcile_and_poll_once_move_the_providers_clock_for_their_call(
    app: Any, tracker: FakeTracker, runner: FakeRunner, monkeypatch: Any
) -> None:
    job, _request = _dispatched(tracker, runner)
    read = _clock_of_polls(runner, monkeypatch)
    then = job.dispatched_at + timedelta(minutes=1)

    orchestrator.reconcile(then)
    orchestrator.poll_once(then + timedelta(minutes=1))

    assert read == [then, then + timedelta(minutes=1)]
    backend = app.extensions["aiimpl"].runner("github-actions")
    assert abs(backend.context.clock() - datetime.now(UTC)) < timedelta(minutes=1), "running again after"


def test_aiimpl_clock_is_the_providers_clock_and_the_helpers_default_now(
    app: Any, aiimpl_clock: Clock, tracker: FakeTracker, runner: FakeRunner, monkeypatch: Any
) -> None:
    job, _request = _dispatched(tracker, runner)
    read = _clock_of_polls(runner, monkeypatch)
    tracker_clock = app.extensions["aiimpl"].ticketing("fake-tracker").context.clock

    aiimpl_clock.set(job.dispatched_at)
    aiimpl_clock.advance(minutes=1)

    assert tracker_clock() == aiimpl_clock.now == job.dispatched_at + timedelta(minutes=1)
    orchestrator.reconcile()
    assert read == [aiimpl_clock.now]
    assert orchestrator.jobs("ENG-1")[0].status == "dispatched"
    runner.runs.clear()  # the backend lost the run: the core's clock is the kit's too, past its lifetime
    aiimpl_clock.advance(hours=3)
    orchestrator.reconcile()
    assert (orchestrator.jobs("ENG-1")[0].status, orchestrator.jobs("ENG-1")[0].timeout_reason) == (
        "timed_out", "machine_timeout")
    with aiimpl_clock.at(datetime(2030, 1, 1, tzinfo=UTC)):
        assert tracker_clock() == datetime(2030, 1, 1, tzinfo=UTC)
    assert tracker_clock() == aiimpl_clock.now
    aiimpl_clock.reset()
    assert aiimpl_clock.now is None and abs(tracker_clock() - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_clock_of_the_test_s_own_is_moved_for_the_call(
    app: Any, tracker: FakeTracker, runner: FakeRunner, monkeypatch: Any
) -> None:
    """An app whose providers' clock is not the kit's (one the test built itself)."""
    job, _request = _dispatched(tracker, runner)
    read = _clock_of_polls(runner, monkeypatch)
    context = app.extensions["aiimpl"].context
    own = lambda: datetime(2029, 5, 1, tzinfo=UTC)  # noqa: E731
    monkeypatch.setattr(context, "clock", own)
    then = job.dispatched_at + timedelta(minutes=1)

    orchestrator.reconcile(then)
    orchestrator.reconcile()

    assert read == [then, datetime(2029, 5, 1, tzinfo=UTC)]
    assert context.clock() == datetime(2029, 5, 1, tzinfo=UTC)


def test_clock_stops_advances_and_runs_again() -> None:
    clock = Clock()
    assert clock.now is None and abs(clock() - datetime.now(UTC)) < timedelta(minutes=1)

    clock.set(datetime(2030, 1, 2, 3, 4))  # a naive time is taken as UTC, as the database's columns do
    clock.advance(minutes=61)

    assert clock() == datetime(2030, 1, 2, 4, 5, tzinfo=UTC) and clock().tzinfo is UTC
    with clock.at(datetime(2030, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))):
        assert clock() == datetime(2030, 1, 2, 10, 0, tzinfo=UTC) and clock().tzinfo is UTC
    assert clock() == datetime(2030, 1, 2, 4, 5, tzinfo=UTC)
    clock.reset()
    assert clock.now is None


def test_clock_at_stops_it_for_one_thread() -> None:
    from contextlib import nullcontext

    clock = Clock(datetime(2030, 1, 1, tzinfo=UTC))

    def read_at(hour: int) -> Any:
        def read(_: None) -> datetime:
            with clock.at(datetime(2030, 1, 1, hour, tzinfo=UTC)):
                gate.wait(5)  # every thread is inside its block
                return clock()
        return read

    gate = threading.Barrier(2)
    assert orchestrator.each_released_together(nullcontext, [read_at(10), read_at(20)]) == [
        datetime(2030, 1, 1, 10, tzinfo=UTC), datetime(2030, 1, 1, 20, tzinfo=UTC)]
    assert clock() == datetime(2030, 1, 1, tzinfo=UTC)
