"""A runner's result racing the other writers of its job, several workers or hosts on one database.

1. ``POST /runner/result`` and the reconciler ending the same job (its run gone, past its lifetime,
   or overrunning it): in whichever order they commit, the job ends once, one set of outcome comments
   is queued, the issue's stage is the winner's, and nothing answers 500.
2. ``POST /runner/progress`` and ``POST /runner/result`` of one job: a step reported as the job ends
   never reopens it nor changes its status, the result is never lost to the step's move to
   ``running``, and every step answered 200 is kept.

Each interleaving is made to happen, not hoped for. Where one side must commit at a given point of
the other, that point runs it first (in a thread with its own session, waited for). Where one side
must wait for the other's row lock, the holder is paused with its transaction open and the test sees
the other wait on PostgreSQL before releasing it; SQLite serializes writers whole (``BEGIN
IMMEDIATE``), so those cases are PostgreSQL's only. Two tests also release the requests together,
unforced, as production does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aiimpl_core import hookimpl
from aiimpl_core.extensions import db
from aiimpl_core.services import callbacks, outcomes, reconcile
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.types import TERMINAL_STATUSES, JobStatus, RunPhase

from .conftest import jobs_of, later, outbox_of, post_result, session_env, tracked

KEY = "ENG-1"
PR_URL = "https://github.com/acme/eng/pull/7"
TERMINAL = {status.value for status in TERMINAL_STATUSES}


# -- the app: a tracker, a runner, and a plugin that hears every status change -------------------


class Observer:
    """Records the hook events (sent after commit), as any plugin hears them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: list[tuple[int, str]] = []  # (job id, new status)

    @hookimpl
    def aiimpl_job_status_changed(self, job_id: int, issue_key: str, old: Any, new: Any) -> None:
        with self.lock:
            self.statuses.append((job_id, JobStatus(new).value))


@pytest.fixture
def observer() -> Observer:
    return Observer()


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner, observer: Observer) -> list[object]:
    return [tracker.plugin, runner.plugin, observer]


@pytest.fixture(autouse=True)
def _team(add_mapping: Callable[..., Any]) -> None:
    """Team ENG's project, on the fake runner's backend."""
    add_mapping("ENG")


# -- a job, the requests of its session, and what must hold after a race ------------------------


def _dispatched(tracker: FakeTracker, key: str = KEY) -> int:
    """``key`` dispatched by a poll cycle, its run linked; the job's id."""
    tracker.add(key)
    run_cycle(reconcile=False)
    [job] = jobs_of(key)
    assert job.status == "dispatched" and job.run_id
    return job.id


def _running(client: Any, tracker: FakeTracker, runner: FakeRunner, key: str = KEY) -> int:
    """``key`` dispatched, and its session's first step reported: the job is ``running``."""
    job_id = _dispatched(tracker, key)
    resp = post_progress(client, runner, job_id, "setup")
    assert resp.status_code == 200 and resp.get_json()["status"] == "running", resp.get_json()
    return job_id


def post_progress(client: Any, runner: FakeRunner, job_id: int, step_id: str) -> Any:
    """``POST /runner/progress`` as the job's session does."""
    env = session_env(runner, job_id)
    step = {"id": step_id, "type": "shell", "status": "running", "started_at": "2026-11-29T05:00:00Z"}
    return client.post("/runner/progress", json={"step": step},
                       headers={"Authorization": f"Bearer {env['AIIMPL_PROGRESS_TOKEN']}"})


def _success(client: Any, runner: FakeRunner, job_id: int) -> Any:
    """The session's result: the implementation opened PR #7."""
    return post_result(client, runner, job_id, outcome="success", prUrl=PR_URL, prNumber=7)


