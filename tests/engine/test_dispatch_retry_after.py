"""A backend's refusal keeps the remote's ``Retry-After`` up to the dispatcher's back-off.

:func:`~aiimpl_core.services.launch.launch` turns a backend's :class:`ProviderError` into a
:class:`DispatchError`; the dispatcher backs the backend off only for transient errors, and a rate
limit answered with 403 is transient only through its ``retry_after``.
"""

from __future__ import annotations

from datetime import timedelta

from aiimpl_core.orm import utcnow
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import fail_with

from .conftest import jobs_of


def test_a_provider_error_with_retry_after_backs_the_runner_off_that_long(app, tracker, runner, add_mapping):
    runner.dispatch_error = fail_with(403, "API rate limit exceeded", retry_after=600)
    add_mapping("ENG")
    for key in ("ENG-1", "ENG-2", "ENG-3"):
        tracker.add(key)
    started = utcnow()

    report = run_cycle(reconcile=False)

    backoff = poller.backoff_of("runner", "github-actions")
    assert backoff is not None, report.errors
    assert backoff.until >= started + timedelta(seconds=590)
    # the first issue's dispatch failed; the others wait for the back-off instead of failing too
    statuses = [job.status for key in ("ENG-1", "ENG-2", "ENG-3") for job in jobs_of(key)]
    assert statuses.count("failed") == 1


def test_a_dispatch_without_an_answer_keeps_its_job_dispatched_and_backs_the_runner_off(
    app, tracker, runner, add_mapping
):
    """The run may have been made (the backend raised DispatchUnanswered): the job waits for the
    backend to find it by its name instead of failing, and the next issues wait for the back-off
    instead of each dispatching into the same outage."""
    from aiimpl_core.errors import DispatchUnanswered

    runner.dispatch_error = DispatchUnanswered("no answer to the dispatch", status=503, retry_after=120)
    add_mapping("ENG")
    for key in ("ENG-1", "ENG-2", "ENG-3"):
        tracker.add(key)
    started = utcnow()

    report = run_cycle(reconcile=False)

    backoff = poller.backoff_of("runner", "github-actions")
    assert backoff is not None, report.errors
    assert backoff.until >= started + timedelta(seconds=110)
    [job] = jobs_of("ENG-1")
    assert (job.status, job.run_id, job.error) == ("dispatched", None, None)
    assert jobs_of("ENG-2") == [] == jobs_of("ENG-3")
    assert report.blocked["ENG-2"]["reason"] == "backend-unavailable"
    assert report.errors == ["ENG-1: no answer to the dispatch"]
    assert tracker.comments["ENG-1"] == []  # no failure said on the ticket

