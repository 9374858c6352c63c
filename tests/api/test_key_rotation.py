"""Changing ``AIIMPL_SECRET_KEY`` with the old one in ``AIIMPL_SECRET_KEY_FALLBACKS``: the runs in
flight keep reporting, the stored secrets stay readable until ``aiimpl secrets rekey``, and the old
keys are masked as the key is."""
from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo
from sqlalchemy import select

from aiimpl_core import logs
from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db
from aiimpl_core.orm import Secret
from aiimpl_core.services import secrets as secrets_service
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

NEW_KEY = "n" * 24 + "the-new-secret-key-0123456789"


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


@pytest.fixture
def new_key(app):
    """The key changed from the test key to :data:`NEW_KEY`, the test key kept as the fallback."""
    app.config.update(AIIMPL_SECRET_KEY=NEW_KEY, AIIMPL_SECRET_KEY_FALLBACKS=(TEST_SECRET_KEY,))
    yield
    app.config.update(AIIMPL_SECRET_KEY=TEST_SECRET_KEY, AIIMPL_SECRET_KEY_FALLBACKS=None)


def _progress(client, token):  # noqa: ANN001, ANN202
    step = {"id": "clone", "type": "git", "status": "running", "started_at": "2026-11-29T05:00:00Z"}
    return client.post("/runner/progress", json={"step": step}, headers={"Authorization": f"Bearer {token}"})


def test_a_run_dispatched_before_the_key_changed_still_reports(app, client, cb_job, cb_token):
    """Its token was signed with the old key: accepted while that key is a fallback, refused as
    the reference's ``bad_signature`` once it is not; a token of the new key is accepted."""
    job_id, _ = cb_job()
    old = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    app.config["AIIMPL_SECRET_KEY"] = NEW_KEY
    refused = _progress(client, old)
    assert (refused.status_code, refused.get_json()) == (401, {"error": "bad_signature"})
    app.config["AIIMPL_SECRET_KEY_FALLBACKS"] = ("an-unrelated-earlier-key-0000000000000000", TEST_SECRET_KEY)
    try:
        assert _progress(client, old).status_code == 200
        assert _progress(client, cb_token(job_id, "implementation", tokens.AUD_PROGRESS,
                                          secret=NEW_KEY)).status_code == 200
        # a fallback opens what its token opens, no more: the audience is still checked
        wrong = cb_token(job_id, "implementation", tokens.AUD_RESULT)
        assert _progress(client, wrong).get_json() == {"error": "wrong_audience"}
        forged = cb_token(job_id, "implementation", tokens.AUD_PROGRESS,
                          secret="never-a-key-of-ours-00000000000000")
        assert _progress(client, forged).get_json() == {"error": "bad_signature"}
    finally:
        app.config.update(AIIMPL_SECRET_KEY=TEST_SECRET_KEY, AIIMPL_SECRET_KEY_FALLBACKS=None)


