"""``aiimpl linear check`` against the fake Linear."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiimpl_core.testing.fakes import add_mapping

import aiimpl_linear.plugin
from aiimpl_linear.cli import linear_group
from aiimpl_linear.testing import FakeLinear


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    return [aiimpl_linear.plugin]


@pytest.fixture
def aiimpl_config(fake: FakeLinear) -> dict[str, Any]:
    return fake.config()


def test_check_reports_teams_done_states_and_labels(app, fake: FakeLinear) -> None:
    add_mapping("ENG", provider="linear", repo="api")
    fake.add_label("AI-Implement", None)
    fake.add_label("AI-Working", "ENG")
    result = app.test_cli_runner().invoke(linear_group, ["check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["viewer"]["name"] == "Fake User"
    eng = report["teams"]["ENG"]
    assert eng["found"] and eng["done"] == "Done"
    assert eng["labels"] == ["AI-Implement", "AI-Working"]
    assert eng["missing"] == ["AI-Planning", "Plan-Complete", "Ready for Review"]


def test_check_lists_retired_labels_and_fails_for_a_retired_trigger(app, fake: FakeLinear) -> None:
    fake.add_label("AI-Implement", "ENG", retired=True)
    fake.add_label("AI-Working", None, retired=True)
    result = app.test_cli_runner().invoke(linear_group, ["check", "--team", "ENG"])
    assert result.exit_code == 1
    assert (
        "ENG (Engineering): done state Done; labels created on first use: AI-Planning, Plan-Complete, "
        "Ready for Review; retired labels restored on first use: AI-Working; label AI-Implement is "
        "retired: restore it in Linear"
    ) in result.output


def test_check_fails_for_an_unknown_team_and_a_team_without_done_state(app, fake: FakeLinear) -> None:
    fake.add_team("ODD", states=[("Todo", "unstarted")])
    result = app.test_cli_runner().invoke(linear_group, ["check", "--team", "NOPE", "--team", "ODD"])
    assert result.exit_code == 1
    assert "NOPE: no Linear team with key NOPE" in result.output
    assert (
        "ODD (Team ODD): done state -" in result.output
        and "no workflow state of type completed" in result.output
    )
    assert fake.api_key not in result.output


def test_check_is_registered_through_the_commands_hook() -> None:
    import click
    from aiimpl_core.plugins import Plugins
    from click.testing import CliRunner

    root = click.Group("aiimpl")
    Plugins(load_entrypoints=False, extra=[aiimpl_linear.plugin]).add_commands(root)
    result = CliRunner().invoke(root, ["linear", "check", "--help"])
    assert result.exit_code == 0 and "Check the credentials" in result.output


def test_check_without_credentials_says_what_to_set(app, fake: FakeLinear) -> None:
    for name in ("AIIMPL_LINEAR_API_KEY", "AIIMPL_LINEAR_OAUTH_TOKEN"):
        app.config[name] = None
    result = app.test_cli_runner().invoke(linear_group, ["check"])
    # (the aiimpl command prints it as `Error: <message>`, exit status 1)
    assert result.exception.message == (
        "Linear is not configured: set AIIMPL_LINEAR_API_KEY or AIIMPL_LINEAR_OAUTH_TOKEN, "
        "or store the global secret LINEAR_API_KEY (`aiimpl secrets set`, once a runner backend that "
        "keeps secrets is configured)")


def test_check_on_a_database_without_its_schema_says_so(tmp_path) -> None:
    """The key may be the stored secret: it said "Linear is not configured" when the database
    could not be read at all."""
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/new.db", AIIMPL_SECRET_KEY="k" * 40)
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "linear", "check"], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    said = done.stderr.splitlines()[-1]
    assert said.startswith("Error: the database has no schema yet: run `aiimpl db upgrade`"), done.stderr


@pytest.mark.parametrize("team", ["", " "])
def test_an_empty_team_key_is_refused_as_a_command_line_is(app, team: str) -> None:
    """It was looked up and said as ": no Linear team with key " (exit 1)."""
    result = app.test_cli_runner().invoke(linear_group, ["check", "--team", "ENG", "--team", team])
    assert result.exit_code == 2
    assert "Invalid value for '--team': must not be empty" in result.output
