"""The Outbox panel: the tracker writes given up on, each with a Retry button (through the admin API)."""
from __future__ import annotations

import re
from typing import Any

import pytest

from aiimpl_core.orm import utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import queue_outbox_item

from .conftest import shot
from .test_browser import sign_in


def add_item(n: int, state: str = "dead", op: str = "comment", **kw: Any) -> int:
    body = f"Comment {n}: " + "details " * 60 if op == "comment" else None
    return queue_outbox_item(state=state, op=op, body=body, **kw)


def test_the_panel_is_a_shell_listed_in_the_navigation(client):
    page = client.get("/ui/outbox")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-panel="outbox"' in html and 'id="outbox-table"' in html
    # CSP-safe: scripts only from files, no inline handlers
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert not re.search(r"\son[a-z]+=", html)
    nav = client.get("/ui/projects").get_data(as_text=True)
    assert 'href="/ui/outbox"' in nav and ">Outbox<" in nav
    script = client.get("/ui/static/app.js").get_data(as_text=True)
    assert "outbox: initOutbox" in script


@pytest.mark.browser
def test_retry_a_dead_write_from_the_panel(page, app, tracker):
    tracker.add("ENG-1")
    dead = add_item(1)
    # a stage change older than one delivered already: the API refuses to send it again
    blocked = add_item(2, op="stage", stage="implementing")
    add_item(3, op="stage", stage="pr_opened", state="done", done_at=utcnow())
    add_item(4, state="done", done_at=utcnow())

    sign_in(page)
    page.get_by_role("link", name="Outbox").click()
    page.wait_for_url(re.compile(r"/ui/outbox"))
    row = page.locator(f'#outbox-table tr[data-id="{dead}"]')
    row.get_by_text("comment rejected").wait_for()
    assert row.get_by_text("Comment 1:").count() == 1
    assert "details " * 40 not in page.content()  # a preview, not the whole body
    page.locator("#outbox-counts").get_by_text("dead 2 · pending 0 · sending 0 · done 2").wait_for()
    shot(page, "outbox")

    page.locator(f'#outbox-table tr[data-id="{blocked}"]').get_by_role("button", name="Retry").click()
    page.locator("#flash.error").get_by_text("a later stage change of this issue was delivered").wait_for()

    row.get_by_role("button", name="Retry").click()
    page.get_by_text(f"Outbox item {dead} re-queued").wait_for()
    row.wait_for(state="detached")
    assert outbox.deliver(now=utcnow())["sent"] == 1
    assert tracker.comments["ENG-1"][0].startswith("Comment 1:")


@pytest.mark.browser
def test_the_panel_says_when_it_shows_only_the_newest_items(page, app):
    """The API answers 100 items unless asked for more: the panel says so, and Show more asks."""
    first = add_item(0)
    for n in range(1, 101):
        add_item(n)

    sign_in(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/outbox?" in r.url else None)
    page.get_by_role("link", name="Outbox").click()
    rows = page.locator("#outbox-table tbody tr")
    page.locator("#outbox-more").get_by_text("Showing the newest 100 items given up on.").wait_for()
    assert rows.count() == 100 and page.locator(f'#outbox-table tr[data-id="{first}"]').count() == 0
    assert requests and all(url.endswith("state=dead&limit=100") for url in requests), requests
    page.locator("#outbox-more").get_by_role("button", name="Show more").click()
    page.locator(f'#outbox-table tr[data-id="{first}"]').wait_for()
    assert rows.count() == 101 and page.locator("#outbox-more").is_hidden()
