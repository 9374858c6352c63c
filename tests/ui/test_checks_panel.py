"""The Checks panel: ``aiimpl check`` from the admin UI (through ``GET /api/checks``)."""
from __future__ import annotations

import re

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Mapping

from .conftest import shot
from .test_browser import sign_in


def test_the_panel_is_a_shell_listed_in_the_navigation(client):
    page = client.get("/ui/checks")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-panel="checks"' in html and 'id="checks-table"' in html and 'id="checks-run"' in html
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert not re.search(r"\son[a-z]+=", html)
    assert 'href="/ui/checks"' in client.get("/ui/projects").get_data(as_text=True)
    assert "checks: initChecks" in client.get("/ui/static/app.js").get_data(as_text=True)


@pytest.mark.browser
def test_run_the_checks_from_the_panel(page, app):
    db.session.add(Mapping(team_key="ENG", owner="acme", repo="api", default_branch="main",
                           execution_mode="fly-machines", ticketing={"provider": "fake-tracker"}))
    db.session.commit()
    sign_in(page)
    page.get_by_role("link", name="Checks").click()
    page.wait_for_url(re.compile(r"/ui/checks"))
    page.get_by_role("button", name="Run checks").click()
    page.locator("#checks-summary").get_by_text(re.compile(r"\d+ checks: \d+ passed, 2 failed")).wait_for()
    failed = page.locator("#checks-table tr.check-failed")
    assert failed.count() == 2
    # no GitHub credentials; and no model key for the sessions of a backend that keeps secrets
    assert "github" in failed.nth(0).inner_text() and "not configured" in failed.nth(0).inner_text()
    assert "anthropic" in failed.nth(1).inner_text()
    assert "the sessions of ENG would get no ANTHROPIC_API_KEY" in failed.nth(1).inner_text()
    assert page.locator("#checks-table tr.check-ok").count() >= 2
    shot(page, "checks")
