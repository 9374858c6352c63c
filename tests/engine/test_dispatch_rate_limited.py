"""A dispatch the backend rate-limited is tried again, not failed.

The backend started nothing (a 429, or a refusal naming a wait): the job stays ``unknown`` with the
time from which it is tried again (``launch_after``), the issue keeps its stage and gets no failure
notice, and a later cycle launches it once, whatever number of pollers take part. A wait the
run-not-found window cannot hold, or a job ended meanwhile, ends as before.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.services import poller
from aiimpl_core.services.cancel import cancel_job
from aiimpl_core.services.dispatch import CycleReport, launch_deferred, run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import fail_with

from .conftest import claim_without_launch, jobs_of, later


def _rate_limit(retry_after: float | None = 60, status: int = 429):
    return fail_with(status, "secondary rate limit", retry_after=retry_after)


def _first_cycle(tracker, runner, add_mapping, *errors: Exception) -> Job:
    """ENG-1 triggered and claimed by a cycle whose backend answers ``errors`` to its dispatches
    first: its job."""
    add_mapping("ENG")
    tracker.add("ENG-1")
    runner.next_dispatch_errors.extend(errors)
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-1")
    return job


def test_a_rate_limited_dispatch_leaves_its_job_waiting_and_a_later_cycle_launches_it(
    app, tracker, runner, add_mapping
):
    add_mapping("ENG")
    tracker.add("ENG-1")
    runner.next_dispatch_errors.append(_rate_limit(60))
    before = utcnow()

    report = run_cycle(reconcile=False)

    [job] = jobs_of("ENG-1")
    assert (job.status, job.run_id, job.error, job.finished_at) == ("unknown", None, None, None)
    assert before + timedelta(seconds=59) <= job.launch_after <= utcnow() + timedelta(seconds=61)
    assert runner.runs == {}
    [entry] = report.dispatched
    assert entry.deferred_until == job.launch_after and entry.status == "unknown"
    assert report.failed_dispatches == 0 and report.deferred_dispatches == 1
    assert "1 rate-limited (tried again later)" in report.summary()
    assert report.as_dict()["dispatched"][0]["deferredUntil"] is not None
    # no failure said on the ticket; its history says why it waits
    assert tracker.comments["ENG-1"] == []
    note = job.transitions[-1]
    assert (note.from_status, note.to_status) == ("unknown", "unknown")
    assert "rate-limited" in note.reason and "tried again from" in note.reason
    # the backend is backed off for the wait
    backoff = poller.backoff_of("runner", "github-actions")
    assert backoff is not None and backoff.until >= before + timedelta(seconds=59)

    # a cycle before the wait has passed leaves it waiting
    run_cycle(now=later(seconds=30), reconcile=False)
    assert jobs_of("ENG-1")[0].status == "unknown" and runner.runs == {}

    report = run_cycle(now=later(seconds=65), reconcile=False)

    [job] = jobs_of("ENG-1")
    assert (job.status, job.launch_after) == ("dispatched", None)
    assert [r.request.job_id for r in runner.runs.values()] == [job.id]
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"] and report.errors == []
    assert tracker.comments["ENG-1"] == []


def test_a_second_rate_limit_defers_it_again(app, tracker, runner, add_mapping):
    first = _first_cycle(tracker, runner, add_mapping, _rate_limit(60), _rate_limit(90)).launch_after

    run_cycle(now=later(seconds=65), reconcile=False)

    [job] = jobs_of("ENG-1")
    assert job.status == "unknown" and job.launch_after > first
    assert runner.runs == {}
    run_cycle(now=later(seconds=200), reconcile=False)
    assert jobs_of("ENG-1")[0].status == "dispatched" and len(runner.runs) == 1


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (_rate_limit(None), "a bare 429 waits the default"),
        (_rate_limit(30, status=403), "GitHub's 403 rate limit names its wait"),
    ],
)
def test_what_counts_as_a_rate_limit(app, tracker, runner, add_mapping, error, why):
    job = _first_cycle(tracker, runner, add_mapping, error)

    assert job.status == "unknown" and job.launch_after is not None, why


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (_rate_limit(900), "a wait past the run-not-found window (600 s)"),
        (fail_with(403, "Resource not accessible by integration"), "a refusal without a wait"),
        (fail_with(422, "Workflow does not have 'workflow_dispatch' trigger"), "a bad request"),
    ],
)
def test_other_refusals_still_end_the_job_failed(app, tracker, runner, add_mapping, error, why):
    job = _first_cycle(tracker, runner, add_mapping, error)

    assert (job.status, job.launch_after) == ("failed", None), why
    assert job.error.startswith("dispatch to ")


def test_a_job_cancelled_while_it_waits_is_never_launched(app, tracker, runner, add_mapping):
    job = _first_cycle(tracker, runner, add_mapping, _rate_limit(60))

    cancel_job(job.id)
    run_cycle(now=later(seconds=65), reconcile=False)

    [job] = jobs_of("ENG-1")
    assert job.status == "failed" and runner.runs == {}


def test_a_job_still_waiting_at_the_window_ends_run_not_found(app, tracker, runner, add_mapping):
    """The backend backs off past the window (a second rate limit answered elsewhere): the job is
    never launched, and the reconciler ends it as any job whose run was never linked."""
    _first_cycle(tracker, runner, add_mapping, _rate_limit(60))
    poller.record_failure("runner", "github-actions", _rate_limit(3000), utcnow())

    run_cycle(now=later(seconds=120), reconcile=False)
    assert jobs_of("ENG-1")[0].status == "unknown"
    reconcile(now=later(seconds=601))

    [job] = jobs_of("ENG-1")
    assert (job.status, job.timeout_reason) == ("timed_out", "run_not_found")
    assert runner.runs == {}
    run_cycle(now=later(seconds=3100), reconcile=False)
    assert len(jobs_of("ENG-1")) == 1 and runner.runs == {}


def test_pollers_at_once_launch_each_waiting_job_once(app, tracker, runner, add_mapping):
    add_mapping("ENG", max_in_progress=30)
    keys = [f"ENG-{n}" for n in range(1, 25)]
    for key in keys:
        tracker.add(key)
    # jobs claimed and left waiting, as rate-limited dispatches leave them
    ids = [claim_without_launch(tracker, key).id for key in keys]
    db.session.execute(db.update(Job).values(launch_after=utcnow() - timedelta(seconds=1)))
    db.session.commit()

    def poll(_client):
        report = CycleReport(started_at=utcnow())
        launch_deferred(report, utcnow())
        return [entry.job_id for entry in report.dispatched]

    taken = orchestrator.at_once(app, poll, 4, timeout=120)

    launched = sorted(job_id for ids_ in taken for job_id in ids_)
    assert launched == sorted(ids)
    assert sorted(r.request.job_id for r in runner.runs.values()) == sorted(ids)
    assert {job.status for key in keys for job in jobs_of(key)} == {"dispatched"}
    # a cycle after it finds nothing more to launch
    report = CycleReport(started_at=utcnow())
    launch_deferred(report, later(seconds=60))
    assert report.dispatched == [] and len(runner.runs) == len(ids)


def test_the_cli_says_a_rate_limited_dispatch_waits(app, tracker, runner, add_mapping):
    from .test_cli import invoke

    add_mapping("ENG")
    tracker.add("ENG-1")
    runner.next_dispatch_errors.append(_rate_limit(60))

    result = invoke(app, "dispatch", "ENG-1")

    assert result.exit_code == 1, result.output
    assert "Dispatch of ENG-1 was rate-limited: job " in result.stderr
    assert "the poller tries it again from 20" in result.stderr
    [job] = jobs_of("ENG-1")
    shown = invoke(app, "jobs", "show", str(job.id))
    assert shown.exit_code == 0, shown.output
    assert "Tried again:" in shown.output and "unknown -> unknown" in shown.output


def test_a_job_ended_after_its_try_was_taken_is_not_launched(app, tracker, runner, add_mapping, monkeypatch):
    """The reconciler (or a cancel) ends the job between a poller's taking its try and the launch:
    nothing is started for it."""
    from aiimpl_core.services import dispatch

    _first_cycle(tracker, runner, add_mapping, _rate_limit(60))
    original = dispatch._launch

    def ended_first(job, *args, **kw):
        cancel_job(job.id)
        return original(job, *args, **kw)

    monkeypatch.setattr(dispatch, "_launch", ended_first)
    report = CycleReport(started_at=utcnow())
    launch_deferred(report, later(seconds=65))

    [job] = jobs_of("ENG-1")
    assert job.status == "failed" and runner.runs == {}