def test_stored_secrets_are_read_with_a_fallback_until_rekeyed(app, cb_mapping):
    """Secrets encrypted with the old key are read while it is a fallback (``aiimpl check`` says
    which); ``aiimpl secrets rekey`` encrypts them with the new key, keeping their times, and they
    are read once the fallback is gone. One no key reads is named and left as it is."""
    from aiimpl_core.cli import (
        cli,
        commands,  # noqa: F401 - registers the command groups
    )
    from aiimpl_core.services.checks import run_checks

    cb_mapping("ENG")
    secrets_service.set_secret("", "DEPLOY_KEY", "global-value-of-the-old-key")
    secrets_service.set_secret("ENG", "ENG_TOKEN", "team-value-of-the-old-key")
    times = dict(db.session.execute(select(Secret.name, Secret.updated_at)).all())
    db.session.commit()

    def check_rows() -> dict[str, tuple[str, str]]:
        return {row.name: (row.status, row.detail) for row in run_checks() if row.kind == "secrets"}

    def rekey() -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["secrets", "rekey"], obj=ScriptInfo(create_app=lambda: app))
        return result.exit_code, result.output

    app.config["AIIMPL_SECRET_KEY"] = NEW_KEY
    try:
        assert secrets_service.values_for_team("ENG") == {}  # the old key alone reads them
        app.config["AIIMPL_SECRET_KEY_FALLBACKS"] = (TEST_SECRET_KEY,)
        assert secrets_service.values_for_team("ENG") == {"DEPLOY_KEY": "global-value-of-the-old-key",
                                                          "ENG_TOKEN": "team-value-of-the-old-key"}
        assert check_rows() == {"current key": (
            "ok", "2 stored secret(s) are read with a key of AIIMPL_SECRET_KEY_FALLBACKS: DEPLOY_KEY "
                  "(global), ENG_TOKEN (ENG); run `aiimpl secrets rekey` before removing it")}
        # a secret set now is the new key's
        secrets_service.set_secret("", "NEW_ONE", "set-after-the-change")
        assert rekey() == (0, "2 secret(s) encrypted with the current key.\n")
        assert rekey() == (0, "0 secret(s) encrypted with the current key.\n")
        assert check_rows() == {}
        assert dict(db.session.execute(select(Secret.name, Secret.updated_at)
                                       .where(Secret.name != "NEW_ONE")).all()) == times
        db.session.commit()
        app.config["AIIMPL_SECRET_KEY_FALLBACKS"] = None
        assert secrets_service.values_for_team("ENG") == {"DEPLOY_KEY": "global-value-of-the-old-key",
                                                          "ENG_TOKEN": "team-value-of-the-old-key",
                                                          "NEW_ONE": "set-after-the-change"}
        # one of a key that is no longer given: named, left, exit 1
        app.config["AIIMPL_SECRET_KEY"] = "yet-another-key-0000000000000000000000"
        app.config["AIIMPL_SECRET_KEY_FALLBACKS"] = (NEW_KEY,)
        secrets_service.set_secret("", "NEWEST", "of-the-newest-key")
        app.config.update(AIIMPL_SECRET_KEY=NEW_KEY, AIIMPL_SECRET_KEY_FALLBACKS=("unrelated-key",))
        code, output = rekey()
        assert code == 1
        assert output.startswith("0 secret(s) encrypted with the current key.\nError: 1 stored secret(s) "
                                 "cannot be decrypted with the current AIIMPL_SECRET_KEY (was the key "
                                 "changed?): NEWEST (global); set it again, or give the key it was stored "
                                 "with in AIIMPL_SECRET_KEY_FALLBACKS")
        assert "of-the-newest-key" not in output
    finally:
        app.config.update(AIIMPL_SECRET_KEY=TEST_SECRET_KEY, AIIMPL_SECRET_KEY_FALLBACKS=None)


def test_a_value_set_while_rekeying_is_kept(app, cb_mapping, monkeypatch):
    """A secret set again between the rekey's read and its write (another process, on PostgreSQL)
    keeps the value set: the rekey writes only over the value it read."""
    secrets_service.set_secret("", "DEPLOY_KEY", "old-value")
    db.session.commit()
    app.config.update(AIIMPL_SECRET_KEY=NEW_KEY, AIIMPL_SECRET_KEY_FALLBACKS=(TEST_SECRET_KEY,))
    read_with = secrets_service._read_with

    def set_meanwhile(token, keys):  # noqa: ANN001, ANN202
        db.session.execute(Secret.__table__.update().values(
            value_encrypted=secrets_service._fernet().encrypt(b"set-meanwhile").decode()))
        return read_with(token, keys)

    monkeypatch.setattr(secrets_service, "_read_with", set_meanwhile)
    try:
        assert secrets_service.rekey() == (0, [])
        assert secrets_service.values_for_team("ENG") == {"DEPLOY_KEY": "set-meanwhile"}
    finally:
        app.config.update(AIIMPL_SECRET_KEY=TEST_SECRET_KEY, AIIMPL_SECRET_KEY_FALLBACKS=None)


