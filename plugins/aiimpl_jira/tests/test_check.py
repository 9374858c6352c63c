"""``JiraProvider.check`` (what ``aiimpl check`` runs) against the fake Jira."""

from __future__ import annotations

from typing import Any

import pytest
from aiimpl_core.services.checks import run_checks
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.testing.fakes import add_mapping
from aiimpl_core.types import CheckResult

from aiimpl_jira.provider import REQUIRED_STATUSES, JiraProvider
from aiimpl_jira.testing.fake_jira import DEFAULT_STATUSES, FakeJira

ALL_STATUSES = (
    "the workflow has Ready, Planning, Plan Approved, Implementing, PR Ready, "
    "Planning Failed, Implementation Failed and a done status"
)


def _mapping(key: str, jql: str | None = None) -> Any:
    ticketing: dict[str, Any] = {"provider": "jira"}
    if jql is not None:
        ticketing["jql"] = jql
    return sample_mapping(team_key=key, ticketing=ticketing)


def _by_name(results: Any) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def _assert_no_secret(results: Any, jira: FakeJira) -> None:
    for result in results:
        assert jira.api_token not in result.detail
        assert (jira.bearer_token or jira.api_token) not in result.detail


def test_check_all_ok(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_project("ENG")
    jira.add_project("OPS")

    results = provider.check([_mapping("ENG", "labels = backend"), _mapping("OPS")])

    assert results == [
        CheckResult("credentials", True, "signed in as AI-Implement bot"),
        CheckResult("project ENG", True, ALL_STATUSES),
        CheckResult("project OPS", True, ALL_STATUSES),
        CheckResult("jql ENG", True, "valid: labels = backend"),
    ]
    assert REQUIRED_STATUSES[0] == "Ready"
    # /myself, the statuses of each project (Jira reads them per project), one parse for every clause
    assert [(r.method, r.path) for r in jira.requests] == [
        ("GET", "/rest/api/3/myself"),
        ("GET", "/rest/api/3/project/ENG/statuses"),
        ("GET", "/rest/api/3/project/OPS/statuses"),
        ("POST", "/rest/api/3/jql/parse"),
    ]
    _assert_no_secret(results, jira)


def test_check_without_mappings_checks_the_credentials(jira: FakeJira, provider: JiraProvider) -> None:
    assert provider.check([]) == [CheckResult("credentials", True, "signed in as AI-Implement bot")]
    assert len(jira.requests) == 1


def test_check_reports_refused_credentials(jira: FakeJira) -> None:
    provider = JiraProvider(make_context(jira.config(AIIMPL_JIRA_API_TOKEN="wrong-token-value")))

    results = provider.check([_mapping("ENG", "labels = backend")])

    assert len(results) == 1 and results[0].name == "credentials" and not results[0].ok
    assert "HTTP 401" in results[0].detail and "/rest/api/3/myself" in results[0].detail
    assert "wrong-token-value" not in results[0].detail
    assert len(jira.requests) == 1


def test_check_reports_a_forbidden_account(jira: FakeJira, provider: JiraProvider) -> None:
    jira.fail_next("GET", "/rest/api/3/myself", 403)
    result = provider.check([_mapping("ENG")])
    assert [(r.name, r.ok) for r in result] == [("credentials", False)]
    assert "HTTP 403" in result[0].detail


def test_check_reports_a_missing_project(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_project("ENG")

    got = _by_name(provider.check([_mapping("ENG"), _mapping("NOPE")]))

    assert got["credentials"].ok and got["project ENG"].ok
    assert got["project NOPE"] == CheckResult("project NOPE", False, "Jira project NOPE not found")


def test_check_names_the_missing_statuses() -> None:
    dropped = ("Ready", "PR Ready", "Done", "Won't Do")
    statuses = {k: v for k, v in DEFAULT_STATUSES.items() if k not in dropped}
    with FakeJira(statuses=statuses) as jira:
        jira.add_project("ENG")
        provider = JiraProvider(make_context(jira.config()))

        result = _by_name(provider.check([_mapping("ENG")]))["project ENG"]

        assert result == CheckResult(
            "project ENG",
            False,
            "missing status 'Ready'; missing status 'PR Ready'; "
            "no status in the done category (needed when a PR merges)",
        )
        jira.assert_clean()


def test_check_reports_a_project_outside_aiimpl_jira_projects(jira: FakeJira) -> None:
    jira.add_project("ENG")
    provider = JiraProvider(make_context(jira.config(AIIMPL_JIRA_PROJECTS="OPS")))

    result = _by_name(provider.check([_mapping("ENG")]))["project ENG"]

    assert result == CheckResult(
        "project ENG", False, "not in AIIMPL_JIRA_PROJECTS: its issues are never listed"
    )


def test_check_reports_an_invalid_jql_clause(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_project("ENG")
    jira.add_project("OPS")

    got = _by_name(provider.check([_mapping("ENG", "labels = backend"), _mapping("OPS", "labels = = x")]))

    assert got["jql ENG"].ok
    assert not got["jql OPS"].ok and got["jql OPS"].detail.startswith("ticketing.jql is invalid: ")
    assert len(jira.requests_to("POST", "/rest/api/3/jql/parse")) == 1


def test_check_reports_a_jql_parse_that_fails(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_project("ENG")
    jira.fail_next("POST", "/rest/api/3/jql/parse", 400)

    result = _by_name(provider.check([_mapping("ENG", "labels = backend")]))["jql ENG"]

    assert not result.ok and result.detail.startswith("ticketing.jql is invalid: could not be checked: ")


def test_check_with_a_bearer_token_shows_no_token() -> None:
    with FakeJira(bearer_token="jira-bearer-secret") as jira:
        jira.add_project("ENG")
        provider = JiraProvider(make_context(jira.config()))
        results = provider.check([_mapping("ENG")])
        assert all(r.ok for r in results)
        _assert_no_secret(results, jira)
        bad = JiraProvider(make_context(jira.config(AIIMPL_JIRA_BEARER_TOKEN="other-bearer-secret")))
        refused = bad.check([_mapping("ENG")])
        assert not refused[0].ok and "other-bearer-secret" not in refused[0].detail


# -- through the core ---------------------------------------------------------------------------


@pytest.mark.usefixtures("app")
def test_run_checks_reports_the_jira_rows(jira: FakeJira) -> None:
    for key in ("ENG", "NOPE"):
        add_mapping(key, provider="jira", repo="api")
    jira.add_project("ENG")

    rows = {row.name: row for row in run_checks() if row.provider == "jira"}

    assert {name: (row.kind, row.status) for name, row in rows.items()} == {
        "credentials": ("ticketing", "ok"),
        "project ENG": ("ticketing", "ok"),
        "project NOPE": ("ticketing", "failed"),
    }
    assert rows["project NOPE"].detail == "Jira project NOPE not found"
    assert all(jira.api_token not in row.detail for row in rows.values())
