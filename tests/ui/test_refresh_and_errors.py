"""The panels that refresh themselves, as an operator at the keyboard and a struggling server see
them: a refresh that changes nothing leaves the page alone, a slow server is not sent a refresh on
top of one on its way, a list that cannot be read says so, no answer at all is said in words; row
buttons name their row; a form nothing was typed in is not said to be put back after a sign-in."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from aiimpl_core.testing.fakes import add_mapping, queue_outbox_item
from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE

from .test_browser import sign_in
from .test_dispatch_log import add_job

pytestmark = pytest.mark.browser

#: the page's refresh interval and how long a request may go unanswered (static/app.js)
REFRESH_MS = 3000
ANSWER_MS = 30_000


def settle(page: Any) -> None:
    """Let the page read what has come in (the page's clock may be stopped: a real wait)."""
    page.wait_for_timeout(200)


def click_with_its_answer_lost(page: Any, url: str, method: str, button: Any) -> list[Any]:
    """Click ``button``, whose ``method`` request to ``url`` reaches the server (which does what it
    asks) while its answer never reaches the page; answers the requests so held once the first has
    reached the server, the button busy meanwhile."""
    from .conftest import WAIT_MS

    lost: list[Any] = []

    def answer_lost(route: Any) -> None:
        if route.request.method != method:
            route.continue_()
            return
        route.fetch()
        lost.append(route)

    page.route(url, answer_lost)
    button.click()
    for _ in range(WAIT_MS // 100):
        if lost:
            break
        settle(page)
    assert lost and button.get_attribute("aria-busy") == "true"
    return lost


def focused_name(page: Any) -> str | None:
    return page.evaluate("document.activeElement && document.activeElement.getAttribute('aria-label')")


def test_a_refresh_that_changes_nothing_keeps_the_focus_and_a_selection(page, app):
    """A keyboard user on a row's button, or an operator selecting an error to copy it, is not
    thrown back to the top of the page by the refresh every few seconds."""
    add_mapping("ENG")
    job = add_job()
    dead = queue_outbox_item("ENG-7", state="dead")
    page.clock.install()
    sign_in(page)

    page.get_by_role("link", name="Dispatch log").click()
    steps = page.get_by_role("button", name=f"Steps of job {job.id}", exact=True)
    steps.focus()
    for _ in range(2):
        page.clock.run_for(REFRESH_MS)
        page.wait_for_load_state("networkidle")
        settle(page)
    assert focused_name(page) == f"Steps of job {job.id}"
    page.keyboard.press("Enter")  # and the focused button still acts
    page.locator("#steps-list").get_by_text("No steps reported yet.").wait_for()

    page.get_by_role("link", name="Outbox").click()
    error = page.locator(f'#outbox-table tr[data-id="{dead}"] td').filter(has_text="comment rejected")
    error.evaluate("(td) => getSelection().selectAllChildren(td)")
    for _ in range(2):
        page.clock.run_for(REFRESH_MS)
        page.wait_for_load_state("networkidle")
        settle(page)
    assert page.evaluate("getSelection().toString()").endswith("comment rejected")


def test_a_refresh_keeps_a_selection_in_the_open_jobs_steps_and_its_failure(page, app):
    """The open job's steps and failure reason were written anew with each refresh: an operator
    selecting a step's error to copy it lost the selection every 3 seconds."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import JobStep
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus

    add_mapping("ENG")
    job = add_job()
    db.session.add(JobStep(job_id=job.id, step_id="clone", type="clone", status="failed",
                           started_at="2026-11-29T05:00:00Z", detail={"error": "git clone failed (exit 128)"},
                           source="runner"))
    transition(job, JobStatus.FAILED, error="Cloning the repository failed")
    db.session.commit()
    page.clock.install()
    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    page.get_by_role("button", name=f"Steps of job {job.id}", exact=True).click()
    for selected, text in (("#steps-list .step-error", "git clone failed (exit 128)"),
                           ("#steps-error", "Cloning the repository failed")):
        page.locator(selected).evaluate("(el) => getSelection().selectAllChildren(el)")
        for _ in range(2):
            with page.expect_request(f"**/api/jobs/{job.id}/steps"):
                page.clock.run_for(REFRESH_MS)
            page.wait_for_load_state("networkidle")
            settle(page)
        assert page.evaluate("getSelection().toString()") == text


def test_a_row_that_changed_is_shown_anew_and_the_others_keep_the_focus(page, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus

    add_mapping("ENG")
    first, second = add_job("ENG-1"), add_job("ENG-2")
    page.clock.install()
    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    page.get_by_role("button", name=f"Steps of job {first.id}", exact=True).focus()
    transition(second, JobStatus.RUNNING)
    third = add_job("ENG-3")  # a new job comes first
    db.session.commit()
    page.clock.run_for(REFRESH_MS)
    row = page.locator(f'#jobs-table tr[data-job="{second.id}"]')
    row.get_by_text("running", exact=True).wait_for()
    rows = page.locator("#jobs-table tbody tr")
    assert rows.evaluate_all("(rows) => rows.map((r) => r.dataset.job)") == [
        str(third.id), str(second.id), str(first.id)]
    assert focused_name(page) == f"Steps of job {first.id}"


def test_a_slow_server_is_not_sent_a_refresh_while_one_is_on_its_way(page, app):
    """Every open panel asked again every three seconds whether or not the last answer had come:
    a server slow to answer got more and more requests from each. One at a time; and one that
    has gone unanswered long is said so, and asked again."""
    page.clock.install()
    sign_in(page)
    held: list[Any] = []
    page.route("**/api/jobs?*", lambda route: held.append(route))
    page.get_by_role("link", name="Dispatch log").click()
    page.wait_for_url(re.compile(r"/ui/jobs"))
    page.wait_for_function("() => document.body.dataset.panel === 'jobs'")
    settle(page)
    for _ in range(4):
        page.clock.run_for(REFRESH_MS)
        settle(page)
    assert len(held) == 1
    assert page.locator("#jobs-table tbody").inner_text() == "Loading…"

    page.clock.run_for(ANSWER_MS)
    page.locator("#flash.error").get_by_text(
        "Could not refresh: The server did not answer within 30 s", exact=True).wait_for()
    settle(page)
    assert len(held) == 2  # asked once more, not once per interval
    for route in held:
        route.fulfill(status=200, content_type="application/json", body="[]")
    page.unroute("**/api/jobs?*")
    page.locator("#jobs-table").get_by_text("No jobs yet.").wait_for()
    page.locator("#flash.error").wait_for(state="detached")
    page.clock.run_for(REFRESH_MS)  # and the refreshes go on
    page.wait_for_load_state("networkidle")


def test_an_action_the_server_never_answers_is_given_up_and_said_it_may_have_been_done(page, app):
    """A button whose request got no answer stayed busy for good, taking no click again. It is given
    up after ANSWER_MS; the server may have done it all the same (here it did, its answer lost on the
    way back), so that is what is said, not that it failed."""
    from playwright.sync_api import expect

    from aiimpl_core.extensions import db
    from aiimpl_core.services import mappings

    add_mapping("ENG")
    page.clock.install()
    sign_in(page)
    pause = page.get_by_role("button", name="Pause mapping ENG")
    click_with_its_answer_lost(page, "**/api/mappings/ENG", "PATCH", pause)  # (the server pauses it)
    page.clock.run_for(ANSWER_MS)
    page.locator("#flash.error").get_by_text(
        "The server did not answer within 30 s: this may have been done all the same. "
        "Refresh the page to see whether it was.", exact=True).wait_for()
    expect(pause).not_to_have_attribute("aria-busy", "true")
    db.session.rollback()  # (a snapshot of its own)
    assert mappings.get("ENG")["paused"] is True

    page.unroute("**/api/mappings/ENG")
    pause.click()  # and the button takes a click again
    page.locator("#flash.ok").get_by_text("ENG paused", exact=True).wait_for()
    page.get_by_role("button", name="Resume mapping ENG").wait_for()


def test_a_sign_out_the_server_never_answers_is_given_up_and_keeps_the_session_here(page, app):
    """Sign-out's request, unanswered, left the page waiting for good with no word, and took a
    second click meanwhile. It is given up after ANSWER_MS: the session is kept here and that is
    said; the server ended it all the same (the answer was lost), which the next try finds."""
    from playwright.sync_api import expect

    page.clock.install()
    sign_in(page)
    held = page.evaluate("sessionStorage.getItem('aiimpl.token')")
    sign_out = page.get_by_role("button", name="Sign out")
    # (the server ends the session)
    lost = click_with_its_answer_lost(page, "**/api/auth", "DELETE", sign_out)
    sign_out.click()  # (taken by nothing while the first is on its way)
    settle(page)
    assert len(lost) == 1
    page.clock.run_for(ANSWER_MS)
    page.locator("#flash.error").get_by_text(
        "Not signed out: the server did not answer within 30 s. Try again.", exact=True).wait_for()
    expect(sign_out).not_to_have_attribute("aria-busy", "true")
    assert page.evaluate("sessionStorage.getItem('aiimpl.token')") == held

    page.unroute("**/api/auth")
    sign_out.click()  # the server ended it already: its 401 signs the page out
    page.wait_for_url(re.compile(r"/ui/signin"))
    assert page.evaluate("sessionStorage.getItem('aiimpl.token')") is None


@pytest.mark.parametrize("panel,table", [("sessions", "#sessions-table"), ("jobs", "#jobs-table"),
                                         ("outbox", "#outbox-table")])
def test_a_list_whose_first_refresh_fails_says_why_in_place_of_loading(page, app, panel, table):
    sign_in(page)
    page.route(re.compile(rf".*/api/{panel}(\?.*)?$"), lambda route: route.fulfill(
        status=503, content_type="application/json", body=json.dumps({"error": "Fly API unavailable"})))
    page.goto(f"/ui/{panel}")
    page.locator("#flash.error").get_by_text("Could not refresh: Fly API unavailable").wait_for()
    page.locator(table).get_by_text("Could not load: Fly API unavailable").wait_for()
    assert "Loading…" not in page.locator(table).inner_text()


def test_no_answer_at_all_is_said_in_words(page, app):
    sign_in(page)
    page.route("**/api/jobs?*", lambda route: route.abort("connectionrefused"))
    page.goto("/ui/jobs")
    page.locator("#flash.error").get_by_text(
        "Could not refresh: The server could not be reached", exact=True).wait_for()
    page.locator("#jobs-table").get_by_text("Could not load: The server could not be reached").wait_for()

    page.goto("/ui/signin")
    page.route("**/api/auth", lambda route: route.abort("connectionrefused"))
    page.get_by_label("Access code").fill(TEST_ADMIN_CODE)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#signin-error").get_by_text("The server could not be reached", exact=True).wait_for()


def test_a_form_nothing_was_typed_in_is_not_said_to_be_put_back(page, app):
    """A session that ended while the Projects panel was open, with nothing typed in its form: the
    sign-in leads back to an empty form, without "the form holds what you had typed"."""
    sign_in(page)
    page.locator("#mappings-table").get_by_text("No mappings yet").wait_for()
    page.evaluate("sessionStorage.setItem('aiimpl.token', 'a session that has ended')")
    page.reload()
    page.wait_for_url(re.compile(r"/ui/signin"))
    page.get_by_label("Access code").fill(TEST_ADMIN_CODE)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/projects"))
    page.locator("#mappings-table").get_by_text("No mappings yet").wait_for()
    assert "Signed in again" not in page.locator("#flash").inner_text()
    assert page.evaluate("Object.keys(sessionStorage).filter((k) => k.startsWith('aiimpl.draft'))") == []


def test_every_row_button_names_its_row(page, app):
    """A screen reader that reads a button alone (its list of buttons, tabbing) hears which row it
    acts on, as the Dispatch log's buttons say their job."""
    from aiimpl_core.services import secrets

    add_mapping("ENG")
    add_mapping("OPS", paused=True)
    dead = queue_outbox_item("ENG-1", state="dead")
    secrets.set_secret(secrets.GLOBAL, "NPM_TOKEN", "global-value")
    sign_in(page)
    session = {"id": "m-1", "backend": "fly-machines", "state": "started", "jobId": 1, "issueKey": "ENG-1"}
    page.route("**/api/sessions", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps([session])))
    names = {
        "projects": ["Set cap of ENG", "Edit mapping ENG", "Pause mapping ENG", "Sync workflows of ENG",
                     "Delete mapping ENG", "Resume mapping OPS"],
        "outbox": [f"Retry item {dead}"],
        "secrets": ["Delete secret NPM_TOKEN"],
        "sessions": ["Destroy session m-1"],
    }
    for panel, buttons in names.items():
        page.goto(f"/ui/{panel}")
        for name in buttons:
            page.get_by_role("button", name=name, exact=True).wait_for()


def test_a_jobs_steps_take_the_focus_when_asked_for(page, app):
    """Below a list of a hundred jobs: a keyboard user who opens a job's steps is taken to them."""
    add_mapping("ENG")
    job = add_job()
    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    page.get_by_role("button", name=f"Steps of job {job.id}", exact=True).focus()
    page.keyboard.press("Enter")
    page.locator("#steps-list").get_by_text("No steps reported yet.").wait_for()
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'steps-h'")
    assert page.evaluate("document.activeElement.textContent") == f"Steps of job {job.id}"


def test_a_second_click_on_sync_workflows_while_the_first_is_on_its_way_sends_nothing(page, app):
    add_mapping("ENG")
    sign_in(page)
    held: list[Any] = []
    page.route("**/api/mappings/ENG/sync-workflows", lambda route: held.append(route))
    sync = page.get_by_role("button", name="Sync workflows of ENG", exact=True)
    sync.focus()
    with page.expect_request("**/sync-workflows"):
        sync.click()
    # it says it is busy (a screen reader too): the clicks meanwhile are not taken
    assert sync.get_attribute("aria-busy") == "true"
    assert sync.evaluate("(button) => getComputedStyle(button).cursor") == "progress"
    sync.click()
    page.keyboard.press("Enter")
    settle(page)
    assert len(held) == 1
    assert focused_name(page) == "Sync workflows of ENG"  # the button keeps the focus meanwhile
    held.pop().continue_()
    page.locator("#flash.ok").get_by_text("Workflows of ENG synced").wait_for()
    page.unroute("**/api/mappings/ENG/sync-workflows")
    # once the list is read again, which ends the action (on a busy machine, a while after the flash)
    sync.and_(page.locator(":not([data-busy]):not([aria-busy])")).wait_for()
    with page.expect_request("**/sync-workflows"):  # and it can be clicked again
        sync.click()


def test_the_secrets_panel_says_when_the_teams_cannot_be_listed(page, app):
    add_mapping("ENG")
    sign_in(page)
    page.route("**/api/mappings", lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"error": "Internal server error"})))
    page.goto("/ui/secrets")
    page.locator("#flash.error").get_by_text(
        "Could not list the teams (only global secrets can be chosen): Internal server error").wait_for()
