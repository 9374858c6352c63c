"""A machine the backend stopped for its lifetime stays a ``machine_timeout`` on every later poll.

The stop (SIGTERM) leaves an ``exit`` event with code 143 and ``requested_stop``; a poll that
comes after it (the next cycle when the destroy failed, or another poller's cycle before the
first one recorded the timeout) must not read that exit as the session's failure. The machine,
which holds the session's secrets, is destroyed in the end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.errors import DispatchError, ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.contract import sample_dispatch_request, sample_mapping
from aiimpl_core.testing.fakes import FakeTracker, add_mapping
from aiimpl_core.types import InFlightRun, LogLabel, RunPhase, RunState, TimeoutReason

from aiimpl_fly.backend import FlyMachinesBackend
from aiimpl_fly.client import FlyClient
from aiimpl_fly.testing import FakeFly

from .conftest import APP, TOKEN, Clock


def _started(backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock, job_id: int = 3) -> InFlightRun:
    req = sample_dispatch_request(job_id, mapping=sample_mapping())
    machine_id = backend.dispatch(req).run_id
    assert machine_id
    fake_fly.start(machine_id)
    return InFlightRun(
        job_id=job_id,
        phase=req.phase,
        issue_key=req.issue_key,
        mapping=req.mapping,
        run_id=machine_id,
        run_name=req.run_name,
        dispatched_at=clock(),
        lifetime_seconds=3600,
    )


def _assert_machine_timeout(state: RunState) -> None:
    assert state.phase is RunPhase.TIMED_OUT, state
    assert state.timeout_reason is TimeoutReason.MACHINE_TIMEOUT
    assert state.log_label is LogLabel.MACHINE_TIMEOUT


def test_a_failed_destroy_is_retried_and_the_run_stays_a_machine_timeout(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    run = _started(backend, fake_fly, clock)
    machine_id = str(run.run_id)
    clock.advance(minutes=61)
    fake_fly.fail_next("DELETE", f"/machines/{machine_id}", 409, "machine is busy")

    [first] = backend.poll_runs([run])
    assert first.phase is RunPhase.RUNNING  # stopped, not destroyed: the next cycle tries again
    assert fake_fly.machines[machine_id]["state"] == "stopped"

    clock.advance(minutes=1)
    [second] = backend.poll_runs([run])
    _assert_machine_timeout(second)
    assert "exited with code" not in (second.detail or "") + (second.log_excerpt or "")
    assert fake_fly.machines[machine_id]["state"] == "destroyed"
    # one stop only: a stopped machine is destroyed without being stopped again
    assert len(fake_fly.server.requests_to("POST", f"/machines/{machine_id}/stop")) == 1
    assert len(fake_fly.server.requests_to("DELETE", f"/machines/{machine_id}")) == 2


def test_a_poll_after_the_stop_and_destroy_reports_the_same_timeout(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    run = _started(backend, fake_fly, clock)
    clock.advance(minutes=61)
    [first] = backend.poll_runs([run])
    _assert_machine_timeout(first)
    before = len(fake_fly.server.requests)

    [again] = backend.poll_runs([run])  # another poller, before the first one recorded the timeout

    _assert_machine_timeout(again)
    assert [(r.method, r.path) for r in fake_fly.server.requests[before:]] == [
        ("GET", f"/v1/apps/{APP}/machines")
    ]


def test_a_machine_stopped_before_its_lifetime_is_a_failure_that_says_so(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    run = _started(backend, fake_fly, clock)
    clock.advance(minutes=20)
    assert backend.destroy_session(str(run.run_id))  # an admin destroyed the session

    [state] = backend.poll_runs([run])

    assert state.phase is RunPhase.FAILED and state.log_label is LogLabel.SESSION_FAILED
    assert state.detail == "the session machine was stopped before it finished (exit code 143)"


def test_a_machine_that_exits_by_itself_after_its_lifetime_is_still_its_exit(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    run = _started(backend, fake_fly, clock)
    clock.advance(minutes=61)
    fake_fly.exit(str(run.run_id), 1)  # not a stop asked through the API
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.FAILED and state.exit_code == 1


def test_cancel_destroys_a_stopped_machine_without_stopping_it_again(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    run = _started(backend, fake_fly, clock)
    machine_id = str(run.run_id)
    clock.advance(minutes=61)
    fake_fly.fail_next("DELETE", f"/machines/{machine_id}", 409, "machine is busy")
    backend.poll_runs([run])  # stopped; the destroy failed
    backend.cancel(run)  # the reconciler's safety net
    assert fake_fly.machines[machine_id]["state"] == "destroyed"
    assert len(fake_fly.server.requests_to("POST", f"/machines/{machine_id}/stop")) == 1


def test_a_dispatch_error_keeps_flys_retry_after(
    backend: FlyMachinesBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rate_limited(self: FlyClient, body: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError("fly: rate limited", provider="fly", status=429, retry_after=600)

    monkeypatch.setattr(FlyClient, "create_machine", rate_limited)
    with pytest.raises(DispatchError) as err:
        backend.dispatch(sample_dispatch_request(4, mapping=sample_mapping()))
    assert (err.value.status, err.value.retry_after) == (429, 600)


# -- inside the orchestrator ------------------------------------------------------------------------


@pytest.fixture
def aiimpl_config(app_fly: FakeFly) -> dict[str, Any]:
    return {"AIIMPL_FLY_API_TOKEN": TOKEN, "AIIMPL_FLY_APP": APP, "AIIMPL_FLY_API_URL": app_fly.url}


@pytest.fixture
def overdue_job(app: Any, tracker: FakeTracker, app_fly: FakeFly) -> Job:
    """A job whose machine runs and was dispatched 61 minutes ago."""
    add_mapping(repo="api", execution_mode="fly-machines")
    tracker.add("ENG-1", title="Add a health endpoint")
    run_cycle(reconcile=False)
    job = db.session.scalars(db.select(Job)).one()
    app_fly.start(job.run_id)
    db.session.execute(
        db.update(Job).where(Job.id == job.id).values(dispatched_at=utcnow() - timedelta(minutes=61))
    )
    db.session.commit()
    return job


def _ended(job: Job, tracker: FakeTracker) -> tuple[Job, list[str]]:
    run_cycle(reconcile=False)  # delivers the outbox
    db.session.expire_all()
    return db.session.get(Job, job.id), tracker.comments["ENG-1"]


def test_a_destroy_that_fails_once_still_ends_the_job_machine_timeout(
    app: Any, tracker: FakeTracker, app_fly: FakeFly, overdue_job: Job
) -> None:
    app_fly.fail_next("DELETE", f"/machines/{overdue_job.run_id}", 409, "machine is busy")
    reconcile()
    reconcile()

    job, comments = _ended(overdue_job, tracker)

    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert comments[0] == (
        "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)"
    )
    assert not any("exited with code" in c for c in comments)
    assert app_fly.machines[overdue_job.run_id]["state"] == "destroyed"


def test_a_second_poller_between_the_stop_and_its_record_agrees_on_machine_timeout(
    app: Any, tracker: FakeTracker, app_fly: FakeFly, overdue_job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = FlyMachinesBackend.poll_runs
    calls: list[dict[str, Any]] = []
    polls: list[int] = []

    def poll_runs(self: FlyMachinesBackend, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        states = answer(self, runs)  # this poller stopped and destroyed the machine
        polls.append(len(runs))
        if len(polls) == 1:  # another process (``aiimpl poll --once``) reconciles before it records that

            def other() -> None:
                with app.app_context():
                    calls.append(reconcile().as_dict())

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
        return states

    monkeypatch.setattr(FlyMachinesBackend, "poll_runs", poll_runs)
    reconcile()

    job, comments = _ended(overdue_job, tracker)
    assert calls and calls[0]["endings"] == {str(job.id): "timed_out/machine_timeout"}
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert not any("exited with code" in c for c in comments)
