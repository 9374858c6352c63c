"""A live server and a real browser (Debian's Chromium driven by Playwright)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.serving import serve_wsgi

ARTIFACTS = os.environ.get(
    "AIIMPL_ARTIFACTS", os.path.join(os.path.dirname(__file__), "..", "..", "artifacts")
)


def _chromium() -> str | None:
    path = os.environ.get("AIIMPL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.exists(path) else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One Chromium for the worker's browser tests (each test has a context of its own: see
    :func:`open_page`)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (scripts/setup-chromium.sh installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=exe, headless=True,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner("fly-machines", "fly", sessions=True, secrets=True, workflow_sync=True)


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    gha = FakeRunner("github-actions", "gha", workflow_sync=True, gap_fill=True)
    plugins = [tracker.plugin, runner.plugin, gha.plugin]
    try:  # the Jira settings panel appears when the Jira plugin is installed
        import aiimpl_jira.plugin as jira_plugin

        plugins.append(jira_plugin)
    except ImportError:
        pass
    return plugins


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    with serve_wsgi(app) as live:
        yield live.url


#: how long a page waits for what a test expects (ms): what the UI does takes well under a second,
#: but a CI machine running the suite's workers, their browsers and databases on two cores once
#: stalled a page for over 10 s (a wait that succeeds returns as soon as it can)
WAIT_MS = 30_000


def open_page(browser: Any, live_server: str, width: int, height: int, **options: Any) -> Iterator[Any]:
    """A page of its own browser context, ``width`` × ``height``, on the live server (``options``:
    more of the context's, such as ``locale``)."""
    context = browser.new_context(
        viewport={"width": width, "height": height}, base_url=live_server, **options
    )
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    yield from open_page(browser, live_server, 1366, 800)


def shot(page: Any, name: str) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, f"ui-{name}.png"), full_page=True)


@pytest.fixture
def database_url(aiimpl_databases: Any) -> str:
    """The browser tests exercise the UI, not the database: SQLite is enough (the API tests cover both)."""
    return aiimpl_databases.get("sqlite")