def test_the_fallback_keys_are_masked_as_the_key_is(app, caplog, cb_job, cb_token, new_key):
    """Each earlier key is masked in the log on its own, and a run token signed with one is masked
    in what a runner reports, as one of the current key's."""
    from aiimpl_core.app import create_app
    from aiimpl_core.config import load
    from aiimpl_core.orm import Job
    from aiimpl_core.services import redaction

    first, second = "first-earlier-key-1111111111111111", "second-earlier-key-2222222222222222"
    assert load({"AIIMPL_SECRET_KEY_FALLBACKS": f" {first} ,{second},,{first}"})[
        "AIIMPL_SECRET_KEY_FALLBACKS"] == (first, second)
    logs.SECRETS.clear()
    try:
        create_app({"TESTING": True, "AIIMPL_SECRET_KEY": "k" * 40,
                    "AIIMPL_DATABASE_URL": app.config["AIIMPL_DATABASE_URL"]}, load_entrypoints=False,
                   environ={"AIIMPL_SECRET_KEY_FALLBACKS": f"{first},{second}"})
        caplog.set_level(logging.INFO)
        logging.getLogger("aiimpl.plugin").error("signed with %s or %s", first, second)
        assert caplog.messages == ["signed with [REDACTED] or [REDACTED]"]
    finally:
        logs.SECRETS.clear()
    job_id, _ = cb_job()
    old = cb_token(job_id, "implementation", tokens.AUD_RESULT)  # (the test key: now the fallback)
    job = db.session.get(Job, job_id)
    assert redaction.redactor_for(job).text(f"token {old} leaked") == "token [REDACTED] leaked"


def test_fallbacks_given_as_text_are_the_list_the_environment_gives():
    """A configuration handed to the app as it is (``create_app``'s config, a test's or an
    embedder's) holds the text: split as the environment's is, never into one-character keys."""
    from aiimpl_core.config import secret_keys

    given = {"AIIMPL_SECRET_KEY": NEW_KEY, "AIIMPL_SECRET_KEY_FALLBACKS": " old-key ,older-key"}
    assert secret_keys(given) == (NEW_KEY, "old-key", "older-key")
    assert secret_keys({"AIIMPL_SECRET_KEY": NEW_KEY, "AIIMPL_SECRET_KEY_FALLBACKS": NEW_KEY}) == (NEW_KEY,)
    assert secret_keys({"AIIMPL_SECRET_KEY": NEW_KEY}) == (NEW_KEY,)


def test_secrets_read_with_a_fallback_by_a_process_without_the_key_fail_the_check(app):
    """A process that made up its key reads the secrets through a fallback, but could not rekey
    them (refused): the check says to set the key, not to run the rekey."""
    from aiimpl_core.services.checks import run_checks

    secrets_service.set_secret("", "DEPLOY_KEY", "stored-with-the-test-key")
    db.session.commit()
    app.config.update({"AIIMPL_SECRET_KEY": "made-up-for-this-process-000000000000",
                       secrets_service.KEY_MADE_UP: True,
                       "AIIMPL_SECRET_KEY_FALLBACKS": (TEST_SECRET_KEY,)})
    try:
        [row] = [row for row in run_checks() if row.kind == "secrets"]
        assert (row.name, row.status) == ("current key", "failed")
        assert row.detail.endswith("while AIIMPL_SECRET_KEY is not set: DEPLOY_KEY (global); set "
                                   "AIIMPL_SECRET_KEY (the same for every process), then run `aiimpl "
                                   "secrets rekey`")
    finally:
        app.config.update({"AIIMPL_SECRET_KEY": TEST_SECRET_KEY, secrets_service.KEY_MADE_UP: False,
                           "AIIMPL_SECRET_KEY_FALLBACKS": None})
