"""The admin UI in a real browser: sign-in, mappings, pausing, a job moving, secrets, every panel."""
from __future__ import annotations

import re

import pytest

from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE
from aiimpl_core.ui.views import PANELS

from .conftest import shot

pytestmark = pytest.mark.browser


def sign_in(page, code=TEST_ADMIN_CODE):  # noqa: ANN001, ANN201
    page.goto("/ui/projects")
    page.wait_for_url(re.compile(r"/ui/signin"))
    page.get_by_label("Access code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/projects"))


def save_after_the_session_ended(page) -> None:  # noqa: ANN001
    """The admin session ends while the mapping form is filled in: Save leads to the sign-in, and
    the code signs in again, back to the Projects panel."""
    page.evaluate("sessionStorage.setItem('aiimpl.token', 'a session that has ended')")
    page.get_by_role("button", name="Save mapping").click()
    page.wait_for_url(re.compile(r"/ui/signin"))
    page.get_by_label("Access code").fill(TEST_ADMIN_CODE)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/projects"))


def fill_mapping(page, team: str, repo: str, branch: str = "main") -> None:  # noqa: ANN001
    """Type a mapping's required fields into the Projects form (owner ``acme``)."""
    page.get_by_label("Team key").fill(team)
    page.get_by_label("GitHub owner").fill("acme")
    page.get_by_label("Repository").fill(repo)
    page.get_by_label("Default branch").fill(branch)


def test_sign_in_refuses_a_wrong_code_then_accepts_the_right_one(page):
    page.goto("/ui/signin")
    shot(page, "signin")
    page.get_by_label("Access code").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Invalid access code").wait_for()
    # the focus is back in the field, to type the code again (it stayed on the button)
    page.wait_for_function("() => document.activeElement && document.activeElement.name === 'code'")
    page.keyboard.type(TEST_ADMIN_CODE)  # (the wrong code selected: typing replaces it)
    assert page.get_by_label("Access code").input_value() == TEST_ADMIN_CODE
    page.keyboard.press("Enter")  # keyboard use works
    page.wait_for_url(re.compile(r"/ui/projects"))


