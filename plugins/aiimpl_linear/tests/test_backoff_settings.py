"""A tracker's back-off is shared through the database by every process that polls it. A refusal
of the credentials or settings a process has of its own (an operator's shell with a wrong
``AIIMPL_LINEAR_API_KEY`` running ``aiimpl poll --once``) backs off only the processes with those
settings: the server's poller, whose key is fine, goes on reading Linear. A refusal of the
credentials every process shares (the stored secret ``LINEAR_API_KEY``) still backs off all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from aiimpl_core.extensions import db
from aiimpl_core.services import poller
from aiimpl_core.services import secrets as secrets_service
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

from aiimpl_linear.testing import FakeLinear


def _poll_once(database_url: str, fake: FakeLinear, **settings: str) -> dict[str, Any]:
    """``aiimpl poll --once --json`` in a process of its own, on the test's database."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=database_url, AIIMPL_SECRET_KEY=TEST_SECRET_KEY,
                   AIIMPL_LINEAR_API_URL=fake.url, AIIMPL_LINEAR_WEBHOOK_SECRET=fake.webhook_secret,
                   **settings)
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "poll", "--once", "--json"],
                          env=environ, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_key_refused_to_a_hand_run_poll_does_not_back_off_the_servers_poller(
    app, fake: FakeLinear, database_url: str
) -> None:
    fake.add_issue("ENG", "Fix the login", labels=["AI-Implement"])

    by_hand = _poll_once(database_url, fake, AIIMPL_LINEAR_API_KEY="lin_api_wrong_key")
    assert by_hand["providersSkipped"]["linear"].startswith("listing failed: "), by_hand
    # the process with the wrong key backs off: run again, it does not ask Linear
    again = _poll_once(database_url, fake, AIIMPL_LINEAR_API_KEY="lin_api_wrong_key")
    assert again["providersSkipped"]["linear"].startswith("backing off until "), again

    report = run_cycle()

    assert "linear" not in report.providers_skipped, report.providers_skipped
    assert report.listed == {"linear": 1}
    assert poller.backoff_of("ticketing", "linear") is None


def test_a_stored_key_refused_backs_off_every_process_that_reads_it(
    app, fake: FakeLinear, database_url: str
) -> None:
    fake.add_issue("ENG", "Fix the login", labels=["AI-Implement"])
    app.config["AIIMPL_LINEAR_API_KEY"] = None  # the key is the stored secret, read by every process
    secrets_service.set_secret(secrets_service.GLOBAL, "LINEAR_API_KEY", "lin_api_revoked_key")
    db.session.rollback()  # (the transaction its answer read in: the server's next cycle begins its own)

    by_hand = _poll_once(database_url, fake)
    assert by_hand["providersSkipped"]["linear"].startswith("listing failed: "), by_hand

    asked = len(fake.requests)
    report = run_cycle()

    assert report.providers_skipped["linear"].startswith("backing off until "), report.providers_skipped
    assert len(fake.requests) == asked


def test_a_refusal_holds_back_the_processes_with_its_key_and_an_outage_every_process(
    app, fake: FakeLinear, database_url: str
) -> None:
    """Two apps on one database, one with a wrong key: its refused key holds back only itself (and
    is not exported by the other's ``/metrics``); the service's outage holds back both."""
    from datetime import timedelta

    from aiimpl_core.api.metrics import read_snapshot
    from aiimpl_core.app import create_app
    from aiimpl_core.orm import utcnow
    from aiimpl_core.testing.fakes import fail_with

    import aiimpl_linear.plugin

    other = create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
                        "TESTING": True, **fake.config(), "AIIMPL_LINEAR_API_KEY": "lin_api_wrong_key"},
                       plugins=[aiimpl_linear.plugin], load_entrypoints=False, environ={})
    soon = utcnow() + timedelta(seconds=5)
    try:
        for failure, holds_here in ((fail_with(401, "Authentication required"), False),
                                    (fail_with(503, "unavailable"), True)):
            with other.app_context():
                poller.record_failure("ticketing", "linear", failure)
                assert poller.backoff_of("ticketing", "linear", soon) is not None  # its own key's
            db.session.rollback()
            assert (poller.backoff_of("ticketing", "linear", soon) is not None) is holds_here, failure
            assert (("ticketing", "linear") in read_snapshot(soon).backoffs) is holds_here, failure
    finally:
        with other.app_context():
            db.engine.dispose()


def test_a_refusal_holds_back_the_processes_with_its_settings_while_the_secret_key_changes(
    app, fake: FakeLinear, database_url: str
) -> None:
    """A process on a new ``AIIMPL_SECRET_KEY`` that keeps the old one in ``AIIMPL_SECRET_KEY_FALLBACKS``
    has the same settings of the connection as one still on the old key (a rolling restart), and as
    the back-offs recorded before the change: a refused key holds both back, whichever recorded it."""
    from datetime import timedelta

    from aiimpl_core.app import create_app
    from aiimpl_core.orm import utcnow
    from aiimpl_core.testing.fakes import fail_with

    import aiimpl_linear.plugin

    new_key = "test-secret-key-rotated-0123456789"
    rotated = create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": new_key,
                          "AIIMPL_SECRET_KEY_FALLBACKS": TEST_SECRET_KEY, "TESTING": True, **fake.config()},
                         plugins=[aiimpl_linear.plugin], load_entrypoints=False, environ={})
    soon = utcnow() + timedelta(seconds=5)
    refused = fail_with(401, "Authentication required")
    try:
        # recorded by the process on the old key (before the change, or not restarted yet)
        poller.record_failure("ticketing", "linear", refused)
        db.session.rollback()
        with rotated.app_context():
            assert poller.backoff_of("ticketing", "linear", soon) is not None
            # recorded by the process on the new key: the one on the old key is held back too, and
            # the failures in a row of both are counted together
            assert poller.record_failure("ticketing", "linear", refused).failures == 2
        db.session.rollback()
        assert poller.backoff_of("ticketing", "linear", soon) is not None
        assert poller.record_failure("ticketing", "linear", refused).failures == 3
    finally:
        with rotated.app_context():
            db.engine.dispose()
