"""The Issues and Blockers views: cut to the API's limit, and saying so, as the Dispatch log is."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiimpl_core.schemas.admin import LIST_DEFAULT, LIST_MAX

from .test_browser import sign_in

APP_JS = Path(__file__).resolve().parents[2] / "aiimpl_core" / "ui" / "static" / "app.js"


def test_the_ui_asks_for_no_more_rows_than_the_api_answers() -> None:
    source = APP_JS.read_text()
    for name in ("JOBS_MAX", "ISSUES_MAX", "BLOCKERS_MAX", "OUTBOX_MAX"):
        assert re.search(rf"\bconst {name} = {LIST_MAX};", source), name
    assert re.search(rf"\bconst PAGE_ROWS = {LIST_DEFAULT};", source)


@pytest.mark.browser
def test_the_issues_view_lists_the_most_recently_updated_and_says_when_it_is_cut_short(page, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import TrackedIssue

    start = datetime(2026, 1, 1, tzinfo=UTC)
    db.session.add_all(
        TrackedIssue(issue_key=f"ENG-{n}", team_key="ENG", provider="fake-tracker", title=f"Issue {n}",
                     updated_at=start + timedelta(minutes=n))
        for n in range(1, 102)
    )
    db.session.commit()

    sign_in(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/issues" in r.url else None)
    page.get_by_role("link", name="Issues").click()
    rows = page.locator("#issues-table tbody tr")
    rows.first.get_by_text("ENG-101").wait_for()
    assert rows.count() == 100 and page.locator("#issues-table").get_by_text("ENG-1", exact=True).count() == 0
    assert requests and all(url.endswith("/api/issues?limit=100") for url in requests), requests
    note = page.locator("#issues-more")
    note.get_by_text("Showing the 100 most recently updated issues.").wait_for()
    note.get_by_role("button", name="Show more").click()
    page.locator("#issues-table").get_by_text("ENG-1", exact=True).wait_for()
    assert rows.count() == 101
    assert note.is_hidden()  # every issue is listed


@pytest.mark.browser
def test_a_short_issues_list_says_nothing_of_a_cut(page, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import TrackedIssue

    db.session.add(TrackedIssue(issue_key="ENG-1", team_key="ENG", provider="fake-tracker", title="One"))
    db.session.commit()
    sign_in(page)
    page.get_by_role("link", name="Issues").click()
    page.locator("#issues-table").get_by_text("ENG-1", exact=True).wait_for()
    assert page.locator("#issues-more").is_hidden()


@pytest.mark.browser
def test_the_blockers_view_lists_those_blocked_longest_and_says_when_it_is_cut_short(page, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Blocker

    since = datetime(2026, 1, 1, tzinfo=UTC)
    db.session.add_all(
        Blocker(issue_key=f"ENG-{n}", team_key="ENG", provider="fake-tracker", reason="concurrency",
                message="at concurrency cap (2/2). Waiting for a slot.",
                first_seen_at=since - timedelta(minutes=n), last_seen_at=since)
        for n in range(1, 102)
    )
    db.session.commit()

    sign_in(page)
    page.get_by_role("link", name="Blockers").click()
    rows = page.locator("#blockers-table tbody tr")
    rows.first.get_by_text("ENG-101").wait_for()
    assert rows.count() == 100 and rows.filter(has_text=re.compile(r"^ENG-1\b")).count() == 0
    note = page.locator("#blockers-more")
    note.get_by_text("Showing the 100 issues blocked longest.").wait_for()
    note.get_by_role("button", name="Show more").click()
    rows.nth(100).wait_for()
    assert rows.count() == 101
    assert note.is_hidden()
