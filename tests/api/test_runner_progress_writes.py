"""How ``POST /runner/progress`` writes a step: one statement, written only while the state its
redaction was keyed by holds, a transaction of its own on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, event, select

from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, JobStep

URL = "/runner/progress"
SECRET_VALUE = "late-global-secret-5b0e7c2d9a"


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def step(**over: Any) -> dict[str, Any]:
    value = {"id": "clone", "type": "git", "status": "running", "started_at": "2026-11-29T05:00:00Z"}
    value.update(over)
    return value


def _post(client: Any, token: str, body: dict[str, Any]) -> Any:
    return client.post(URL, json=body, headers={"Authorization": f"Bearer {token}"})


class _Sent:
    """The statements sent meanwhile (upper case, one line each), with the driver connection each
    went over and whether that connection was in autocommit then."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any, bool]] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        driver = cursor.connection
        self.statements.append((" ".join(statement.split()).upper(), driver,
                                bool(getattr(driver, "autocommit", False))))

    def __enter__(self) -> _Sent:
        event.listen(db.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(db.engine, "before_cursor_execute", self)

    def work(self) -> list[str]:
        return [s for s, _, _ in self.statements if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]


def test_on_postgresql_a_report_is_a_transaction_of_its_own_and_its_connection_goes_back_as_it_was(
    client, cb_job, cb_token
):
    """A report's one statement is atomic by itself: on PostgreSQL it runs in autocommit (no
    ``BEGIN`` or ``COMMIT`` to the server), and the connection returns to the pool out of
    autocommit, so the next request's transactions are transactions again."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's reports take the write lock in a transaction")
    job_id, _ = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    assert _post(client, token, {"step": step()}).status_code == 200  # reads whose job it is
    with _Sent() as sent:
        resp = _post(client, token, {"step": step(status="succeeded", detail={"exitCode": 0})})
    assert resp.status_code == 200
    assert resp.get_json() == {"ok": True, "jobId": job_id, "status": "running", "stepId": "clone"}
    [(statement, driver, autocommit)] = sent.statements
    assert statement.startswith("INSERT INTO JOB_STEPS") and autocommit
    assert driver.autocommit is False
    db.session.commit()
    row = db.session.scalar(select(JobStep).where(JobStep.job_id == job_id))
    assert (row.status, row.detail) == ("succeeded", {"exitCode": 0})


def test_a_report_after_a_secret_was_added_writes_nothing_redacted_with_the_old_secrets(
    app, client, cb_job, cb_token
):
    """The process saw the job's secrets before a global secret was added: the report's write,
    keyed by the old state, writes nothing; the state is read again and the step written once,
    masked with the new secret."""
    from aiimpl_core.services import secrets

    job_id, _ = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    assert _post(client, token, {"step": step(id="first")}).status_code == 200
    secrets.set_secret(secrets.GLOBAL, "LATE_TOKEN", SECRET_VALUE)
    db.session.commit()
    with _Sent() as sent:
        resp = _post(client, token, {"step": step(detail={"log": f"pushed with {SECRET_VALUE}"})})
    assert resp.status_code == 200
    work = sent.work()
    writes = [n for n, s in enumerate(work) if s.startswith("INSERT INTO JOB_STEPS")]
    assert len(writes) == 2, work
    assert work[writes[0] + 1].startswith("SELECT JOBS.TEAM_KEY"), work  # the state, read again
    db.session.commit()
    stored = db.session.scalar(
        select(JobStep.detail).where(JobStep.job_id == job_id, JobStep.step_id == "clone")
    )
    assert stored == {"log": "pushed with [REDACTED]"}


def test_a_report_for_a_job_gone_since_its_last_report_is_job_not_found(client, cb_job, cb_token):
    """The process remembers whose job it is; the job was deleted since: nothing is written and
    the answer is the reference's 404."""
    job_id, _ = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    assert _post(client, token, {"step": step()}).status_code == 200
    db.session.execute(delete(Job).where(Job.id == job_id))
    db.session.commit()
    resp = _post(client, token, {"step": step(id="after")})
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "job_not_found"}
    assert db.session.scalar(select(JobStep).where(JobStep.job_id == job_id)) is None


def test_a_step_whose_masked_text_outgrows_its_column_is_stored_cut_to_it(client, cb_job, cb_token):
    """A secret shorter than the mark `[REDACTED]` makes a masked text longer than the runner's:
    a status (64 characters) or id (255) at its limit grew past its column. PostgreSQL refused the
    write (a 500, the step lost) and SQLite stored it past its size; now it is cut to the column,
    on both, and the secret is not in it."""
    from aiimpl_core.services import secrets

    short = "hunter22"
    secrets.set_secret(secrets.GLOBAL, "DB_PASS", short)
    db.session.commit()
    job_id, nonce = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    body = {"step": step(id=short * 31, type=short * 31, status=short * 8, started_at=short * 8)}
    resp = _post(client, token, body)
    assert resp.status_code == 200, resp.get_json()
    db.session.commit()
    row = db.session.scalar(select(JobStep).where(JobStep.job_id == job_id))
    assert (len(row.step_id), len(row.type), len(row.status), len(row.started_at)) == (255, 255, 64, 64)
    for text in (row.step_id, row.type, row.status, row.started_at):
        assert short not in text and text.startswith("[REDACTED][REDACTED]")
    # the session's own report of a step goes the same way
    resp = client.post("/api/step-report", json={"nonce": nonce, "step": step(id="x", status=short * 8)})
    assert resp.status_code == 200, resp.get_json()
    db.session.commit()
    row = db.session.scalar(select(JobStep).where(JobStep.job_id == job_id, JobStep.step_id == "x"))
    assert row.status == ("[REDACTED]" * 7)[:64]
