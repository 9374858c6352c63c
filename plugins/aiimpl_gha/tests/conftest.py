"""Fixtures of the GitHub Actions backend's tests: a fake GitHub and a backend bound to it."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from aiimpl_core import session_package
from aiimpl_core.github.app_auth import TOKENS
from aiimpl_core.testing.contract import make_context
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.fakes import FakeTracker

import aiimpl_gha.plugin
from aiimpl_gha.backend import GitHubActionsBackend
from aiimpl_gha.workflows import template_text

#: the URL runners reach the orchestrator at, in these tests (the core's test app says the same)
PUBLIC_URL = "http://orchestrator.test"
#: the wheel of the session program this orchestrator serves
PACKAGE = session_package.current()
#: what the workflows install as the session program by default: that wheel, from this
#: orchestrator, at the URL of its sha256 and pinned to it
SHA256 = hashlib.sha256(PACKAGE.data).hexdigest()
CORE_REQUIREMENT = (f"aiimpl-core @ {PUBLIC_URL}/runner/session-package/{SHA256}/"
                    f"aiimpl_core-{importlib.metadata.version('aiimpl-core')}-py3-none-any.whl#sha256={SHA256}")


def synced(name: str, minutes: int = 70) -> str:
    """A shipped template as a sync with the default settings writes it: the session program this
    orchestrator serves (one shell word), the job timeout for the session lifetime."""
    text = template_text(name)
    shipped = "python -m pip install --upgrade aiimpl-core\n"
    assert text.count(shipped) == 1
    return (text.replace(shipped, f"python -m pip install --upgrade '{CORE_REQUIREMENT}'\n")
            .replace("timeout-minutes: 70", f"timeout-minutes: {minutes}"))


@contextlib.contextmanager
def fake_github(specs_dir: str, *, full: bool = False) -> Iterator[FakeGitHub]:
    """The fake GitHub with the repository and installation the tests use, checked against the fast
    subset of GitHub's description, or the complete one (``full``)."""
    spec = os.path.join(specs_dir, "github", "rest", "api.github.com.json") if full else None
    with FakeGitHub(spec_path=spec) as fake:
        fake.add_repo("acme", "api")
        fake.add_installation("acme")
        yield fake
        # every request the backend sent, and every answer, matches GitHub's description
        fake.assert_clean()
    TOKENS.clear()


@pytest.fixture
def gh(request: pytest.FixtureRequest, aiimpl_specs_dir: str) -> Iterator[FakeGitHub]:
    """The fake GitHub, checked against the fast subset of GitHub's description; a test that calls
    an operation outside it asks for the complete one (``parametrize("gh", ["full"], indirect=True)``)."""
    with fake_github(aiimpl_specs_dir, full=getattr(request, "param", None) == "full") as fake:
        yield fake


def github_config(gh: FakeGitHub) -> dict[str, Any]:
    return {
        "AIIMPL_PUBLIC_URL": PUBLIC_URL,
        "AIIMPL_GITHUB_API_URL": gh.url,
        "AIIMPL_GITHUB_APP_ID": str(gh.app_id),
        "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem,
    }


def list_runs_late(gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch, *, listings: int = 1) -> None:
    """GitHub's Actions API is eventually consistent: a run it made may be listed only seconds
    later. The fake's next ``listings`` run listings leave out every run (reading a run by its id,
    and the tests' own ``runs_of``, still see them)."""
    runs_of = gh.runs_of
    left = [listings]

    def listed(owner: str, repo: str) -> list[Any]:
        if flask.has_request_context() and left[0] > 0:
            left[0] -= 1
            return []
        return runs_of(owner, repo)

    monkeypatch.setattr(gh, "runs_of", listed)


@pytest.fixture
def backend(gh: FakeGitHub) -> GitHubActionsBackend:
    return GitHubActionsBackend(make_context(github_config(gh)))


# -- inside the orchestrator (the app fixture) ------------------------------------------------


@pytest.fixture
def tracker() -> FakeTracker:
    return FakeTracker()


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker) -> list[object]:
    return [tracker.plugin, aiimpl_gha.plugin]
