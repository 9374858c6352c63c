"""``aiimpl check``: every connection checked read-only, each failure reported, never a secret."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core import hookimpl
from aiimpl_core.cli import check as _check_command  # noqa: F401 - registers the command
from aiimpl_core.cli import cli
from aiimpl_core.errors import ProviderError
from aiimpl_core.github.app_auth import TOKENS
from aiimpl_core.providers import TicketingProvider
from aiimpl_core.schemas.admin import ChecksSchema
from aiimpl_core.services.checks import run_checks
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.types import CheckResult, MappingView


class Checked(TicketingProvider):
    """A tracker whose check reports what the test sets (``outcome``), or raises it."""

    id = "checked"
    display_name = "Checked tracker"
    configured = True
    outcome: Any = ()
    seen: list[list[str]] = []

    def is_configured(self) -> bool:
        return type(self).configured

    @classmethod
    def settings_problem(cls, config):  # noqa: ANN001, ANN206
        url = config.get("AIIMPL_CHECKED_URL")
        return None if not url or url.startswith("http") else "AIIMPL_CHECKED_URL must be an http(s) URL"

    def check(self, mappings: Sequence[MappingView]) -> Sequence[CheckResult]:
        type(self).seen.append([m.team_key for m in mappings])
        if isinstance(type(self).outcome, Exception):
            raise type(self).outcome
        return type(self).outcome

    def iter_triggered(self, teams):  # noqa: ANN001, ANN201
        return iter(())

    def get_issue(self, key):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def post_comment(self, key, body):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def set_stage(self, key, stage):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def mark_done(self, key):  # noqa: ANN001, ANN201
        raise NotImplementedError


class CheckedPlugin:
    __name__ = "checked-tracker"

    @hookimpl
    def aiimpl_register_ticketing_providers(self, register: Callable[..., None]) -> None:
        register(Checked)


@pytest.fixture
def gh():
    with FakeGitHub() as fake:
        fake.add_repo("acme", "eng")
        fake.add_repo("acme", "ops")
        fake.add_installation("acme")
        TOKENS.clear()
        yield fake
        fake.assert_clean()
        TOKENS.clear()


@pytest.fixture
def aiimpl_config(gh) -> dict[str, Any]:
    return {"AIIMPL_GITHUB_API_URL": gh.url, "AIIMPL_GITHUB_APP_ID": str(gh.app_id),
            "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem}


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    Checked.configured, Checked.outcome, Checked.seen = True, (), []
    return [tracker.plugin, runner.plugin, CheckedPlugin()]


def rows() -> dict[tuple[str, str, str], tuple[str, str]]:
    return {(r.kind, r.provider, r.name): (r.status, r.detail) for r in run_checks()}


def test_each_provider_is_checked_with_the_mappings_that_use_it(app, add_mapping):
    add_mapping("ENG", provider="checked")
    add_mapping("OPS", provider="fake-tracker")
    Checked.outcome = (CheckResult("credentials", True, "signed in as bot"),
                       CheckResult("project ENG", False, "no such project"))
    got = rows()
    assert Checked.seen == [["ENG"]]
    assert got[("ticketing", "checked", "credentials")] == ("ok", "signed in as bot")
    assert got[("ticketing", "checked", "project ENG")] == ("failed", "no such project")
    # a plugin without a check of its own: configured is all that is known
    assert got[("ticketing", "fake-tracker", "configured")][0] == "ok"
    assert got[("runner", "github-actions", "configured")][0] == "ok"
    assert got[("github", "github", "repository acme/eng")] == (
        "ok", "the App is installed and grants a session's permissions")
    assert got[("github", "github", "repository acme/ops")][0] == "ok"


def test_a_provider_that_raises_is_one_failed_line(app, add_mapping):
    add_mapping("ENG", provider="checked")
    Checked.outcome = ProviderError("checked: GET /me failed with HTTP 401: bad credentials")
    assert rows()[("ticketing", "checked", "connection")] == (
        "failed", "checked: GET /me failed with HTTP 401: bad credentials")
    Checked.outcome = RuntimeError("token=abc123 leaked in a message")
    assert rows()[("ticketing", "checked", "connection")] == ("failed", "unexpected error (RuntimeError)")


def test_only_a_foreign_failure_of_a_check_is_logged_with_its_traceback(app, add_mapping, caplog):
    add_mapping("ENG", provider="checked")
    Checked.outcome = ProviderError("checked: HTTP 401")
    rows()
    assert "checking checked failed" not in caplog.text
    Checked.outcome = RuntimeError("token=abc123 leaked in a message")
    rows()
    [record] = [r for r in caplog.records if r.getMessage() == "checking checked failed"]
    assert record.levelname == "WARNING"
    assert "Traceback" in caplog.text and "RuntimeError" in caplog.text


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ([{"name": "credentials", "ok": True}], "check() answered a dict, not a CheckResult"),
        ("ok", "check() answered str, not a list of CheckResult"),
    ],
    ids=["dicts", "str"],
)
def test_a_check_answering_the_wrong_type_is_one_failed_line(app, add_mapping, answer, detail):
    add_mapping("ENG", provider="checked")
    Checked.outcome = answer
    got = rows()
    assert got[("ticketing", "checked", "connection")] == ("failed", detail)
    assert got[("ticketing", "fake-tracker", "configured")][0] in ("ok", "skipped")  # the others go on


def test_a_check_returning_nothing_is_no_further_check(app, add_mapping):
    """A bare ``return`` (the author guide: "returning no result … reports the provider as
    configured with no further check"), as the default's empty tuple."""
    add_mapping("ENG", provider="checked")
    Checked.outcome = None
    assert rows()[("ticketing", "checked", "configured")] == (
        "ok", "configured (the plugin offers no further check)")


def test_a_provider_that_cannot_be_set_up_is_one_failed_line(app, add_mapping, monkeypatch):
    add_mapping("ENG", provider="checked")

    def broken(self, context):  # noqa: ANN001, ANN202
        raise RuntimeError("LINEAR_API_KEY=lin_api_secret is malformed")

    monkeypatch.setattr(Checked, "__init__", broken)
    app.extensions["aiimpl"]._instances.pop(("ticketing", "checked"), None)
    got = rows()
    assert got[("ticketing", "checked", "configured")] == (
        "failed",
        "the ticketing provider 'checked' could not be set up (RuntimeError); "
        "the orchestrator's log has the details",
    )
    assert got[("runner", "github-actions", "configured")][0] == "ok"


def test_an_unconfigured_provider_fails_only_when_a_mapping_uses_it(app, add_mapping):
    Checked.configured = False
    assert rows()[("ticketing", "checked", "configured")][0] == "skipped"
    add_mapping("ENG", provider="checked")
    assert rows()[("ticketing", "checked", "configured")] == (
        "failed", "not configured, but mappings use it: ENG")
    assert Checked.seen == []  # never asked to check


def test_an_unconfigured_provider_in_use_says_how_to_set_it_up(app, add_mapping, monkeypatch):
    """Its ``setup_hint``, as the GitHub line gives its own: "not configured" alone left the
    operator to find the variables in the plugin's docs."""
    Checked.configured = False
    monkeypatch.setattr(Checked, "setup_hint", "set CHECKED_API_KEY", raising=False)
    add_mapping("ENG", provider="checked")
    assert rows()[("ticketing", "checked", "configured")] == (
        "failed", "not configured, but mappings use it: ENG (set CHECKED_API_KEY)")


def test_mappings_saved_without_a_tracker_fail_a_line_naming_them(app, add_mapping):
    """Saved before a tracker plugin was installed (a mapping is refused so now): their issues were
    never read, and no line of the check said so."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    add_mapping("ENG", provider="checked")
    for team in ("OPS", "WEB"):
        add_mapping(team)
        db.session.execute(db.update(Mapping).where(Mapping.team_key == team).values(ticketing={}))
    db.session.commit()
    assert rows()[("ticketing", "mappings", "tracker")] == (
        "failed",
        "mappings name no tracker, so none of their issues is read: OPS, WEB; set one with "
        """`aiimpl mappings update OPS --ticketing '{"provider": "<id>"}'`""",
    )


def test_a_repository_the_app_is_not_installed_on_fails(app, add_mapping, gh):
    add_mapping("ENG")
    add_mapping("OPS", owner="elsewhere", repo="ops")
    got = rows()
    assert got[("github", "github", "repository acme/eng")][0] == "ok"
    assert got[("github", "github", "repository elsewhere/ops")] == (
        "failed", "the GitHub App is not installed on elsewhere/ops (or there is no such repository)")


@pytest.fixture
def run(app):
    def invoke(*args: str):
        return CliRunner().invoke(cli, ["check", *args], obj=ScriptInfo(create_app=lambda: app))

    return invoke


def test_the_command_prints_every_line_and_fails_on_a_failure(run, add_mapping, gh):
    add_mapping("ENG")
    result = run()
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if "repository acme/eng:" in x]
    assert line.split()[:3] == ["ok", "github", "github"]
    last = result.output.rstrip().splitlines()[-1]
    assert last.startswith(f"{len(result.output.splitlines()) - 1} checks: ") and "failed" not in last
    assert "nothing is configured" not in last
    assert gh.private_key_pem.splitlines()[1] not in result.output

    add_mapping("OPS", owner="elsewhere", repo="ops")
    result = run("--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)  # the document of GET /api/checks, for one parser of both
    failed = [r for r in doc["checks"] if r["status"] == "failed"]
    assert failed == [{"kind": "github", "provider": "github", "name": "repository elsewhere/ops",
                       "status": "failed", "detail": "the GitHub App is not installed on elsewhere/ops (or "
                                                     "there is no such repository)"}]
    text = run().output
    assert "1 failed" in text
    assert doc["failed"] == 1 and doc["summary"] == text.rstrip().splitlines()[-1]
    assert set(doc) == set(ChecksSchema().fields)


def test_the_summary_counts_each_outcome_and_says_when_nothing_was_checked():
    from aiimpl_core.services.checks import CheckRow, summary

    def summary_of(*statuses: str) -> str:
        return summary([CheckRow("runner", "x", "configured", status) for status in statuses])

    assert summary_of("ok", "ok", "skipped") == "3 checks: 2 passed, 1 skipped"
    assert summary_of("ok", "failed", "skipped") == "3 checks: 1 passed, 1 failed, 1 skipped"
    assert summary_of("failed") == "1 check: 0 passed, 1 failed"
    # a fresh install: every provider skipped, none checked (it said "7 checks, all passed")
    assert summary_of(*["skipped"] * 7) == (
        "7 checks: 0 passed, 7 skipped (nothing is configured to check yet)"
    )


def test_a_personal_token_is_checked_against_each_repository(app, add_mapping, gh):
    app.config.update(AIIMPL_GITHUB_APP_ID=None, AIIMPL_GITHUB_PRIVATE_KEY=None,
                      AIIMPL_GITHUB_TOKEN=gh.personal_token)
    add_mapping("ENG")
    assert rows()[("github", "github", "repository acme/eng")] == (
        "ok", "the personal token reads the repository")
    app.config["AIIMPL_GITHUB_TOKEN"] = "ghp_" + "0" * 36  # revoked
    status, detail = rows()[("github", "github", "repository acme/eng")]
    assert status == "failed" and "401" in detail and "ghp_" not in detail


def test_an_app_uninstalled_since_a_token_was_minted_fails_at_once(app, add_mapping, gh):
    add_mapping("ENG")
    assert rows()[("github", "github", "repository acme/eng")][0] == "ok"  # a token is minted and cached
    gh.installations.clear()
    assert rows()[("github", "github", "repository acme/eng")] == (
        "failed", "the GitHub App is not installed on acme/eng (or there is no such repository)")


def test_the_orchestrators_own_secrets_are_masked_in_every_line(app, add_mapping, gh):
    add_mapping("ENG", provider="checked")
    key = "lin_api_" + "k" * 32
    app.config["AIIMPL_GITHUB_WEBHOOK_SECRET"] = key  # any sensitive setting
    Checked.outcome = (CheckResult("credentials", False, f"refused key {key}"),)
    detail = rows()[("ticketing", "checked", "credentials")][1]
    assert key not in detail and detail.startswith("refused key ")
    Checked.outcome = ProviderError(f"checked: HTTP 401: bad key {key}")
    assert key not in rows()[("ticketing", "checked", "connection")][1]


def test_a_stored_secret_a_provider_read_is_masked_in_every_line(app, add_mapping, gh, run, monkeypatch):
    """A tracker's credentials stored as a global secret, quoted back by the service in a refusal:
    masked in the rows (the API's, the Checks panel's) and in the command's text lines, as in its
    JSON."""
    from aiimpl_core.services import secrets as secrets_service

    value = "SuperSecretValue123"
    secrets_service.set_secret(secrets_service.GLOBAL, "CHECKED_TOKEN", value)
    add_mapping("ENG", provider="checked")

    def refused(self, mappings):  # noqa: ANN001, ANN202
        sent = self.context.secret("CHECKED_TOKEN", None)
        return [CheckResult("credentials", False, f"HTTP 401: you sent {sent}")]

    monkeypatch.setattr(Checked, "check", refused)
    assert rows()[("ticketing", "checked", "credentials")] == ("failed", "HTTP 401: you sent [REDACTED]")
    for args in ((), ("--json",)):
        result = run(*args)
        assert result.exit_code == 1 and "you sent [REDACTED]" in result.output
        assert value not in result.output


def test_secrets_the_key_cannot_decrypt_fail_the_check(app, add_mapping, caplog):
    """A secret stored under another AIIMPL_SECRET_KEY is unreadable: said by the check (with its
    name, never a value) and in the log when a session or a tracker would have used it."""
    from aiimpl_core.services import secrets as secrets_service

    add_mapping("ENG", provider="checked")
    secrets_service.set_secret("", "LINEAR_API_KEY", "lin_api_value_never_shown")
    secrets_service.set_secret("ENG", "ENG_TOKEN", "team-value-never-shown")
    assert ("secrets", "secrets", "decryptable") not in rows()
    app.config["AIIMPL_SECRET_KEY"] = "another-key-than-the-one-they-were-stored-with"
    status, detail = rows()[("secrets", "secrets", "decryptable")]
    assert status == "failed"
    assert detail == ("2 stored secret(s) cannot be decrypted with the current AIIMPL_SECRET_KEY (was the "
                      "key changed?): LINEAR_API_KEY (global), ENG_TOKEN (ENG); set them again, or give "
                      "the key they were stored with in AIIMPL_SECRET_KEY_FALLBACKS")
    assert secrets_service.values_for_team("ENG") == {}
    assert "the secret ENG_TOKEN (ENG) cannot be decrypted with the current AIIMPL_SECRET_KEY" in caplog.text
    assert "never_shown" not in caplog.text and "never-shown" not in caplog.text


def test_a_cap_for_a_backend_no_plugin_provides_fails_the_check(app, add_mapping):
    assert ("settings", "AIIMPL_BACKEND_CAPS", "backends") not in rows()
    app.config["AIIMPL_BACKEND_CAPS"] = {"github-actions": 3, "fly-machine": 2}  # a typo
    assert rows()[("settings", "AIIMPL_BACKEND_CAPS", "backends")] == (
        "failed", "names no installed runner backend: fly-machine (installed: github-actions); "
                  "that cap never applies")


def test_a_setting_the_plugin_finds_wrong_is_said_as_aiimpl_config_says_it(app, add_mapping):
    """A malformed URL was said as what its first call failed with (`MissingSchema (not a valid
    http:// or https:// URL …)`), naming neither the setting nor which plugin's; the plugin's own
    settings_problem names it, and nothing is called."""
    add_mapping("ENG", provider="checked")
    app.config["AIIMPL_CHECKED_URL"] = "notaurl"
    said = ("failed", "AIIMPL_CHECKED_URL must be an http(s) URL")
    assert rows()[("ticketing", "checked", "configured")] == said
    assert Checked.seen == []


def test_a_plugin_that_checks_only_what_mappings_use_is_said_to_have_checked_nothing(app, add_mapping):
    """A backend no mapping uses (under the runner mode, say) was 'configured (the plugin offers
    no further check)', though its plugin has checks: it ran none for want of mappings."""
    assert rows()[("ticketing", "checked", "configured")] == (
        "ok", "configured; no mapping uses it, so nothing further was checked")


