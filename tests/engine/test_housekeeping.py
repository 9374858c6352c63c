"""Housekeeping: what only guards against repeats is removed past the retention, nothing else."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import cli
from aiimpl_core.cli import jobs as _jobs_commands  # noqa: F401 - registers the commands
from aiimpl_core.config import load
from aiimpl_core.errors import ConfigError
from aiimpl_core.extensions import db
from aiimpl_core.orm import (
    AuthFailure,
    ConsumedToken,
    EndedAdminSession,
    Job,
    OutboxItem,
    WebhookDelivery,
    utcnow,
)
from aiimpl_core.services import housekeeping
from aiimpl_core.services.poller import Poller
from aiimpl_core.testing.fakes import queue_outbox_item
from aiimpl_core.testing.orchestrator import Worker, each_at_once, wait_until_blocked

OLD, RECENT = timedelta(days=91), timedelta(days=89)


def _seed(add_mapping: Any) -> dict[str, Any]:
    """Rows of every kind housekeeping looks at, some past the retention (90 days) and some not."""
    now = utcnow()
    mapping = add_mapping("ENG")
    job = Job(issue_key="ENG-1", team_key="ENG", phase="implementation", status="succeeded",
              owner=mapping.owner, repo=mapping.repo, created_at=now - OLD)
    db.session.add(job)
    db.session.commit()
    ids = {
        state: queue_outbox_item(state=state, created_at=now - OLD, job_id=job.id)
        for state in ("done", "shadow", "dead", "pending", "sending")
    }
    ids["recent"] = queue_outbox_item(state="done", created_at=now - RECENT)
    db.session.add_all([
        WebhookDelivery(delivery_id="old", source="github", received_at=now - OLD),
        WebhookDelivery(delivery_id="recent", source="github", received_at=now - RECENT),
        ConsumedToken(jti="old", job_id=job.id, consumed_at=now - OLD),
        ConsumedToken(jti="recent", job_id=job.id, consumed_at=now - RECENT),
        AuthFailure(client="old", failures=3, window_start=now - timedelta(days=2),
                    last_failure_at=now - timedelta(days=2)),
        AuthFailure(client="recent", failures=3, window_start=now, last_failure_at=now),
        EndedAdminSession(session_id="expired", expires_at=now - timedelta(seconds=1)),
        EndedAdminSession(session_id="unexpired", expires_at=now + timedelta(hours=1)),
    ])
    db.session.commit()
    return {"job": job.id, "outbox": ids}


def _left(model: Any, key: Any) -> set[Any]:
    db.session.rollback()
    return set(db.session.scalars(db.select(key)))


def test_prune_removes_only_settled_records_past_the_retention(app, add_mapping):
    seeded = _seed(add_mapping)
    removed = housekeeping.prune(batch=2)  # several batches: 3 old settled items at 2 a statement
    assert removed == {"outbox": 3, "webhook_deliveries": 1, "consumed_tokens": 1, "auth_failures": 1,
                       "ended_admin_sessions": 1, "session_packages": 0}
    ids = seeded["outbox"]
    # an item still to be sent is never removed, however old; jobs are history and stay
    assert _left(OutboxItem, OutboxItem.id) == {ids["pending"], ids["sending"], ids["recent"]}
    assert _left(WebhookDelivery, WebhookDelivery.delivery_id) == {"recent"}
    assert _left(ConsumedToken, ConsumedToken.jti) == {"recent"}
    assert _left(AuthFailure, AuthFailure.client) == {"recent"}
    # a signed-out session is remembered until its token would have expired anyway
    assert _left(EndedAdminSession, EndedAdminSession.session_id) == {"unexpired"}
    assert _left(Job, Job.id) == {seeded["job"]}
    assert housekeeping.prune() == dict.fromkeys(removed, 0)


def test_a_used_token_is_kept_until_it_has_expired_whatever_the_retention(app, add_mapping):
    app.config["AIIMPL_RUN_TOKEN_SECONDS"] = 10 * 86400  # tokens that live 10 days
    now = utcnow()
    db.session.add_all([ConsumedToken(jti="live", consumed_at=now - timedelta(days=8)),
                        ConsumedToken(jti="expired", consumed_at=now - timedelta(days=12))])
    db.session.commit()
    assert housekeeping.prune(days=7)["consumed_tokens"] == 1
    assert _left(ConsumedToken, ConsumedToken.jti) == {"live"}


def test_retention_zero_keeps_every_guard_record_not_old_sign_in_failures(app, add_mapping):
    """``0`` keeps the writes, deliveries and tokens for good; sign-in failures and signed-out
    sessions have their own expiry, which no retention changes."""
    _seed(add_mapping)
    app.config["AIIMPL_RETENTION_DAYS"] = 0
    expired = {"outbox": 0, "webhook_deliveries": 0, "consumed_tokens": 0, "auth_failures": 1,
               "ended_admin_sessions": 1, "session_packages": 0}
    assert housekeeping.maybe_prune() == expired
    assert housekeeping.prune() == dict.fromkeys(expired, 0)
    assert len(_left(OutboxItem, OutboxItem.id)) == 6
    assert _left(WebhookDelivery, WebhookDelivery.delivery_id) == {"old", "recent"}
    assert _left(ConsumedToken, ConsumedToken.jti) == {"old", "recent"}
    assert _left(AuthFailure, AuthFailure.client) == {"recent"}
    assert _left(EndedAdminSession, EndedAdminSession.session_id) == {"unexpired"}


def test_the_retention_setting_is_checked_at_start_up():
    assert load({})["AIIMPL_RETENTION_DAYS"] == 90
    assert load({"AIIMPL_RETENTION_DAYS": "0"})["AIIMPL_RETENTION_DAYS"] == 0
    assert load({"AIIMPL_RETENTION_DAYS": "30"})["AIIMPL_RETENTION_DAYS"] == 30
    for bad in ("3", "-1", "soon"):
        with pytest.raises(ConfigError, match="AIIMPL_RETENTION_DAYS"):
            load({"AIIMPL_RETENTION_DAYS": bad})


def test_an_old_item_delivered_only_now_waits_its_own_retention(app, add_mapping):
    now = utcnow()
    late = queue_outbox_item(state="done", created_at=now - OLD, done_at=now - timedelta(minutes=1))
    queue_outbox_item(state="done", created_at=now - OLD, done_at=now - OLD)
    assert housekeeping.prune()["outbox"] == 1
    assert _left(OutboxItem, OutboxItem.id) == {late}


def test_an_old_item_retried_lately_and_given_up_on_again_waits_its_own_retention(app, add_mapping):
    now = utcnow()
    retried = queue_outbox_item(state="dead", created_at=now - OLD, requeued_at=now - timedelta(days=1))
    queue_outbox_item(state="dead", created_at=now - OLD, requeued_at=now - OLD)
    assert housekeeping.prune()["outbox"] == 1
    assert _left(OutboxItem, OutboxItem.id) == {retried}


def test_the_poller_prunes_once_an_hour_over_all_pollers(app, add_mapping):
    old = utcnow() - OLD
    for _ in range(3):
        queue_outbox_item(state="done", created_at=old)
    recent = queue_outbox_item(state="done", created_at=utcnow() - RECENT)
    first, second = Poller(60), Poller(60)
    second.holder = "another-host:1:1"
    first.run_once()
    assert _left(OutboxItem, OutboxItem.id) == {recent}
    queue_outbox_item(state="done", created_at=old)
    first.run_once()
    second.run_once()  # neither the same poller nor another one within the hour
    assert len(_left(OutboxItem, OutboxItem.id)) == 2
    assert housekeeping.maybe_prune(utcnow() + housekeeping.EVERY + timedelta(seconds=1)) is not None
    assert _left(OutboxItem, OutboxItem.id) == {recent}


def test_a_poll_run_from_cron_prunes_as_a_poll_loop_does(app, add_mapping):
    """``aiimpl poll --once`` is all the poller an install that polls from cron has: it prunes
    too, at most once an hour over all the pollers (it pruned nothing, and the tables grew)."""
    old = utcnow() - OLD
    for _ in range(2):
        queue_outbox_item(state="done", created_at=old)
    recent = queue_outbox_item(state="done", created_at=utcnow() - RECENT)
    obj = ScriptInfo(create_app=lambda: app)
    result = CliRunner().invoke(cli, ["poll", "--once"], obj=obj)
    assert result.exit_code == 0, result.output
    assert _left(OutboxItem, OutboxItem.id) == {recent}
    queue_outbox_item(state="done", created_at=old)
    Poller(60).run_once()  # a loop's cycle within the hour: pruned already
    assert CliRunner().invoke(cli, ["poll", "--once"], obj=obj).exit_code == 0
    assert len(_left(OutboxItem, OutboxItem.id)) == 2


@pytest.mark.postgres
def test_pollers_racing_for_the_housekeeping_prune_once(app, add_mapping):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("a race of connections needs PostgreSQL")
    _seed(add_mapping)
    results = each_at_once(app, [lambda _c, n=n: housekeeping.maybe_prune(holder=f"host-{n}:1:1")
                                 for n in range(4)])
    ran = [r for r in results if r is not None]
    assert len(results) == 4 and len(ran) == 1 and ran[0]["outbox"] == 3


def test_a_failing_housekeeping_leaves_the_poll_cycle_alone(app, add_mapping, monkeypatch, caplog):
    def broken(**_kw: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(housekeeping, "maybe_prune", broken)
    report = Poller(60).run_once()
    assert report.finished_at is not None
    assert "housekeeping failed" in caplog.text


def test_prune_command(app, add_mapping):
    _seed(add_mapping)
    run = CliRunner()
    obj = ScriptInfo(create_app=lambda: app)
    result = run.invoke(cli, ["prune", "--older-than", "200"], obj=obj)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "Removed (older than 200 days): outbox 0, webhook_deliveries 0, consumed_tokens 0, auth_failures 1, "
        "ended_admin_sessions 1, session_packages 0"
    )
    result = run.invoke(cli, ["prune", "--json"], obj=obj)
    assert json.loads(result.output) == {"outbox": 3, "webhook_deliveries": 1, "consumed_tokens": 1,
                                         "auth_failures": 0, "ended_admin_sessions": 0, "session_packages": 0}
    result = run.invoke(cli, ["prune", "--older-than", "3"], obj=obj)
    assert result.exit_code == 2 and "0 or at least 7 days" in result.output
    assert run.invoke(cli, ["prune", "--older-than", "0"], obj=obj).output.strip() == (
        "Retention is 0: tracker writes, webhook deliveries and used tokens are kept. Removed (expired): "
        "auth_failures 0, ended_admin_sessions 0, session_packages 0"
    )


def test_an_old_dead_item_requeued_while_the_prune_waits_for_it_is_kept(app, add_mapping):
    """An operator re-queues an old dead comment (``POST /api/outbox/<id>/retry``) while the prune
    waits for that row: the prune sees the item as it is now, pending, and leaves it."""
    from sqlalchemy import text

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes the two writers whole: the prune never waits on a row")
    item = queue_outbox_item(state="dead", created_at=utcnow() - OLD)
    db.session.remove()
    with db.engine.connect() as retry:
        with retry.begin():  # the retry's compare-and-set, held open while the prune starts
            assert retry.execute(text("UPDATE outbox SET state = 'pending' WHERE id = :i AND state = 'dead'"),
                                 {"i": item}).rowcount == 1
            pruning = Worker(app, "prune", housekeeping.prune)
            wait_until_blocked(app, pruning)  # the prune waits for the row now
        removed = pruning.join()
    assert removed["outbox"] == 0
    assert db.session.get(OutboxItem, item).state == "pending"


def test_run_tokens_outlast_the_session_whatever_the_setting(app, tracker, runner, add_mapping):
    """A run-token lifetime set shorter than a session may run: its tokens still last the wait to
    start (the run-not-found window), the lifetime and the overrun grace, so its progress and result
    are not refused as expired; a used one is kept as long."""
    import jwt

    from aiimpl_core.services.dispatch import run_cycle
    from aiimpl_core.session import env as session_env

    app.config.update(AIIMPL_RUN_TOKEN_SECONDS=60, AIIMPL_SESSION_LIFETIME_SECONDS=4 * 3600,
                      AIIMPL_RUN_NOT_FOUND_SECONDS=900)
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle(reconcile=False)
    [run] = runner.runs.values()
    for variable in (session_env.RESULT_TOKEN, session_env.PROGRESS_TOKEN, session_env.CONTEXT_TOKEN):
        claims = jwt.decode(run.request.env[variable.name], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 900 + 4 * 3600 + 600, variable.name
    # a used token is kept until it has expired (and a day more): one used a day and an hour ago
    # still has hours to run
    db.session.add(ConsumedToken(jti="used", consumed_at=utcnow() - timedelta(days=1, hours=1)))
    db.session.commit()
    assert housekeeping.prune(days=1)["consumed_tokens"] == 0
    # the setting lowered since: the tokens of the session started with four hours still live as
    # long, and a used one is still kept (one used a day and two hours ago)
    app.config.update(AIIMPL_SESSION_LIFETIME_SECONDS=3600)
    db.session.add(ConsumedToken(jti="used-earlier", consumed_at=utcnow() - timedelta(days=1, hours=2)))
    db.session.commit()
    assert housekeeping.prune(days=1)["consumed_tokens"] == 0
