"""What operators do by mistake in the panels: a new mapping typed under a team key that has one,
Clear after a failed save, a double click on Set secret or Save mapping, a long value in a table or
a message, and the icon every page asks for."""
from __future__ import annotations

import json
import re

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.services import mappings, secrets
from aiimpl_core.testing.fakes import add_mapping
from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE

from .conftest import WAIT_MS
from .test_browser import fill_mapping, sign_in

pytestmark = pytest.mark.browser


def _sign_in_again(page, panel: str) -> None:  # noqa: ANN001
    """At the sign-in the end of the admin session led to: the code, and back to ``panel``."""
    page.wait_for_url(re.compile(r"/ui/signin"))
    page.get_by_label("Access code").fill(TEST_ADMIN_CODE)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(f"/ui/{panel}"))


def test_a_new_mapping_under_a_team_key_that_has_one_does_not_replace_it(page, app):
    """POST /api/mappings creates or updates: the form, not editing, replaced the mapping and reset
    every setting not typed (its CPUs, its cap, its execution mode)."""
    add_mapping("OPS", machine_cpus=4, max_in_progress=2)
    sign_in(page)
    page.locator('#mappings-table tr[data-team="OPS"]').wait_for()
    fill_mapping(page, "OPS", "other")
    page.get_by_role("button", name="Save mapping").click()
    said = ("The team OPS has a mapping already: change it with its Edit button (a new one would replace "
            "all its settings).")
    page.locator("#e-teamKey").get_by_text(said).wait_for()
    assert page.get_by_label("Team key").evaluate("(el) => el === document.activeElement")
    db.session.rollback()
    stored = mappings.get("OPS")
    assert (stored["repo"], stored["machineCpus"], stored["maxInProgressAiIssues"]) == ("ops", 4, 2)
    # a key that has none is saved as before, and the message brought into view
    page.get_by_label("Team key").fill("WEB")
    page.get_by_label("Ticketing (JSON object)").fill('{"provider": "fake-tracker"}')
    page.get_by_role("button", name="Save mapping").click()
    page.locator("#flash.ok").get_by_text("Mapping WEB saved").wait_for()
    assert page.locator("#e-teamKey").inner_text() == ""
    # (brought into view once the list is loaded again, after the words are said: waited for)
    in_view = "() => { const r = document.getElementById('flash').getBoundingClientRect(); " \
              "return r.top > -2 && r.bottom <= innerHeight + 2; }"
    page.wait_for_function(in_view, timeout=5000)
    db.session.rollback()
    assert mappings.get("WEB")["repo"] == "other"


def test_clear_takes_the_last_saves_errors_away(page, app):
    sign_in(page)
    fill_mapping(page, "ENG", "api")
    page.get_by_label("Concurrency cap").fill("abc")
    page.get_by_role("button", name="Save mapping").click()
    cap = page.get_by_label("Concurrency cap")
    page.locator("#e-maxInProgressAiIssues").get_by_text("maxInProgressAiIssues must be a positive integer") \
        .wait_for()
    assert cap.get_attribute("aria-invalid") == "true"
    page.get_by_role("button", name="Clear").click()
    page.wait_for_function("() => document.getElementById('e-maxInProgressAiIssues').textContent === ''")
    assert cap.get_attribute("aria-invalid") is None and cap.input_value() == ""
    assert page.locator("#mapping-error").inner_text() == ""


def _holding_posts(page, pattern: str) -> tuple[list, list]:  # noqa: ANN001
    """Hold every POST to ``pattern`` until the test lets it go (``held``), with its body (``posts``)."""
    held: list = []
    posts: list = []

    def hold(route):  # noqa: ANN001, ANN202
        if route.request.method == "POST":
            posts.append(route.request.post_data_json)
            held.append(route)
        else:
            route.continue_()

    page.route(pattern, hold)
    return held, posts


def test_a_double_click_on_set_secret_sets_it_once_and_says_its_name(page, app):
    """The second click, while the first was on its way, sent the value again and then said
    'Secret  set', the form emptied by the first."""
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    page.locator("#secrets-table").get_by_text("No secrets in this scope.").wait_for()
    held, posts = _holding_posts(page, "**/api/global-secrets")
    page.get_by_label("Name").fill("NPM_TOKEN")
    page.get_by_label("Value").fill("s3cr3t-value")
    button = page.get_by_role("button", name="Set secret")
    button.click()
    page.wait_for_function(
        "() => document.querySelector('#secret-form button[type=submit]').dataset.busy === '1'")
    button.click()  # while the first is on its way
    page.evaluate("() => new Promise((done) => setTimeout(done, 200))")
    assert len(posts) == 1 and len(held) == 1
    held.pop().continue_()
    page.locator("#flash.ok").get_by_text("Secret NPM_TOKEN set", exact=True).wait_for()
    assert len(posts) == 1
    assert [s["name"] for s in secrets.list_secrets(secrets.GLOBAL)] == ["NPM_TOKEN"]