def test_mappings_without_the_github_webhook_secret_are_told_what_it_costs(app, add_mapping):
    """Every delivery is refused 401 `Invalid signature` while it is unset, which GitHub's delivery
    log shows as a wrong secret: the check says so, without failing (a setup may do without)."""
    app.config["AIIMPL_GITHUB_WEBHOOK_SECRET"] = None
    assert ("github", "webhook", "secret") not in rows()  # no mapping: nothing to say yet
    add_mapping("ENG")
    assert rows()[("github", "webhook", "secret")] == (
        "skipped", "AIIMPL_GITHUB_WEBHOOK_SECRET is not set: every delivery to /api/github/webhook is "
                   "refused (401 Invalid signature), so a merged pull request does not move its issue "
                   "to done")
    app.config["AIIMPL_GITHUB_WEBHOOK_SECRET"] = "whsec-configured-value"
    assert ("github", "webhook", "secret") not in rows()


MISSING = "no installed plugin provides it (not installed, or disabled), but mappings use it: "


def test_a_tracker_or_runner_mappings_use_that_no_plugin_provides_fails_the_check(app, add_mapping):
    add_mapping("OPS", provider="linear")  # mappings made while other plugins were installed
    add_mapping("ENG", provider="linear")
    add_mapping("WEB", execution_mode="fly-machines")
    got = rows()
    assert got[("ticketing", "linear", "installed")] == ("failed", MISSING + "ENG, OPS")
    assert got[("runner", "fly-machines", "installed")] == ("failed", MISSING + "WEB")
    assert ("ticketing", "fake-tracker", "installed") not in got


