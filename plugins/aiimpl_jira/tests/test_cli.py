"""``aiimpl jira check``: credentials and the workflow's statuses, per project."""

from __future__ import annotations

import json
from typing import Any

import click
from aiimpl_core.extensions import db
from aiimpl_core.orm import Mapping

from aiimpl_jira.testing.fake_jira import DEFAULT_STATUSES, FakeJira


def _run(app: Any, *args: str) -> Any:
    """``aiimpl jira check ARGS`` as the plugin registers it through ``aiimpl_register_commands``."""
    root = click.Group("aiimpl")
    app.extensions["aiimpl"].add_commands(root)
    return app.test_cli_runner().invoke(root, ["jira", "check", *args])


def test_check_the_mapped_projects(app: Any, jira: FakeJira) -> None:
    db.session.add(
        Mapping(
            team_key="ENG", owner="acme", repo="api", default_branch="main", ticketing={"provider": "jira"}
        )
    )
    db.session.commit()
    jira.add_issue("ENG-1")

    result = _run(app, "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == {
        "ok": True,
        "account": {"accountId": "5b10a2844c20165700ede21g", "displayName": "AI-Implement bot"},
        "projects": {"ENG": {"missing": [], "done": True, "error": None}},
    }
    assert jira.requests_to("GET", "/rest/api/3/project/ENG/statuses")


def test_check_names_missing_statuses_and_unknown_projects(app: Any) -> None:
    statuses = {k: v for k, v in DEFAULT_STATUSES.items() if k not in ("PR Ready", "Plan Approved")}
    with FakeJira(statuses=statuses) as jira:
        app.config.update(jira.config())
        app.extensions["aiimpl"].bind(app.extensions["aiimpl"].context)
        jira.add_issue("ENG-1")

        result = _run(app, "--project", "ENG", "--project", "NOPE")

        assert result.exit_code == 1
        assert "ENG: missing status 'Plan Approved'; missing status 'PR Ready'" in result.output
        assert "NOPE: Jira project NOPE not found" in result.output
        jira.assert_clean()


def test_check_without_credentials_says_what_to_set(app: Any) -> None:
    app.config["AIIMPL_JIRA_URL"] = None
    result = _run(app)
    # (the aiimpl command prints it as `Error: <message>`, exit status 1)
    assert result.exception.message == (
        "Jira is not configured: set AIIMPL_JIRA_URL, and AIIMPL_JIRA_EMAIL with "
        "AIIMPL_JIRA_API_TOKEN or AIIMPL_JIRA_BEARER_TOKEN")


def test_an_empty_project_key_is_refused_as_a_command_line_is(app: Any) -> None:
    result = _run(app, "--project", "")
    assert result.exit_code == 2
    assert "Invalid value for '--project': must not be empty" in result.output
