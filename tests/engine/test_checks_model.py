"""``aiimpl check`` says when the sessions of a backend that hands them the orchestrator's
environment (Fly, Docker) would get no model key: their agent could not start, and nothing else
would say why before the first issue failed."""

from __future__ import annotations

import pytest

from aiimpl_core.services.checks import run_checks
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker

NO_KEY = ("the sessions of {teams} would get no ANTHROPIC_API_KEY, so their agent cannot start (set "
          "AIIMPL_ANTHROPIC_API_KEY, or a secret ANTHROPIC_API_KEY (global or the team's))")
KEY = "the sessions of {teams} get what the model provider needs"


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    """GitHub Actions (``runner``: its sessions read the repository's Actions secrets) and a Fly
    backend that keeps secrets."""
    return [tracker.plugin, runner.plugin, FakeRunner("fly-machines", "fly", secrets=True).plugin]


def model_rows() -> list[tuple[str, str, str]]:
    return [(r.provider, r.status, r.detail) for r in run_checks() if r.kind == "model"]


def test_sessions_without_the_model_key_fail_the_check(app, add_mapping):
    add_mapping("ENG", execution_mode="fly-machines")
    add_mapping("WEB", execution_mode="fly-machines")
    add_mapping("OPS")  # GitHub Actions: not checked
    assert model_rows() == [("anthropic", "failed", NO_KEY.format(teams="ENG, WEB"))]


@pytest.mark.parametrize("where", ["setting", "global secret", "team secret"])
def test_a_key_from_a_setting_or_a_secret_passes(app, add_mapping, where):
    from aiimpl_core.services import secrets

    add_mapping("ENG", execution_mode="fly-machines")
    add_mapping("WEB", execution_mode="fly-machines")
    if where == "setting":
        app.config["AIIMPL_ANTHROPIC_API_KEY"] = "sk-ant-never-shown"
    else:
        secrets.set_secret("ENG" if where == "team secret" else secrets.GLOBAL, "ANTHROPIC_API_KEY",
                           "sk-ant-never-shown")
    got = model_rows()
    if where == "team secret":  # the team's own: the other team's sessions still get none
        assert got == [("anthropic", "ok", KEY.format(teams="ENG")),
                       ("anthropic", "failed", NO_KEY.format(teams="WEB"))]
    else:
        assert got == [("anthropic", "ok", KEY.format(teams="ENG, WEB"))]


def test_a_key_in_the_mappings_extra_env_passes(app, add_mapping):
    """The launch puts extraEnv in the session's environment first: a key there is a key."""
    add_mapping("ENG", execution_mode="fly-machines", extra_env={"ANTHROPIC_API_KEY": "sk-ant-x"})
    assert model_rows() == [("anthropic", "ok", KEY.format(teams="ENG"))]


def test_a_blank_key_is_no_key(app, add_mapping):
    add_mapping("ENG", execution_mode="fly-machines")
    app.config["AIIMPL_ANTHROPIC_API_KEY"] = " \n"
    assert model_rows() == [("anthropic", "failed", NO_KEY.format(teams="ENG"))]


def test_what_the_runner_mode_sends_to_github_actions_is_not_checked(app, add_mapping):
    add_mapping("ENG", execution_mode="fly-machines")
    app.config["RUNNER_MODE"] = "gha"
    assert model_rows() == []
    app.config["RUNNER_MODE"] = "fly"
    add_mapping("OPS")  # forced onto Fly too
    assert model_rows() == [("anthropic", "failed", NO_KEY.format(teams="ENG, OPS"))]


def test_a_provider_that_requires_nothing_has_no_line(app, add_mapping):
    """Bedrock's sessions may find AWS credentials elsewhere (a role): nothing to require."""
    add_mapping("ENG", execution_mode="fly-machines", provider="fake-tracker")
    _set_model("ENG", "bedrock")
    assert model_rows() == []


def _set_model(team_key: str, provider: str) -> None:
    from sqlalchemy import update

    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    db.session.execute(update(Mapping).where(Mapping.team_key == team_key).values(provider=provider))
    db.session.commit()


def test_a_provider_that_fails_is_said_for_the_teams_it_failed_for(app, add_mapping, monkeypatch):
    from aiimpl_core.default_plugins.anthropic import AnthropicProvider

    def broken_for_eng(self, mapping):  # noqa: ANN001, ANN202
        if mapping.team_key == "ENG":
            raise KeyError("the provider's own setting")
        return frozenset({"ANTHROPIC_API_KEY"})

    monkeypatch.setattr(AnthropicProvider, "required_env_names", broken_for_eng)
    add_mapping("ENG", execution_mode="fly-machines")
    add_mapping("WEB", execution_mode="fly-machines")
    [failed, lacking] = model_rows()  # WEB is still checked
    assert failed[:2] == ("anthropic", "failed")
    assert failed[2].startswith("the sessions of ENG could not be checked: unexpected error (KeyError)")
    assert lacking == ("anthropic", "failed", NO_KEY.format(teams="WEB"))
