"""The Dispatch log in a browser: why a job and its steps failed, times with their zone, older jobs."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.testing.fakes import add_mapping

from .conftest import open_page, shot
from .test_browser import sign_in

pytestmark = pytest.mark.browser

XSS = '<img src=x onerror="window.__xss=1">'


def add_job(issue_key: str = "ENG-7") -> Any:
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping
    from aiimpl_core.services import launch
    from aiimpl_core.types import Phase

    mapping = db.session.query(Mapping).filter_by(team_key="ENG").one()
    choice = launch.BackendChoice("github-actions", "default", False)
    job = launch.create_job(mapping, issue_key, phase=Phase.IMPLEMENTATION, provider="fake-tracker",
                            choice=choice)
    db.session.commit()
    return job


@pytest.fixture
def new_york(browser: Any, live_server: str) -> Iterator[Any]:
    """A page whose browser is in New York, wherever the server is."""
    yield from open_page(browser, live_server, 1366, 800, locale="en-US", timezone_id="America/New_York")


def test_a_failed_job_and_its_failed_step_say_why(page, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import JobStep
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus

    add_mapping("ENG")
    job = add_job()
    db.session.add(JobStep(job_id=job.id, step_id="clone", type="clone", status="failed",
                           started_at="2026-11-29T05:00:00Z", finished_at="2026-11-29T05:00:03Z",
                           detail={"error": f"git clone failed (exit 128): {XSS}"}, source="runner"))
    db.session.add(JobStep(job_id=job.id, step_id="token", type="token", status="succeeded",
                           started_at="2026-11-29T04:59:00Z", detail={"expiresAt": 1}, source="runner"))
    transition(job, JobStatus.RUNNING)
    transition(job, JobStatus.FAILED, error=f"Cloning the repository failed: {XSS}")
    db.session.commit()

    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    # each row's buttons name their job, for a screen reader that reads a button alone
    page.get_by_role("button", name=f"Steps of job {job.id}", exact=True).click()
    steps = page.locator("#job-steps")
    steps.get_by_text(f"Cloning the repository failed: {XSS}", exact=True).wait_for()
    clone = page.locator("#steps-list li").filter(has_text="clone")
    assert clone.locator(".step-error").inner_text() == f"git clone failed (exit 128): {XSS}"
    assert page.locator("#steps-list li").filter(has_text="token").locator(".step-error").count() == 0
    assert page.locator("#job-steps img").count() == 0
    assert page.evaluate("window.__xss") is None
    shot(page, "jobs-failed-steps")


def test_times_say_their_zone_and_a_time_without_one_is_shown_as_given(new_york, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import JobStep

    add_mapping("ENG")
    job = add_job()
    for step_id, started in (("a", "2026-11-29T05:00:00Z"), ("b", "2026-11-29T05:00:00"), ("c", "step 1")):
        db.session.add(JobStep(job_id=job.id, step_id=step_id, type=f"type-{step_id}", status="succeeded",
                               started_at=started, source="runner"))
    db.session.commit()

    page = new_york
    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    created = page.locator(f'#jobs-table tr[data-job="{job.id}"] time')
    assert re.search(r"\b(EST|EDT)$", created.inner_text()), created.inner_text()
    page.get_by_role("button", name="Steps").click()
    items = page.locator("#steps-list li")
    items.filter(has_text="type-a").get_by_text("11/29/2026, 12:00:00 AM EST").wait_for()
    # no offset: which zone is meant is unknown, so not turned into a local time
    assert items.filter(has_text="type-b").locator("time").count() == 0
    assert "2026-11-29T05:00:00" in items.filter(has_text="type-b").inner_text()
    # not a time at all (the browser's parser reads "step 1" as a day of 2001)
    assert items.filter(has_text="type-c").locator("time").count() == 0
    assert "step 1" in items.filter(has_text="type-c").inner_text()


def test_a_rate_limited_job_says_when_it_is_tried_again_and_another_unknown_job_does_not(new_york, app):
    """A dispatch its backend rate-limited stays ``unknown`` with ``launch_after``: its row says so
    after the status, with the time as a <time> (the API's launchAfter), shown in the browser's zone."""
    from datetime import UTC, datetime

    from aiimpl_core.extensions import db
    from aiimpl_core.services import launch

    add_mapping("ENG")
    waiting, other = add_job("ENG-7"), add_job("ENG-8")
    assert launch.defer_launch(waiting, datetime(2026, 12, 8, 5, 30, tzinfo=UTC), "GitHub answered 429")
    db.session.commit()

    page = new_york
    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    row = page.locator(f'#jobs-table tr[data-job="{waiting.id}"]')
    status = row.locator("td").nth(3)
    status.get_by_text("unknown", exact=True).wait_for()
    note = status.locator("span.muted")
    assert note.count() == 1, status.inner_html()  # (a row is drawn whole: no waiting for the note)
    assert note.inner_text() == "rate-limited, tried again 12/8/2026, 12:30:00 AM EST"
    assert note.locator("time").get_attribute("datetime") == "2026-12-08T05:30:00Z"
    # the same status without a wait: no note
    other_status = page.locator(f'#jobs-table tr[data-job="{other.id}"] td').nth(3)
    other_status.get_by_text("unknown", exact=True).wait_for()
    assert "rate-limited" not in other_status.inner_text()
    assert other_status.locator("time").count() == 0


def test_a_dispatch_log_longer_than_a_page_says_so_and_shows_more(page, app):
    add_mapping("ENG")
    for n in range(101):
        add_job(f"ENG-{n + 1}")

    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    page.locator('#jobs-table tr[data-job="101"]').wait_for()
    assert page.locator("#jobs-table tbody tr").count() == 100
    note = page.locator("#jobs-more")
    note.get_by_text("Showing the newest 100 jobs.").wait_for()
    note.get_by_role("button", name="Show more").click()
    page.locator('#jobs-table tr[data-job="1"]').wait_for()
    assert page.locator("#jobs-table tbody tr").count() == 101
    assert note.is_hidden()  # every job is listed


def test_the_blockers_view_shows_each_issues_title(page, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Blocker

    db.session.add(Blocker(issue_key="ENG-3", team_key="ENG", provider="fake-tracker", title=f"Fix {XSS}",
                           reason="no-mapping", message="No mapping for team ENG. Add one in Projects."))
    db.session.commit()

    sign_in(page)
    page.get_by_role("link", name="Blockers").click()
    row = page.locator("#blockers-table tbody tr").filter(has_text="ENG-3")
    row.get_by_text(f"Fix {XSS}", exact=True).wait_for()
    assert page.locator("#blockers-table img").count() == 0
