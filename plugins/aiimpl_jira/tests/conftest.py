"""Fixtures of the aiimpl-jira tests: a fake Jira site per test, checked against Jira's description."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiimpl_core.testing.contract import make_context, sample_mapping

import aiimpl_jira.plugin
from aiimpl_jira.provider import JiraProvider
from aiimpl_jira.testing.fake_jira import FakeJira


@pytest.fixture
def jira() -> Iterator[FakeJira]:
    """A running fake Jira; the test fails if any exchange broke Jira's OpenAPI description."""
    with FakeJira() as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
def provider(jira: FakeJira) -> JiraProvider:
    """The provider bound to the fake, without an application; project ENG is mapped to Jira."""
    mappings = [sample_mapping(team_key="ENG", ticketing={"provider": "jira"})]
    return JiraProvider(make_context(jira.config(), mappings=lambda: mappings))


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    return [aiimpl_jira.plugin]


@pytest.fixture
def aiimpl_config(jira: FakeJira) -> dict[str, Any]:
    return jira.config(AIIMPL_JIRA_WEBHOOK_SECRET="hook-secret-123")


@pytest.fixture
def admin_token(client: Any) -> str:
    """An admin session token from ``POST /api/auth`` (the core's fixture, tolerant of its absence).

    While the sign-in endpoint is not installed the token is issued the way that endpoint issues
    it, so these tests still exercise the core's admin guard on ``/api/jira/*``.
    """
    from aiimpl_core.auth import admin
    from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE

    resp = client.post("/api/auth", json={"code": TEST_ADMIN_CODE})
    if resp.status_code == 404:
        return admin.issue_session()
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    return body.get("token") or body["sessionToken"]
