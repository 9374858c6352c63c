"""Drills on how runs end, through a real HTTP server:

- the tracker failing while a result is reported: the result is kept, its comments wait in the
  outbox and are posted once when the tracker is back;
- a runner posting its result twice (one after the other, and two at the same moment), progress
  arriving after the result, and a result for a job the reconciler already ended ``timed_out``:
  the terminal status is kept and the answers are the reference's (``409 already_consumed``).
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import timedelta
from typing import Any

import pytest
import requests

from aiimpl_core.extensions import db
from aiimpl_core.orm import JobStep, Mapping, OutboxItem, utcnow
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeTracker, fail_with
from aiimpl_core.testing.orchestrator import released_together
from aiimpl_core.types import RunPhase, TimeoutReason

from .helpers import job_of, jobs_per_issue, progress_request, result_request


@pytest.fixture
def aiimpl_plugins(fake_plugins: list[object]) -> list[object]:
    """The in-memory tracker and runner."""
    return fake_plugins

PR_URL = "https://github.com/acme/eng/pull/42"


@pytest.fixture
def dispatched(app: Any, tracker: FakeTracker) -> Any:
    """Dispatch the given issues of team ENG through a poll cycle; returns their job ids."""
    db.session.add(Mapping(team_key="ENG", owner="acme", repo="eng", default_branch="main",
                           execution_mode="github-actions", ticketing={"provider": "fake-tracker"}))
    db.session.commit()

    def make(*keys: str) -> dict[str, int]:
        for key in keys:
            tracker.add(key)
        report = run_cycle()
        assert sorted(d.issue_key for d in report.dispatched) == sorted(keys), report.as_dict()
        return {key: job_of(key).id for key in keys}

    return make


def _post(base: str, path: str, body_headers: tuple[dict[str, Any], dict[str, str]]) -> requests.Response:
    body, headers = body_headers
    return requests.post(base + path, json=body, headers=headers, timeout=30)


def test_drill_tracker_down_while_the_result_is_reported(live_server, tracker, runner, dispatched):
    job_id = dispatched("ENG-1")["ENG-1"]
    tracker.fail["post_comment"] = fail_with(502, "Bad gateway")
    runner_comment = "Implemented the health endpoint."

    resp = _post(live_server, "/runner/result", result_request(
        runner, job_id, outcome="success", prUrl=PR_URL, comments=[{"body": runner_comment}]))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"jobId": job_id, "status": "completed", "ended": True}
    assert tracker.comments["ENG-1"] == []
    # the outcome is kept and so are the comments, waiting to be retried
    db.session.expire_all()
    assert job_of("ENG-1").status == "completed" and job_of("ENG-1").pr_url == PR_URL
    waiting = db.session.scalars(db.select(OutboxItem).where(OutboxItem.issue_key == "ENG-1",
                                                             OutboxItem.op == "comment")).all()
    assert waiting and {i.state for i in waiting} == {"pending"}

    # still down for a few cycles: nothing is dropped (the outbox retries with back-off)
    for minutes in (1, 5, 30):
        run_cycle(now=utcnow() + timedelta(minutes=minutes), reconcile=False)
    assert tracker.comments["ENG-1"] == []

    del tracker.fail["post_comment"]
    run_cycle(now=utcnow() + timedelta(hours=3), reconcile=False)
    posted = list(tracker.comments["ENG-1"])
    assert len(posted) == len(waiting) and len(set(posted)) == len(posted)
    assert runner_comment in posted and any(PR_URL in c for c in posted), posted
    run_cycle(now=utcnow() + timedelta(hours=4), reconcile=False)
    assert tracker.comments["ENG-1"] == posted  # once
    assert job_of("ENG-1").status == "completed"


def test_drill_result_twice_late_progress_and_result_after_timeout(
    app, live_server, tracker, runner, dispatched
):
    ids = dispatched("ENG-1", "ENG-2", "ENG-3")

    # the result posted twice, one after the other
    first = _post(live_server, "/runner/result", result_request(runner, ids["ENG-1"], outcome="success",
                                                                 prUrl=PR_URL))
    assert (first.status_code, first.json()["status"]) == (200, "completed"), first.text
    comments_after_first = list(tracker.comments["ENG-1"])
    again = _post(live_server, "/runner/result", result_request(runner, ids["ENG-1"], outcome="failure",
                                                                 error="late"))
    assert (again.status_code, again.json()) == (409, {"error": "already_consumed"})

    # progress after the result: recorded, never moves the job back
    late = _post(live_server, "/runner/progress", progress_request(runner, ids["ENG-1"], "late-step"))
    assert late.status_code == 200, late.text
    assert late.json()["status"] == "completed"
    db.session.expire_all()
    assert db.session.scalar(db.select(JobStep).where(JobStep.job_id == ids["ENG-1"],
                                                      JobStep.step_id == "late-step")) is not None
    assert job_of("ENG-1").status == "completed"

    # two identical results at the same moment: exactly one is accepted
    request = result_request(runner, ids["ENG-2"], outcome="success", prUrl=PR_URL.replace("42", "43"))
    answers = released_together(nullcontext, lambda _: _post(live_server, "/runner/result", request), 2,
                                timeout=60)
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    assert [a.json() for a in answers if a.status_code == 409] == [{"error": "already_consumed"}]
    assert job_of("ENG-2").status == "completed"

    # a result for a job the reconciler already ended timed_out: the ending stands
    runner.set_state(ids["ENG-3"], RunPhase.TIMED_OUT, timeout_reason=TimeoutReason.MACHINE_TIMEOUT)
    run_cycle()
    assert (job_of("ENG-3").status, job_of("ENG-3").timeout_reason) == ("timed_out", "machine_timeout")
    timeout_comments = list(tracker.comments["ENG-3"])
    late_result = _post(live_server, "/runner/result", result_request(runner, ids["ENG-3"], outcome="success",
                                                                       prUrl=PR_URL.replace("42", "44")))
    assert late_result.status_code == 200, late_result.text
    assert late_result.json() == {"jobId": ids["ENG-3"], "status": "timed_out", "ended": False}
    assert job_of("ENG-3").status == "timed_out"
    again = _post(live_server, "/runner/result", result_request(runner, ids["ENG-3"], outcome="success",
                                                                 prUrl=PR_URL.replace("42", "44")))
    assert (again.status_code, again.json()) == (409, {"error": "already_consumed"})

    # nothing was done twice: the comments of each ending went out once
    run_cycle(now=utcnow() + timedelta(minutes=10), reconcile=False)
    assert tracker.comments["ENG-1"] == comments_after_first
    assert tracker.comments["ENG-3"] == timeout_comments
    for key in ids:
        assert len(tracker.comments[key]) == len(set(tracker.comments[key])), tracker.comments[key]
    assert dict(jobs_per_issue()) == {"ENG-1": 1, "ENG-2": 1, "ENG-3": 1}