def test_sign_in_too_soon_after_wrong_codes_says_when_to_try_again(page, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from aiimpl_core.auth import admin

    now = [datetime.now(UTC)]
    monkeypatch.setattr(admin, "clock", lambda: now[0])  # the server's clock stands still
    page.goto("/ui/signin")
    for n in range(admin.THROTTLE_AFTER + 1):
        page.get_by_label("Access code").fill(TEST_ADMIN_CODE if n == admin.THROTTLE_AFTER else "wrong")
        page.get_by_role("button", name="Sign in").click()
        if n < admin.THROTTLE_AFTER:
            page.locator("#signin-error").get_by_text("Invalid access code", exact=True).wait_for()
            page.evaluate("document.getElementById('signin-error').textContent = ''")
    page.get_by_text("Invalid access code: too many wrong codes, try again in 1 s").wait_for()
    now[0] += timedelta(seconds=1)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/projects"))


def test_the_sign_in_says_the_admin_session_ended_when_it_did(page):
    """A panel open when the session ended went to the sign-in without a word: the operator
    watching the dispatch log saw it go away unexplained."""
    page.goto("/ui/signin")
    assert page.locator("#flash").inner_text() == ""  # (nobody was signed in)
    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    page.evaluate("sessionStorage.setItem('aiimpl.token', 'a session that has ended')")
    page.wait_for_url(re.compile(r"/ui/signin\?next=%2Fui%2Fjobs"))  # (its next refresh)
    page.locator("#flash.info").get_by_text("The admin session has ended: sign in again to go on.").wait_for()
    page.get_by_label("Access code").fill(TEST_ADMIN_CODE)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/jobs"))
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/ui/signin$"))
    assert page.locator("#flash").inner_text() == ""  # (signed out, not ended)


def test_create_mapping_with_validation_error_then_success_then_pause(page):
    sign_in(page)
    fill_mapping(page, "ENG", "api")
    page.get_by_label("Machine CPUs").fill("0")
    page.get_by_role("button", name="Save mapping").click()
    error = page.locator('.field-error[data-for="machineCpus"]')
    error.get_by_text("machineCpus must be a positive integer").wait_for()
    assert page.get_by_label("Machine CPUs").get_attribute("aria-invalid") == "true"
    shot(page, "projects-validation-error")

    page.get_by_label("Machine CPUs").fill("2")
    page.get_by_label("Ticketing (JSON object)").fill('{"provider": "fake-tracker"}')
    page.get_by_role("button", name="Save mapping").click()
    row = page.locator('#mappings-table tr[data-team="ENG"]')
    row.wait_for()
    assert "acme/api" in row.inner_text()

    row.get_by_role("button", name="Pause").click()
    row.get_by_text("paused").wait_for()
    row.get_by_role("button", name="Resume").wait_for()
    shot(page, "projects")


def test_job_moves_through_statuses_without_reload(page, app):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping
    from aiimpl_core.services import launch
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus, Phase

    mapping = Mapping(team_key="ENG", owner="acme", repo="api", default_branch="main",
                      execution_mode="github-actions", provider="anthropic", branch_prefix="ai/")
    db.session.add(mapping)
    db.session.commit()
    choice = launch.BackendChoice("github-actions", "default", False)
    job = launch.create_job(
        mapping, "ENG-7", phase=Phase.IMPLEMENTATION, provider="fake-tracker", choice=choice
    )
    db.session.commit()
    from aiimpl_core.orm import JobStep

    for n, (kind, status) in enumerate(
        [("clone", "succeeded"), ("setup", "succeeded"), ("agent", "running")]
    ):
        db.session.add(JobStep(job_id=job.id, step_id=f"s{n}", type=kind, status=status,
                               started_at=f"2026-11-29T05:0{n}:00Z", source="runner"))
    db.session.commit()

    page.clock.install()  # the page's timers run when the test moves its clock on
    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    row = page.locator(f'#jobs-table tr[data-job="{job.id}"]')
    row.get_by_text("unknown").wait_for()
    for status in (JobStatus.DISPATCHED, JobStatus.RUNNING):
        transition(job, status)
        db.session.commit()
        page.clock.run_for(3000)  # the next refresh
        row.get_by_text(status.value, exact=True).wait_for()
    transition(job, JobStatus.COMPLETED, pr_url="https://github.com/acme/api/pull/42", pr_number=42)
    db.session.commit()
    page.clock.run_for(3000)
    row.get_by_text("completed").wait_for()
    row.get_by_role("link", name="#42").wait_for()
    row.get_by_role("button", name="Steps").click()
    page.locator("#steps-list").get_by_text("agent").wait_for()
    assert page.locator("#steps-list li").count() == 3
    shot(page, "jobs")


def test_set_and_delete_a_secret(page):
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    page.get_by_label("Name").fill("NPM_TOKEN")
    page.get_by_label("Value").fill("s3cr3t-value")
    page.get_by_role("button", name="Set secret").click()
    row = page.locator('#secrets-table tr[data-name="NPM_TOKEN"]')
    row.wait_for()
    assert "s3cr3t-value" not in page.content()
    shot(page, "secrets")
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Delete").click()
    row.wait_for(state="detached")


@pytest.mark.parametrize("panel", [*(slug for slug, _ in PANELS), "jira"])
def test_every_panel_renders(page, panel):
    if panel == "jira":
        pytest.importorskip("aiimpl_jira")
    sign_in(page)
    page.goto(f"/ui/{panel}")
    page.locator("main h1").wait_for()
    page.wait_for_load_state("networkidle")
    assert page.locator("#flash.error").count() == 0, page.locator("#flash").inner_text()
    shot(page, f"panel-{panel}")


def test_cancel_a_job_from_the_dispatch_log(page, app, tracker):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping
    from aiimpl_core.services import launch
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus, Phase

    tracker.add("ENG-8")
    mapping = Mapping(team_key="ENG", owner="acme", repo="api", default_branch="main",
                      execution_mode="github-actions", provider="anthropic", branch_prefix="ai/")
    db.session.add(mapping)
    db.session.commit()
    choice = launch.BackendChoice("github-actions", "default", False)
    job = launch.create_job(mapping, "ENG-8", phase=Phase.IMPLEMENTATION, provider="fake-tracker",
                            choice=choice)
    db.session.commit()
    transition(job, JobStatus.RUNNING)
    db.session.commit()

    sign_in(page)
    page.get_by_role("link", name="Dispatch log").click()
    row = page.locator(f'#jobs-table tr[data-job="{job.id}"]')
    row.get_by_text("running", exact=True).wait_for()
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Cancel").click()
    page.get_by_text(f"Job {job.id} cancelled").wait_for()
    row.get_by_text("failed", exact=True).wait_for()
    assert row.get_by_role("button", name="Cancel").count() == 0  # an ended job offers none
    assert tracker.comments["ENG-8"][-1] == "⚠️ Implementation failed: cancelled by an operator"


def test_a_refresh_that_fails_says_so_and_the_next_good_one_clears_it(page, monkeypatch):
    """A panel's refresh answered with an error (the database down, say) shows why instead of
    keeping stale rows silently; once the server answers again, the message goes away."""
    from aiimpl_core.api import admin_jobs

    sign_in(page)
    failing = {"on": True}
    latest = admin_jobs._latest_jobs

    def flaky(keys):  # noqa: ANN001, ANN202
        if failing["on"]:
            raise RuntimeError("database unavailable")
        return latest(keys)

    monkeypatch.setattr(admin_jobs, "_latest_jobs", flaky)
    page.goto("/ui/issues")
    page.locator("#flash.error").get_by_text("Could not refresh: Internal server error").wait_for()
    failing["on"] = False
    page.locator("#flash.error").wait_for(state="detached")
    assert page.locator("#flash").inner_text() == ""


def test_sign_out_ends_the_session_on_the_server(page):
    sign_in(page)
    held = page.evaluate("sessionStorage.getItem('aiimpl.token')")
    bearer = {"Authorization": f"Bearer {held}"}
    assert page.request.get("/api/mappings", headers=bearer).status == 200
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/ui/signin"))
    assert page.evaluate("sessionStorage.getItem('aiimpl.token')") is None
    # a copy of the token kept elsewhere is refused from now on
    refused = page.request.get("/api/mappings", headers=bearer)
    assert (refused.status, refused.json()) == (401, {"error": "Unauthorized"})


def test_a_sign_out_the_server_did_not_take_keeps_the_session_and_says_so(page):
    sign_in(page)
    held = page.evaluate("sessionStorage.getItem('aiimpl.token')")
    def unreachable(route):  # noqa: ANN001, ANN202
        return route.abort() if route.request.method == "DELETE" else route.continue_()

    page.route("**/api/auth", unreachable)
    page.get_by_role("button", name="Sign out").click()
    page.locator("#flash.error").get_by_text("Not signed out: the server could not be reached").wait_for()
    assert page.evaluate("sessionStorage.getItem('aiimpl.token')") == held
    assert re.search(r"/ui/projects", page.url)
    page.unroute("**/api/auth")
    page.get_by_role("button", name="Sign out").click()  # once it is reached, it takes
    page.wait_for_url(re.compile(r"/ui/signin"))
    assert page.request.get("/api/mappings", headers={"Authorization": f"Bearer {held}"}).status == 401
