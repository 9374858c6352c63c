"""What an operator cannot do here is said where it would be tried: a Secrets form while no runner
backend keeps secrets, a runner mode whose backend is not installed, a mapping's team key while
it is edited, a page of the UI that does not exist."""
from __future__ import annotations

import pytest

from aiimpl_core.testing.fakes import FakeRunner, FakeTracker, add_mapping

from .test_browser import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def runner() -> FakeRunner:
    """Fly without sessions or secrets (with the conftest's GitHub Actions, which keeps none
    either); no backend runs the ``local`` mode."""
    return FakeRunner("fly-machines", "fly")


def test_the_secrets_form_says_why_nothing_can_be_set(page, app):
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    error = page.locator("#secret-error")
    error.get_by_text("Secrets cannot be set here: Fly sessions config not set").wait_for()
    assert "aiimpl check says which" in error.inner_text()
    assert page.get_by_role("button", name="Set secret").is_disabled()
    assert page.locator("#secrets-table").get_by_text("Fly sessions config not set").is_visible()


def test_a_runner_mode_whose_backend_is_not_installed_is_saved_and_said(page, app):
    from playwright.sync_api import expect

    said = ("Runner mode local selects no installed and enabled runner backend. Install or enable its "
            "plugin, or change the runner mode. Until then every issue waits, blocked (backend-unavailable).")
    sign_in(page)
    page.get_by_role("link", name="Runner mode").click()
    expect(page.locator("#runner-mode-effective")).to_have_text("default")
    assert page.locator("#runner-mode-warning").is_hidden()
    page.get_by_label("Local Docker for every mapping").check()
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#flash.error")).to_have_text(f"Runner mode set to local. Warning: {said}")
    expect(page.locator("#runner-mode-warning")).to_have_text(said)
    page.reload()  # said while it is saved, not only when it is saved
    expect(page.locator("#runner-mode-warning")).to_have_text(said)
    page.get_by_label("Fly Machines for every mapping").check()
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#flash.ok")).to_have_text("Runner mode set to fly")
    expect(page.locator("#runner-mode-warning")).to_be_hidden()


def test_editing_a_mapping_keeps_its_team_key(page, app):
    """A changed team key saved a second mapping beside the one edited (the API's create-or-update
    is keyed by it)."""
    from playwright.sync_api import expect

    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    add_mapping("ENG")
    sign_in(page)
    page.locator('#mappings-table tr[data-team="ENG"]').get_by_role("button", name="Edit").click()
    key = page.get_by_label("Team key")
    expect(key).to_have_value("ENG")
    expect(key).not_to_be_editable()
    expect(page.locator("#mapping-editing")).to_have_text(
        "Editing the mapping of ENG; its team key stays. Clear to create another mapping.")
    page.get_by_label("Repository").fill("platform")
    page.get_by_role("button", name="Save mapping").click()
    page.locator("#flash.ok").get_by_text("Mapping ENG saved").wait_for()
    db.session.rollback()  # the server wrote it: end this session's read of the database
    assert [(m.team_key, m.repo) for m in db.session.scalars(db.select(Mapping))] == [("ENG", "platform")]
    # saved: the form is a new mapping's again, as after Clear
    expect(key).to_be_editable()
    expect(page.locator("#mapping-editing")).to_be_hidden()
    page.locator('#mappings-table tr[data-team="ENG"]').get_by_role("button", name="Edit").click()
    expect(key).not_to_be_editable()
    page.get_by_role("button", name="Clear").click()
    expect(key).to_be_editable()
    expect(key).to_have_value("")


def test_a_page_that_does_not_exist_is_a_page_with_the_panels(client):
    resp = client.get("/ui/nope<b>")
    html = resp.get_data(as_text=True)
    assert (resp.status_code, resp.mimetype) == (404, "text/html")
    assert "There is no page /ui/nope&lt;b&gt;: choose a panel above." in html
    assert 'href="/ui/projects"' in html and 'href="/ui/secrets"' in html


def test_sync_workflows_is_offered_where_the_backend_has_workflow_files(page, app):
    """A Fly mapping's Sync workflows could only be refused (the API's 400 "does not use workflow
    files"), in red, every time it was tried."""
    add_mapping("ENG")
    add_mapping("OPS", execution_mode="fly-machines")
    sign_in(page)
    eng = page.locator('#mappings-table tr[data-team="ENG"]')
    eng.get_by_role("button", name="Sync workflows").wait_for()
    ops = page.locator('#mappings-table tr[data-team="OPS"]')
    ops.get_by_role("button", name="Edit").wait_for()
    assert ops.get_by_role("button", name="Sync workflows").count() == 0


def test_the_forms_offer_what_is_installed(client):
    """The placeholders were Linear's and GitHub Actions' whatever was installed; the runner modes
    whose backend is not installed looked like the others."""
    import re

    placeholders = _placeholders(client)
    assert placeholders["executionMode"] == "github-actions"  # the default, installed here
    assert placeholders["provider"] == "anthropic"
    # an installed tracker's (the UI tests install Jira's plugin beside the fake one when it is there)
    assert placeholders["ticketing"] in ('{"provider": "fake-tracker"}', '{"provider": "jira"}')
    modes = client.get("/ui/runner-mode").get_data(as_text=True)
    labels = dict(re.findall(r'value="(\w+)"><label[^>]*>(.*?)</label>', modes))
    assert [mode for mode, label in labels.items() if "its plugin is not installed" in label] == ["local"]
    assert set(labels) == {"default", "gha", "fly", "local", "shadow"}


def _placeholders(client) -> dict[str, str]:  # noqa: ANN001
    import html as html_lib
    import re

    projects = client.get("/ui/projects").get_data(as_text=True)
    return {name: html_lib.unescape(value)
            for name, value in re.findall(r'name="(\w+)"[^>]*?placeholder="([^"]*)"', projects)}


class TestWithOtherPlugins:
    @pytest.fixture
    def aiimpl_plugins(self, runner) -> list[object]:
        """Fly alone and a tracker of another id: no default execution mode but Fly's."""
        return [FakeTracker(provider_id="other-tracker").plugin, runner.plugin]

    def test_the_placeholders_are_theirs(self, client):
        placeholders = _placeholders(client)
        assert placeholders["executionMode"] == "fly-machines"
        assert placeholders["ticketing"] == '{"provider": "other-tracker"}'