def test_a_second_save_of_the_mapping_form_while_the_first_is_on_its_way_sends_nothing(page, app):
    """A double click (or Enter after a click) sent the mapping twice; once the first had created
    it, the second said the new mapping's team key was taken, under a form emptied by the first."""
    sign_in(page)
    page.locator("#mappings-table").get_by_text("No mappings yet").wait_for()
    held, posts = _holding_posts(page, "**/api/mappings")
    fill_mapping(page, "ENG", "api")
    page.get_by_label("Ticketing (JSON object)").fill('{"provider": "fake-tracker"}')
    save = page.get_by_role("button", name="Save mapping")
    with page.expect_request(lambda request: request.method == "POST"):
        save.click()
    save.click()  # while the first is on its way
    page.get_by_label("Default branch").press("Enter")
    page.evaluate("() => new Promise((done) => setTimeout(done, 300))")
    assert len(posts) == 1
    held.pop().continue_()
    page.locator("#flash.ok").get_by_text("Mapping ENG saved", exact=True).wait_for()
    page.locator('#mappings-table tr[data-team="ENG"]').wait_for()
    assert len(posts) == 1
    assert page.locator("#e-teamKey").inner_text() == ""
    assert [m["teamKey"] for m in mappings.list_mappings()] == ["ENG"]


def test_destroying_a_session_keeps_the_focus_in_the_list(page, app):
    page.on("dialog", lambda dialog: dialog.accept())
    listed = [{"id": f"m-{n}", "backend": "fly-machines", "state": "started", "jobId": n,
               "issueKey": f"ENG-{n}"} for n in (1, 2)]
    deleted = []

    def sessions(route):  # noqa: ANN001, ANN202
        if route.request.method == "DELETE":
            gone = route.request.url.rsplit("/", 1)[1]
            deleted.append(gone)
            listed[:] = [s for s in listed if s["id"] != gone]
            route.fulfill(status=200, content_type="application/json", body=json.dumps({"deleted": True}))
        else:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(listed))

    sign_in(page)
    page.route("**/api/sessions**", sessions)
    page.goto("/ui/sessions")
    page.get_by_role("button", name="Destroy session m-1", exact=True).focus()
    page.keyboard.press("Enter")
    page.get_by_text("Session m-1 destroyed").wait_for()
    page.locator('#sessions-table tr[data-id="m-1"]').wait_for(state="detached")
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="Destroy session m-2", exact=True)).to_be_focused(timeout=WAIT_MS)
    assert deleted == ["m-1"]


def test_a_long_value_wraps_in_its_cell_and_the_row_buttons_stay_in_view(page, app):
    add_mapping("T" * 64, repo="r" * 100, default_branch="b" * 100)
    sign_in(page)
    page.locator("#mappings-table tbody tr[data-team]").wait_for()
    fits = """() => { const table = document.querySelector('#mappings-table');
        return [table.scrollWidth, table.parentElement.clientWidth]; }"""
    width, room = page.evaluate(fits)
    assert width <= room, (width, room)
    edit = page.get_by_role("button", name=f"Edit mapping {'T' * 64}")
    box = edit.bounding_box()
    assert box is not None and box["x"] + box["width"] <= page.viewport_size["width"]


def test_a_message_quoting_a_long_word_wraps_in_the_page(page, app):
    """A remote error quoting a URL (GitHub's, a tracker's) or a job's failure with a long path
    widened the page past the screen: the flash, a form's error and the job's failure reason."""
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus

    from .test_dispatch_log import add_job

    word = "https://api.github.com/repos/acme/" + "x" * 300
    add_mapping("ENG")
    job = add_job()
    transition(job, JobStatus.FAILED, error=f"Pushing the branch failed: {word}")
    db.session.commit()
    fits = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    sign_in(page)
    page.route("**/api/mappings/ENG", lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"error": word})))
    page.get_by_role("button", name="Pause mapping ENG").click()
    page.locator("#flash.error").get_by_text(word).wait_for()
    assert page.evaluate(fits)
    page.route("**/api/mappings", lambda route: route.fulfill(
        status=400, content_type="application/json", body=json.dumps({"error": word})))
    fill_mapping(page, "WEB", "web")
    page.get_by_role("button", name="Save mapping").click()
    page.locator("#mapping-error").get_by_text(word).wait_for()
    assert page.evaluate(fits)
    page.goto("/ui/jobs")
    page.get_by_role("button", name=f"Steps of job {job.id}", exact=True).click()
    page.locator("#steps-error").get_by_text(word).wait_for()
    assert page.evaluate(fits)


