"""Fixtures of the fault drills: PostgreSQL only, real plugins against their local fakes.

The drills are about crashes, outages and dropped connections of a production install, which runs
on PostgreSQL; they skip (with the reason) when ``AIIMPL_TEST_DATABASE_URL`` is not set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.github.app_auth import TOKENS
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.serving import serve_wsgi

#: the teams (Linear) or projects (Jira) of the drills that run a real tracker plugin
TEAMS = ("ENG", "OPS")

SKIP_REASON = (
    "fault drills run on PostgreSQL only: set AIIMPL_TEST_DATABASE_URL "
    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
)


@pytest.fixture
def database_url(aiimpl_databases: Any) -> str:
    """The session's PostgreSQL database (overrides the core fixture's SQLite + PostgreSQL pair)."""
    if not os.environ.get("AIIMPL_TEST_DATABASE_URL"):
        pytest.skip(SKIP_REASON)
    return aiimpl_databases.get("postgres")


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    """A fake GitHub with ``acme`` installed; fails the drill if any exchange broke GitHub's description."""
    with FakeGitHub() as fake:
        fake.add_installation("acme")
        yield fake
        fake.assert_clean()
    TOKENS.clear()


def github_config(gh: FakeGitHub) -> dict[str, str]:
    return {
        "AIIMPL_GITHUB_API_URL": gh.url,
        "AIIMPL_GITHUB_APP_ID": str(gh.app_id),
        "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem,
    }


@pytest.fixture
def linear() -> Iterator[Any]:
    """A fake Linear with teams ENG and OPS; fails the drill if any exchange broke Linear's schema."""
    from aiimpl_linear.testing import FakeLinear

    with FakeLinear() as fake:
        for team in TEAMS:
            fake.add_team(team)
        yield fake
        assert fake.validation_errors == [], fake.validation_errors


@pytest.fixture
def linear_gha_plugins() -> list[object]:
    """The real Linear and GitHub Actions plugins (a drill that runs them returns this fixture as
    its app's ``aiimpl_plugins``)."""
    import aiimpl_gha.plugin
    import aiimpl_linear.plugin

    return [aiimpl_linear.plugin, aiimpl_gha.plugin]


@pytest.fixture
def linear_gha_config(linear: Any, gh: FakeGitHub) -> dict[str, Any]:
    """The settings pointing those plugins at the drill's fake Linear and fake GitHub (a drill's
    ``aiimpl_config`` returns or extends it)."""
    return {**linear.config(), **github_config(gh)}


@pytest.fixture
def fake_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    """The in-memory tracker's and runner's plugins (a drill's ``aiimpl_plugins`` returns it)."""
    return [tracker.plugin, runner.plugin]


def map_teams(
    app: Any, gh: FakeGitHub, caps: dict[str, int | None] | None = None, *, tracker: str = "linear"
) -> None:
    """ENG and OPS mapped to the tracker ``tracker`` (Linear teams, or Jira projects) and to their
    repositories (``acme/eng``, ``acme/ops``) on GitHub Actions, with the workflow in place;
    ``caps``: a team's ``max_in_progress``."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    for team in TEAMS:
        gh.add_repo("acme", team.lower())
        row = Mapping(team_key=team, owner="acme", repo=team.lower(), default_branch="main",
                      execution_mode="github-actions", ticketing={"provider": tracker},
                      max_in_progress=(caps or {}).get(team))
        db.session.add(row)
        db.session.commit()
        app.extensions["aiimpl"].runner("github-actions").sync_workflows(row.view())
    db.session.remove()


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The drill's app served by a real threaded HTTP server on 127.0.0.1; yields its base URL."""
    with serve_wsgi(app) as live:
        yield live.url
