"""GitHub failures that concern part of the work: one repository's run listing, or a rate limit.

* A repository whose run listing fails (an error, or an answer that is not JSON) is left out of
  ``poll_runs`` for that cycle: its jobs keep their status (they are not ended ``run_not_found``
  while their runs go on), and the other repositories' jobs are linked.
* A rate-limited dispatch keeps GitHub's ``Retry-After`` (or the primary limit's reset time), so
  the dispatcher backs off for that long and the other issues wait instead of failing one by one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.orm import Mapping as MappingRow
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.fakes import FakeTracker

from .conftest import github_config


@pytest.fixture
def aiimpl_config(gh: FakeGitHub) -> dict[str, Any]:
    return github_config(gh)


def _add_mapping(app: Any, team_key: str, repo: str) -> MappingRow:
    row = MappingRow(
        team_key=team_key,
        owner="acme",
        repo=repo,
        default_branch="main",
        execution_mode="github-actions",
        ticketing={"provider": "fake-tracker"},
    )
    db.session.add(row)
    db.session.commit()
    app.extensions["aiimpl"].runner("github-actions").sync_workflows(row.view())
    return row


@pytest.fixture
def mappings(app: Any, gh: FakeGitHub) -> Iterator[None]:
    gh.add_repo("acme", "web")
    _add_mapping(app, "ENG", "api")
    _add_mapping(app, "WEB", "web")
    yield


def jobs() -> dict[str, Job]:
    db.session.expire_all()
    return {j.issue_key: j for j in db.session.scalars(db.select(Job)).all()}


@pytest.mark.parametrize("failure", ["rate-limited", "not-json"])
def test_jobs_of_a_repository_whose_listing_failed_keep_their_status(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mappings: None, failure: str
) -> None:
    # runs linked by name only (a server without return_run_details): a job whose run a missed
    # listing does not show must not end run_not_found
    gh.run_details = "ignored"
    tracker.add("ENG-1")
    tracker.add("WEB-1")
    run_cycle(reconcile=False)
    dispatched = jobs()
    web_run = gh.run_named(f"job-{dispatched['WEB-1'].id}")
    gh.advance_run(web_run.id, "in_progress")
    if failure == "not-json":  # a proxy's page answered 200
        gh.garble_next("GET", r"/repos/acme/web/actions/runs$", times=100)
    else:
        gh.fail_next(
            "GET",
            r"/repos/acme/web/actions/runs$",
            403,
            "You have exceeded a secondary rate limit",
            times=100,
            headers={"retry-after": "60"},
        )
    db.session.execute(db.update(Job).values(dispatched_at=utcnow() - timedelta(minutes=11)))
    db.session.commit()

    report = reconcile()

    ended = jobs()
    assert ended["ENG-1"].run_id  # acme/api was listed: its run is linked
    assert (ended["WEB-1"].status, ended["WEB-1"].run_id) == ("dispatched", None)
    assert report.endings == {} and tracker.comments.get("WEB-1", []) == []
    assert report.polled == {"github-actions": 2}, report.skipped

    # the listing works again: the run is linked and running
    gh.failures.clear()
    gh.garbles.clear()
    reconcile()
    assert (jobs()["WEB-1"].status, jobs()["WEB-1"].run_id) == ("running", str(web_run.id))


@pytest.mark.parametrize(
    ("status", "headers", "at_least"),
    [
        (403, {"retry-after": "120"}, 110),  # secondary rate limit
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "+1800"}, 1700),  # primary
        (429, {"retry-after": "600"}, 590),
        # a secondary rate limit that says no time to come back: a minute, as GitHub asks (every
        # issue of the cycle was dispatched and failed in turn, no back-off set)
        (403, {}, 50),
    ],
)
def test_a_rate_limited_dispatch_backs_off_as_long_as_github_asked(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mappings: None, status: int, headers: dict, at_least: int
) -> None:
    headers = {k: str(int(time.time()) + 1800) if v == "+1800" else v for k, v in headers.items()}
    gh.fail_next("POST", r"/dispatches$", status, "API rate limit exceeded", times=10, headers=headers)
    for key in ("ENG-1", "ENG-2", "ENG-3"):
        tracker.add(key)
    started = utcnow()

    run_cycle(reconcile=False)

    backoff = poller.backoff_of("runner", "github-actions")
    assert backoff is not None and backoff.until >= started + timedelta(seconds=at_least)
    statuses = [j.status for j in jobs().values()]
    assert statuses.count("failed") <= 1, statuses


@pytest.mark.parametrize(("status", "message"), [(404, "Not Found"), (403, "Actions is disabled")])
def test_a_repository_github_refuses_does_not_hold_the_dispatch_of_the_others(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mappings: None, status: int, message: str
) -> None:
    """Every in-flight job in one repository GitHub now refuses (renamed, deleted, the App removed
    from it, Actions turned off): the failed listing backed the whole backend off, and no issue of
    any other repository was dispatched until those jobs ran out, some 70 minutes."""
    tracker.add("WEB-1")
    run_cycle(reconcile=False)
    gh.fail_next("GET", r"/repos/acme/web/actions/runs$", status, message, times=100)

    report = reconcile()

    assert report.skipped == {} and poller.backoff_of("runner", "github-actions") is None
    assert jobs()["WEB-1"].status == "dispatched"  # (it keeps its status, as on any failed listing)
    tracker.add("ENG-1")
    run_cycle()
    assert jobs()["ENG-1"].status == "dispatched"
    # an outage of GitHub's still backs the backend off
    gh.failures.clear()
    gh.fail_next("GET", r"/actions/runs$", 502, "Bad Gateway", times=100)
    report = reconcile()
    assert "github-actions" in report.skipped and poller.backoff_of("runner", "github-actions") is not None


def test_a_dispatch_github_rate_limited_is_made_once_the_wait_has_passed(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mappings: None
) -> None:
    """GitHub's secondary rate limit on workflow dispatches (many issues triggered at once): the
    job waits, unknown, with no word on the ticket, and the cycle after GitHub's wait makes its run
    (one run in all), instead of ending it failed and the issue at Planning failed."""
    gh.fail_next("POST", r"/dispatches$", 403, "You have exceeded a secondary rate limit",
                 headers={"retry-after": "60"})
    tracker.add("ENG-1")

    report = run_cycle(reconcile=False)

    job = jobs()["ENG-1"]
    assert (job.status, job.run_id, job.launch_after is not None) == ("unknown", None, True), report.errors
    assert gh.runs == {} and tracker.comments.get("ENG-1", []) == []

    report = run_cycle(now=utcnow() + timedelta(seconds=65), reconcile=False)

    job = jobs()["ENG-1"]
    assert (job.status, job.launch_after) == ("dispatched", None), report.errors
    [run] = gh.runs.values()
    assert job.run_id == str(run.id) and f"job-{job.id}" in run.title
    assert tracker.comments.get("ENG-1", []) == []