def _assert_ended_once(observer: Observer, job_id: int, status: str, *, key: str = KEY) -> None:
    """The job ended once, with ``status``: one terminal transition (as recorded and as plugins
    heard it), one set of outcome comments (the winner's, nothing of the loser's) and nothing
    else, and the issue at the winner's stage (the one stage change queued after the claim's)."""
    orchestrator.fresh()
    [job] = jobs_of(key)
    assert job.status == status
    moves = [(t.from_status, t.to_status) for t in job.transitions]
    assert [to for _, to in moves if to in TERMINAL] == [status], moves
    assert not [old for old, _ in moves if old in TERMINAL], moves  # never left once ended
    with observer.lock:
        heard = [new for j, new in observer.statuses if j == job_id and new in TERMINAL]
    assert heard == [status]
    items = [i for i in outbox_of(key) if i.job_id == job_id]
    comments = sorted(i.kind for i in items if i.op == "comment")
    stages = [i.stage for i in items if i.op == "stage"]
    won_by_result = status == "completed"
    assert comments == (["pr"] if won_by_result else ["failure", "log"])
    stage = "pr_opened" if won_by_result else "implementation_failed"
    assert stages == ["implementing", stage]
    assert tracked(key).stage == stage


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing failed and was only logged (the reconciler logs a job's failure and goes on)."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


def _first_call_runs(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, app: Any,
                     meanwhile: Callable[[Any], None]) -> None:
    """The first call of ``owner.name`` (in any thread) first runs ``meanwhile(test_client)`` to its
    end in another thread, with a session of its own (another worker or host, committing at that
    point of this one); later calls run as they are."""
    original = getattr(owner, name)
    ran = threading.Event()

    def first(*args: Any, **kwargs: Any) -> Any:
        if not ran.is_set():
            ran.set()
            orchestrator.Worker(app, "meanwhile", lambda: meanwhile(app.test_client())).join()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, first)


def _held_while(app: Any, pause: orchestrator.Pause, hold: Callable[[Any], Any], contend: Callable[[Any], Any]
                ) -> tuple[Any, Any]:
    """``hold(test_client)`` as one worker until it reaches ``pause`` (made for the thread named
    ``holder``) with its transaction open, then ``contend`` as another; the contender must be seen
    waiting for a lock before ``hold`` goes on to commit. What each answered; fails on any error of
    either."""
    db.session.commit()
    answers = orchestrator.first_holds_second_waits(
        app, pause, orchestrator.Worker(app, "holder", lambda: hold(app.test_client())),
        lambda: orchestrator.Worker(app, "contender", lambda: contend(app.test_client())),
    )
    orchestrator.fresh()
    return answers


def _postgresql_only(reason: str) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip(reason)


WRITERS_WHOLE = "SQLite serializes the two writers whole: neither ever waits on the other's row lock"


# -- 1. the result and the reconciler ending the same job -------------------------------------------


@dataclass(frozen=True)
class Ending:
    """How the reconciler ends a running job: what the backend reports, and when."""

    phase: RunPhase
    minutes: float
    status: str
    timeout_reason: str | None


ENDINGS = {
    # the run is no longer found, inside its lifetime: failed (its session was removed)
    "run_gone": Ending(RunPhase.NOT_FOUND, 20, "failed", None),
    # no longer found, past its lifetime: the lifetime timeout
    "past_lifetime": Ending(RunPhase.NOT_FOUND, 62, "timed_out", "machine_timeout"),
    # still running 10 minutes past its lifetime: stopped and timed out (another code path)
    "overran": Ending(RunPhase.RUNNING, 75, "timed_out", "machine_timeout"),
}
each_ending = pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))


def _reconcile(ending: Ending) -> Any:
    return orchestrator.reconcile(now=later(minutes=ending.minutes))


def _assert_result_won(answer: Any, report: Any, observer: Observer, job_id: int) -> None:
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"jobId": job_id, "status": "completed", "ended": True}
    assert report.ended == 0 and job_id not in report.endings
    _assert_ended_once(observer, job_id, "completed")


def _assert_reconciler_won(answer: Any, report: Any, observer: Observer, job_id: int, ending: Ending) -> None:
    assert answer.status_code == 200, answer.get_json()  # a late result: recorded, changes nothing
    assert answer.get_json() == {"jobId": job_id, "status": ending.status, "ended": False}
    suffix = f"/{ending.timeout_reason}" if ending.timeout_reason else ""
    assert report.endings == {job_id: ending.status + suffix}
    _assert_ended_once(observer, job_id, ending.status)
    assert jobs_of(KEY)[0].timeout_reason == ending.timeout_reason