def test_a_forced_runner_mode_no_plugin_runs_fails_the_check(app, add_mapping):
    add_mapping("ENG")
    assert not [key for key in rows() if key[2] == "installed"]
    app.config["RUNNER_MODE"] = "fly"
    assert rows()[("runner", "runner mode fly", "installed")] == ("failed", MISSING + "ENG")


def test_a_global_secret_a_later_mapping_collides_with_fails_the_check(app, add_mapping):
    from aiimpl_core.errors import ValidationError
    from aiimpl_core.services import secrets as secrets_service

    secrets_service.set_secret("", "NEW_TOKEN", "value-never-shown")
    secrets_service.set_secret("", "OTHER", "value-never-shown")
    assert ("secrets", "secrets", "global names") not in rows()
    add_mapping("NEW")  # made after the secret: the secret can no longer be set
    with pytest.raises(ValidationError, match=r"must not start with a team key prefix \(NEW_\)"):
        secrets_service.validate("NEW_TOKEN", "rotated", scope="")
    assert rows()[("secrets", "secrets", "global names")] == (
        "failed", "global secret(s) named with a team key prefix, stored before that team's mapping was "
                  "made: NEW_TOKEN (NEW_); they can be deleted but not set again: store them under "
                  "another name")


def test_secrets_a_process_without_the_key_cannot_decrypt_say_to_set_the_key(app, add_mapping, caplog):
    """A process started without AIIMPL_SECRET_KEY has a random key of its own: setting the secrets
    again, as the check and the log said, would not help (it is refused), setting the key does."""
    from aiimpl_core.services import secrets as secrets_service

    add_mapping("ENG", provider="checked")
    secrets_service.set_secret("ENG", "ENG_TOKEN", "team-value-never-shown")
    app.config.update({"AIIMPL_SECRET_KEY": "a-random-key-of-this-process-0123456789",
                       secrets_service.KEY_MADE_UP: True})
    status, detail = rows()[("secrets", "secrets", "decryptable")]
    why = "as AIIMPL_SECRET_KEY is not set (this process has a random key of its own)"
    what = "set AIIMPL_SECRET_KEY to the key they were stored with"
    assert status == "failed"
    assert detail == f"1 stored secret(s) cannot be decrypted {why}: ENG_TOKEN (ENG); {what}"
    assert secrets_service.values_for_team("ENG") == {}
    assert f"the secret ENG_TOKEN (ENG) cannot be decrypted {why}: {what}" in caplog.text