def test_a_field_with_an_error_shows_the_keyboard_focus_when_it_has_it(page, app):
    """The error's outline took the place of the focus ring on a text area (Extra environment,
    Ticketing): the field the error put the focus in did not look focused."""
    sign_in(page)
    fill_mapping(page, "ENG", "api")
    page.get_by_label("Extra environment (JSON object)").fill("{not json")
    page.get_by_role("button", name="Save mapping").click()
    page.locator("#e-extraEnv").get_by_text("extraEnv must be valid JSON").wait_for()
    outline = "(el) => [document.activeElement === el, getComputedStyle(el).outlineColor]"
    focus_ring = page.get_by_label("Team key").evaluate(
        "(el) => { el.focus(); return getComputedStyle(el).outlineColor; }")
    page.get_by_label("Extra environment (JSON object)").focus()
    assert page.get_by_label("Extra environment (JSON object)").evaluate(outline) == [True, focus_ring]


def test_pages_ask_for_no_icon_they_do_not_have(page, app):
    """Every page asked for /favicon.ico, a 404 in the browser's console."""
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto("/ui/signin")
    page.wait_for_load_state("networkidle")
    sign_in(page)
    page.wait_for_load_state("networkidle")
    assert missing == []
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert page.request.get(icon).status == 200


def test_an_action_the_ended_admin_session_refused_is_said_not_done_once_signed_in_again(page, app):
    """Set secret after the admin session ended (it lasts 12 hours) led to the sign-in and back to
    the panel, where nothing said the secret had not been set (its value is never kept)."""
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    page.locator("#secrets-table").get_by_text("No secrets in this scope.").wait_for()
    page.evaluate("sessionStorage.setItem('aiimpl.token', 'a session that has ended')")
    page.get_by_label("Name").fill("NPM_TOKEN")
    page.get_by_label("Value").fill("s3cr3t-value")
    page.get_by_role("button", name="Set secret").click()
    _sign_in_again(page, "secrets")
    said = ("Signed in again: what you last did was not done (the admin session had ended first). "
            "Do it again.")
    page.locator("#flash.error").get_by_text(said, exact=True).wait_for()
    assert secrets.list_secrets(secrets.GLOBAL) == []
    assert "s3cr3t-value" not in json.dumps(page.evaluate("Object.values(sessionStorage)"))
    # said once; and a page only read when the session ended (a reload) says nothing of the kind
    page.reload()
    page.locator("#secrets-table").get_by_text("No secrets in this scope.").wait_for()
    assert page.locator("#flash").inner_text() == ""
    page.evaluate("sessionStorage.setItem('aiimpl.token', 'a session that has ended')")
    page.reload()
    _sign_in_again(page, "secrets")
    page.locator("#secrets-table").get_by_text("No secrets in this scope.").wait_for()
    assert page.locator("#flash").inner_text() == ""


def test_a_half_filled_mapping_form_survives_a_reload_and_another_panel_but_not_a_sign_out(page, app):
    """A reload (or Back, or a look at another panel) emptied a mapping typed half-way; only the end
    of the admin session kept it. What is put back says so; Clear and a sign-out leave nothing."""
    left = "The form holds what you had typed before leaving the page: save it, or Clear it."
    sign_in(page)
    page.locator("#mappings-table").get_by_text("No mappings yet").wait_for()
    fill_mapping(page, "WEB", "web", "trunk")
    page.reload()
    page.locator("#flash").get_by_text(left, exact=True).wait_for()
    assert page.get_by_label("Team key").input_value() == "WEB"
    assert page.get_by_label("Default branch").input_value() == "trunk"
    page.get_by_role("link", name="Secrets").click()
    page.locator("#secrets-table").get_by_text("No secrets in this scope.").wait_for()
    page.get_by_role("link", name="Projects").click()
    page.locator("#flash").get_by_text(left, exact=True).wait_for()
    assert page.get_by_label("Repository").input_value() == "web"
    # Clear: nothing is kept
    page.get_by_role("button", name="Clear").click()
    page.reload()
    page.locator("#mappings-table").get_by_text("No mappings yet").wait_for()
    assert page.get_by_label("Team key").input_value() == "" and page.locator("#flash").inner_text() == ""
    # a sign-out takes what was typed with it
    fill_mapping(page, "OPS", "ops")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/ui/signin"))
    assert page.evaluate("Object.keys(sessionStorage).filter((k) => k.startsWith('aiimpl.draft'))") == []
    page.get_by_label("Access code").fill(TEST_ADMIN_CODE)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/projects"))
    page.locator("#mappings-table").get_by_text("No mappings yet").wait_for()
    assert page.get_by_label("Team key").input_value() == ""