@each_ending
def test_a_result_committed_while_the_reconciler_asks_the_backend_ends_the_job_once(
    app, client, tracker, runner, observer, monkeypatch, caplog, ending
):
    """The reconciler has read the job ``running`` and asks the backend about its run when the
    result commits: the pass leaves the job as the result ended it (and stops no run)."""
    job_id = _running(client, tracker, runner)
    runner.set_state(job_id, ending.phase)
    answers = []
    _first_call_runs(monkeypatch, runner.backend_class, "poll_runs", app,
                     lambda c: answers.append(_success(c, runner, job_id)))
    db.session.commit()

    report = _reconcile(ending)

    [answer] = answers
    _assert_result_won(answer, report, observer, job_id)
    assert runner.destroyed == []
    _no_errors_logged(caplog)


@each_ending
def test_a_result_committed_after_the_reconciler_read_the_job_is_not_overwritten(
    app, client, tracker, runner, observer, monkeypatch, caplog, ending
):
    """Inside the reconciler's transaction, after it read the job ``running`` and decided to end
    it, the result commits: the ending's compare-and-set finds the job ended and changes nothing."""
    _postgresql_only("SQLite: the reconciler holds the write lock from that read to its commit")
    job_id = _running(client, tracker, runner)
    runner.set_state(job_id, ending.phase)
    answers = []
    _first_call_runs(monkeypatch, reconcile, "_end", app,
                     lambda c: answers.append(_success(c, runner, job_id)))
    db.session.commit()

    report = _reconcile(ending)

    [answer] = answers
    _assert_result_won(answer, report, observer, job_id)
    _no_errors_logged(caplog)


@each_ending
def test_a_result_waiting_for_the_reconciler_s_ending_finds_the_job_ended(
    app, client, tracker, runner, observer, monkeypatch, caplog, ending
):
    """The reconciler has ended the job and not committed (paused after setting the stage) when the
    result arrives: the result waits for it, then is recorded as late."""
    _postgresql_only(WRITERS_WHOLE)
    job_id = _running(client, tracker, runner)
    runner.set_state(job_id, ending.phase)
    pause = orchestrator.Pause(monkeypatch, outcomes, "set_stage", thread="holder")

    report, answer = _held_while(app, pause, lambda c: _reconcile(ending),
                                 lambda c: _success(c, runner, job_id))

    _assert_reconciler_won(answer, report, observer, job_id, ending)
    _no_errors_logged(caplog)


@each_ending
def test_a_reconciler_waiting_for_the_result_s_ending_leaves_the_job_as_the_result_ended_it(
    app, client, tracker, runner, observer, monkeypatch, caplog, ending
):
    """The result has ended the job and not committed when the reconciler reads it ``running`` and
    tries to end it: the reconciler waits for the result, then changes nothing."""
    _postgresql_only(WRITERS_WHOLE)
    job_id = _running(client, tracker, runner)
    runner.set_state(job_id, ending.phase)
    pause = orchestrator.Pause(monkeypatch, outcomes, "set_stage", thread="holder")

    answer, report = _held_while(app, pause, lambda c: _success(c, runner, job_id),
                                 lambda c: _reconcile(ending))

    _assert_result_won(answer, report, observer, job_id)
    _no_errors_logged(caplog)


@each_ending
def test_a_reconciler_ending_committed_before_the_result_s_transaction_makes_the_result_late(
    app, client, tracker, runner, observer, monkeypatch, caplog, ending
):
    """The result has read the job (to redact its text with the job's secrets) when the reconciler
    ends it and commits: the result's transaction reads the job again and records itself as late;
    its token is used up all the same."""
    job_id = _running(client, tracker, runner)
    runner.set_state(job_id, ending.phase)
    reports = []
    _first_call_runs(monkeypatch, callbacks, "result_outcome", app,
                     lambda c: reports.append(_reconcile(ending)))
    db.session.commit()

    answer = _success(client, runner, job_id)

    _assert_reconciler_won(answer, reports[0], observer, job_id, ending)
    assert _success(client, runner, job_id).get_json() == {"error": "already_consumed"}
    _no_errors_logged(caplog)


def test_results_and_reconciler_passes_released_together_end_each_job_once(
    app, tracker, runner, observer, caplog
):
    """Unforced: a result and a reconciler pass (run gone) start at the same moment, for several
    jobs; whichever wins, each job ends once with the winner's comments and stage."""
    ending = ENDINGS["run_gone"]
    for n in range(2, 6):
        key = f"ENG-{n}"
        job_id = _running(app.test_client(), tracker, runner, key)
        runner.set_state(job_id, ending.phase)
        db.session.commit()
        result, report = orchestrator.each_at_once(app, [
            lambda c, job_id=job_id: _success(c, runner, job_id), lambda _c: _reconcile(ending)
        ])
        assert result.status_code == 200, result.get_json()
        status = "completed" if result.get_json()["ended"] else ending.status
        assert result.get_json()["status"] == status
        assert (job_id in report.endings) is (status != "completed")
        _assert_ended_once(observer, job_id, status, key=key)
    _no_errors_logged(caplog)


