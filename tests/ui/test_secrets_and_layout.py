"""The Secrets panel when a list cannot be read, and every panel on a narrow screen."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.testing.fakes import add_mapping
from aiimpl_core.ui.views import PANELS

from .conftest import open_page, shot
from .test_browser import sign_in

pytestmark = pytest.mark.browser


def test_a_scope_whose_secrets_cannot_be_read_says_so_instead_of_the_last_scopes_rows(page, app):
    add_mapping("ENG")
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    page.get_by_label("Name").fill("NPM_TOKEN")
    page.get_by_label("Value").fill("s3cr3t-value")
    page.get_by_role("button", name="Set secret").click()
    page.locator('#secrets-table tr[data-name="NPM_TOKEN"]').wait_for()

    page.route("**/api/mappings/ENG/secrets", lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"error": "Fly API unavailable"})))
    page.get_by_label("Scope").select_option("ENG")
    page.locator("#secrets-table").get_by_text("Fly API unavailable").wait_for()
    assert page.locator('#secrets-table tr[data-name="NPM_TOKEN"]').count() == 0


def test_a_late_answer_for_a_scope_no_longer_selected_is_dropped(page, app):
    """The Scope select changes while the last scope's list is on its way: that list, arriving
    after the new scope's, is not shown under the new scope, and Delete acts on the scope shown."""
    from aiimpl_core.extensions import db
    from aiimpl_core.services import secrets

    add_mapping("ENG")
    secrets.set_secret(secrets.GLOBAL, "NPM_TOKEN", "global-value")
    secrets.set_secret("ENG", "DEPLOY_KEY", "team-value")
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    table = page.locator("#secrets-table")
    table.locator('tr[data-name="NPM_TOKEN"]').wait_for()
    scope = page.get_by_label("Scope")
    scope.locator('option[value="ENG"]').wait_for(state="attached")

    held: list[Any] = []
    page.route("**/api/global-secrets",
               lambda route: held.append(route) if route.request.method == "GET" else route.continue_())
    scope.select_option("ENG")
    table.locator('tr[data-name="DEPLOY_KEY"]').wait_for()
    with page.expect_request("**/api/global-secrets"):
        scope.select_option("")  # Global: its list is held on the way
    assert table.locator("tr[data-name]").count() == 0  # no row of the last scope is offered meanwhile
    scope.select_option("ENG")
    table.locator('tr[data-name="DEPLOY_KEY"]').wait_for()
    assert len(held) == 1
    with page.expect_response("**/api/global-secrets") as late:
        held.pop().continue_()
    late.value.finished()
    page.evaluate("() => new Promise((done) => setTimeout(done, 300))")  # the page has read it by now
    assert table.locator('tr[data-name="NPM_TOKEN"]').count() == 0
    assert table.locator('tr[data-name="DEPLOY_KEY"]').count() == 1

    page.once("dialog", lambda d: d.accept())
    table.locator('tr[data-name="DEPLOY_KEY"]').get_by_role("button", name="Delete").click()
    page.get_by_text("Secret DEPLOY_KEY deleted").wait_for()
    db.session.rollback()  # the server wrote it: end this session's read of the database
    assert [s["name"] for s in secrets.list_secrets("ENG")] == []
    assert [s["name"] for s in secrets.list_secrets(secrets.GLOBAL)] == ["NPM_TOKEN"]


@pytest.fixture
def phone(browser: Any, live_server: str) -> Iterator[Any]:
    yield from open_page(browser, live_server, 375, 740)


def test_no_panel_is_wider_than_a_phone(phone, app, tracker):
    from aiimpl_core.extensions import db
    from aiimpl_core.services import launch
    from aiimpl_core.types import Phase

    tracker.add("ENG-7", title="A long issue title " * 5)
    mapping = add_mapping("ENG")
    add_mapping("T" * 64)  # a team key as long as they come: the Secrets scope list names it
    launch.create_job(mapping, "ENG-7", phase=Phase.IMPLEMENTATION, provider="fake-tracker",
                      choice=launch.BackendChoice("github-actions", "default", False))
    db.session.commit()
    sign_in(phone)
    for slug, _ in PANELS:
        phone.goto(f"/ui/{slug}")
        phone.wait_for_load_state("networkidle")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{slug} is {width}px wide"
    phone.goto("/ui/projects")
    phone.locator('#mappings-table tr[data-team="ENG"]').wait_for()
    shot(phone, "projects-narrow")
    # the table scrolls sideways, with the edge shadows that say there is more (no sign of it
    # before; the screenshot shows them)
    edge = """() => { const box = document.querySelector('#mappings-table').parentElement;
        return [box.scrollWidth > box.clientWidth, getComputedStyle(box).backgroundAttachment]; }"""
    assert phone.evaluate(edge) == [True, "local, local, scroll, scroll"]