# -- 2. progress and the result of one job ----------------------------------------------------------


def _steps(job_id: int) -> set[str]:
    from aiimpl_core.orm import JobStep

    orchestrator.fresh()
    return set(db.session.scalars(db.select(JobStep.step_id).where(JobStep.job_id == job_id)))


def test_a_first_step_waiting_for_the_result_s_ending_does_not_reopen_the_job(
    app, client, tracker, runner, observer, monkeypatch
):
    """The result has ended a ``dispatched`` job and not committed when the session's first step
    arrives: the step's move to ``running`` waits for the result, then finds the job ended; the
    step is kept and the answer says ``completed``."""
    _postgresql_only(WRITERS_WHOLE)
    job_id = _dispatched(tracker)
    pause = orchestrator.Pause(monkeypatch, outcomes, "set_stage", thread="holder")

    result, step = _held_while(app, pause, lambda c: _success(c, runner, job_id),
                               lambda c: post_progress(c, runner, job_id, "clone"))

    assert result.get_json() == {"jobId": job_id, "status": "completed", "ended": True}
    assert step.status_code == 200
    assert step.get_json() == {"ok": True, "jobId": job_id, "status": "completed", "stepId": "clone"}
    _assert_ended_once(observer, job_id, "completed")
    assert "running" not in [t.to_status for t in jobs_of(KEY)[0].transitions]
    assert _steps(job_id) == {"clone"}


@pytest.mark.parametrize("where", ["before_its_write", "between_its_write_and_its_move_to_running"])
def test_a_result_committed_while_the_first_step_is_recorded_is_not_undone(
    app, client, tracker, runner, observer, monkeypatch, where
):
    """The result ends the ``dispatched`` job and commits while the session's first step is being
    recorded: just before the step's one statement, or after it (which read the job
    ``dispatched``) and before the move to ``running``. The step is kept, the job stays ended."""
    if where != "before_its_write":
        _postgresql_only("SQLite: the step's statement holds the write lock until its commit")
    job_id = _dispatched(tracker)
    point = "_progress_upsert" if where == "before_its_write" else "_mark_running"
    results = []
    _first_call_runs(monkeypatch, callbacks, point, app,
                     lambda c: results.append(_success(c, runner, job_id)))
    db.session.commit()

    step = post_progress(client, runner, job_id, "clone")

    assert results[0].get_json() == {"jobId": job_id, "status": "completed", "ended": True}
    assert step.status_code == 200
    assert step.get_json() == {"ok": True, "jobId": job_id, "status": "completed", "stepId": "clone"}
    _assert_ended_once(observer, job_id, "completed")
    assert "running" not in [t.to_status for t in jobs_of(KEY)[0].transitions]
    assert _steps(job_id) == {"clone"}


def _moving_to_running(monkeypatch: pytest.MonkeyPatch, runner: FakeRunner, job_id: int, mover: str
                       ) -> tuple[Callable[[Any], None], orchestrator.Pause]:
    """What moves a ``dispatched`` job to ``running`` (the session's ``first_step``, or the
    ``reconciler_linking_the_run``), paused inside its transaction in the thread named ``holder``:
    (move, pause)."""
    if mover == "first_step":
        pause = orchestrator.Pause(monkeypatch, callbacks, "_mark_running", thread="holder")

        def move(c: Any) -> None:
            assert post_progress(c, runner, job_id, "clone").status_code == 200
    else:
        runner.set_state(job_id, RunPhase.RUNNING)
        pause = orchestrator.Pause(monkeypatch, reconcile, "transition", thread="holder")

        def move(c: Any) -> None:
            assert orchestrator.reconcile().linked == 1
    return move, pause


@pytest.mark.parametrize("mover", ["first_step", "reconciler_linking_the_run"])
def test_a_result_waiting_for_a_move_to_running_still_ends_the_job(
    app, client, tracker, runner, observer, monkeypatch, mover
):
    """A ``dispatched`` job is being moved to ``running`` (the session's first step, or the
    reconciler linking the run) and that transaction has not committed when the result arrives
    (it read the job ``dispatched`` before its own transaction): the result waits for it, and then
    still ends the job. A result lost here would use up its single-use token and leave the job
    running until the reconciler failed it."""
    _postgresql_only(WRITERS_WHOLE)
    job_id = _dispatched(tracker)
    move, pause = _moving_to_running(monkeypatch, runner, job_id, mover)

    _, result = _held_while(app, pause, move, lambda c: _success(c, runner, job_id))

    assert result.status_code == 200
    assert result.get_json() == {"jobId": job_id, "status": "completed", "ended": True}
    _assert_ended_once(observer, job_id, "completed")
    moves = [(t.from_status, t.to_status) for t in jobs_of(KEY)[0].transitions]
    assert moves[-2:] == [("dispatched", "running"), ("running", "completed")]


def test_a_first_step_committed_before_the_result_s_transaction_does_not_lose_the_result(
    app, client, tracker, runner, observer, monkeypatch
):
    """The result has read the ``dispatched`` job when the session's first step moves it to
    ``running`` and commits: the result's transaction reads the job again and ends it."""
    job_id = _dispatched(tracker)
    steps = []
    _first_call_runs(monkeypatch, callbacks, "result_outcome", app,
                     lambda c: steps.append(post_progress(c, runner, job_id, "clone")))
    db.session.commit()

    answer = _success(client, runner, job_id)

    assert steps[0].get_json()["status"] == "running"
    assert answer.get_json() == {"jobId": job_id, "status": "completed", "ended": True}
    _assert_ended_once(observer, job_id, "completed")
    assert _steps(job_id) == {"clone"}


def test_steps_streamed_as_the_result_lands_are_all_kept_and_never_reopen_the_job(
    app, tracker, runner, observer
):
    """Unforced: a ``dispatched`` job's session sends five steps and its result at the same moment,
    for several jobs. Every request answers 200, the result ends the job, every step is kept, and
    no step moves the job after it ended."""
    for n in range(2, 6):
        key = f"ENG-{n}"
        job_id = _dispatched(tracker, key)
        db.session.commit()
        steps = [f"step-{n}" for n in range(1, 6)]
        answers = dict(zip(["result", *steps], orchestrator.each_at_once(app, [
            lambda c, job_id=job_id: _success(c, runner, job_id),
            *(lambda c, job_id=job_id, step=step: post_progress(c, runner, job_id, step) for step in steps),
        ]), strict=True))
        assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(answers, 200)
        assert answers.pop("result").get_json() == {"jobId": job_id, "status": "completed", "ended": True}
        assert {a.get_json()["status"] for a in answers.values()} <= {"running", "completed"}
        _assert_ended_once(observer, job_id, "completed", key=key)
        assert _steps(job_id) == set(answers)


@pytest.mark.parametrize("mover", ["first_step", "reconciler_linking_the_run"])
def test_a_cancel_waiting_for_a_move_to_running_still_ends_the_job(
    app, client, tracker, runner, observer, monkeypatch, admin_headers, mover
):
    """An operator's cancel reads the job ``dispatched`` while another transaction moves it to
    ``running``: the cancel waits for it and ends the job; before, it answered 409 "job already
    ended" for a job that was running."""
    _postgresql_only(WRITERS_WHOLE)
    job_id = _dispatched(tracker)
    move, pause = _moving_to_running(monkeypatch, runner, job_id, mover)

    _, cancel = _held_while(app, pause, move,
                            lambda c: c.post(f"/api/jobs/{job_id}/cancel", headers=admin_headers))

    assert cancel.status_code == 200, cancel.get_json()
    orchestrator.fresh()
    [job] = jobs_of(KEY)
    assert (job.status, job.error) == ("failed", "cancelled by an operator")
    moves = [(t.from_status, t.to_status) for t in job.transitions]
    assert moves[-2:] == [("dispatched", "running"), ("running", "failed")]
    with observer.lock:
        assert [new for j, new in observer.statuses if j == job_id and new in TERMINAL] == ["failed"]
    # the cancel's failure notice, once (a cancel has no log excerpt to post)
    assert [i.kind for i in outbox_of(KEY) if i.job_id == job_id and i.op == "comment"] == ["failure"]
