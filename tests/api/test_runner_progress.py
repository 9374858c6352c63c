"""``POST /runner/progress``: every row of the reference's table, and how steps are recorded."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, JobStep
from aiimpl_core.testing.orchestrator import each_released_together

URL = "/runner/progress"


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def step(**over):
    value = {"id": "clone", "type": "git", "status": "running", "started_at": "2026-11-29T05:00:00Z"}
    value.update(over)
    return value


def without(key):
    return {k: v for k, v in step().items() if k != key}


def _post(client, token, body=None, raw=None, headers=None):
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    hdrs.update(headers or {})
    if raw is not None:
        return client.post(URL, data=raw, headers=hdrs, content_type="application/json")
    if body is None:
        return client.post(URL, headers=hdrs)
    return client.post(URL, json=body, headers=hdrs)


def _fresh(job_id):
    db.session.commit()
    return db.session.get(Job, job_id)


BODY_ROWS = [
    # invalid_body: Body is missing or not a JSON object
    ("invalid_body", None, None),
    ("invalid_body", None, b"{oops"),
    ("invalid_body", None, b"[]"),
    ("invalid_body", None, b"null"),
    ("invalid_body", None, b"true"),
    # invalid_step_id: step.id is missing or not a string
    ("invalid_step_id", {"step": without("id")}, None),
    ("invalid_step_id", {"step": step(id=3)}, None),
    ("invalid_step_id", {"step": step(id=None)}, None),
    # (beyond the table: an empty id names no step, and counts as a missing one, as on /api/step-report)
    ("invalid_step_id", {"step": step(id="")}, None),
    # invalid_step_started_at: step.started_at is missing or not a string
    ("invalid_step_started_at", {"step": without("started_at")}, None),
    ("invalid_step_started_at", {"step": step(started_at=1732856400)}, None),
    # invalid_step_status: step.status is missing or not a string
    ("invalid_step_status", {"step": without("status")}, None),
    ("invalid_step_status", {"step": step(status=["ok"])}, None),
    # invalid_step_type: step.type is missing or not a string
    ("invalid_step_type", {"step": without("type")}, None),
    ("invalid_step_type", {"step": step(type=False)}, None),
    # step_required: step is missing or not an object
    ("step_required", {}, None),
    ("step_required", {"step": None}, None),
    ("step_required", {"step": "clone"}, None),
    ("step_required", {"step": [step()]}, None),
]


@pytest.mark.parametrize(("error", "body", "raw"), BODY_ROWS)
def test_progress_table_400_rows(client, cb_job, cb_token, error, body, raw):
    job_id, _ = cb_job()
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_PROGRESS), body=body, raw=raw)
    assert resp.status_code == 400
    assert resp.get_json() == {"error": error}
    assert db.session.scalar(select(JobStep)) is None


def test_progress_first_failing_rule_in_table_order(client, cb_job, cb_token):
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    assert _post(client, token, {"step": {}}).get_json() == {"error": "invalid_step_id"}
    assert _post(client, token, {"step": {"id": "a"}}).get_json() == {"error": "invalid_step_started_at"}
    assert _post(client, token, {"step": {"id": "a", "started_at": "t"}}).get_json() == {
        "error": "invalid_step_status"
    }
    assert _post(client, token, {"step": {"id": "a", "started_at": "t", "status": "s"}}).get_json() == {
        "error": "invalid_step_type"
    }


@pytest.mark.parametrize(
    "finished_at",
    [123, True, ["2026-11-29T05:01:00Z"], {"at": 1}, "x" * 65],
    ids=["number", "bool", "list", "object", "65-chars"],
)
def test_a_bad_optional_finished_at_is_invalid_field_not_step_required(client, cb_job, cb_token, finished_at):
    """The step is there and is an object, so ``step_required`` ("step is missing or not an
    object") would be false: a wrongly typed (or too long) optional field answers ``invalid_field``
    naming it, as every runner callback does."""
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    resp = _post(client, token, {"step": step(finished_at=finished_at)})
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "invalid_field", "field": "step.finished_at"}
    assert db.session.scalar(select(JobStep)) is None


def test_required_step_fields_still_come_before_a_bad_finished_at(client, cb_job, cb_token):
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    resp = _post(client, token, {"step": step(id=5, finished_at=5)})
    assert resp.get_json() == {"error": "invalid_step_id"}


@pytest.mark.parametrize(
    ("finished_at", "detail"),
    [(None, None), ("x" * 64, "text"), ("2026-11-29T05:01:00Z", ["a", 1]), ("t", 3), ("t", {"k": "v"})],
)
def test_optional_step_fields_accept_what_they_document(client, cb_job, cb_token, finished_at, detail):
    """``finished_at``: a string of at most 64 characters, or null; ``detail``: any JSON value."""
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    resp = _post(client, token, {"step": step(finished_at=finished_at, detail=detail)})
    assert resp.status_code == 200, resp.get_json()


AUTH_ROWS = [
    (
        "bad_signature",
        lambda j, t: tokens.issue_run_token(
            "wrong-secret-wrong-secret-000000", j, "implementation", tokens.AUD_PROGRESS, 600
        ),
        {},
    ),
    (
        "expired",
        lambda j, t: t(j, "implementation", tokens.AUD_PROGRESS, now=datetime.now(UTC) - timedelta(days=1)),
        {},
    ),
    ("malformed", lambda j, t: "eyJhbGciOiJIUzI1NiJ9.e30", {}),
    ("wrong_audience", lambda j, t: t(j, "implementation", tokens.AUD_RESULT), {}),
    ("missing_bearer", lambda j, t: None, {}),
    ("missing_bearer", lambda j, t: None, {"Authorization": "Token abc"}),
]


@pytest.mark.parametrize(("error", "make", "headers"), AUTH_ROWS)
def test_progress_table_401_rows(client, cb_job, cb_token, error, make, headers):
    job_id, _ = cb_job()
    resp = _post(client, make(job_id, cb_token), {"step": step()}, headers=headers)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": error}


def test_progress_table_404_job_not_found(client, cb_token):
    resp = _post(client, cb_token(4242, "implementation", tokens.AUD_PROGRESS), {"step": step()})
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "job_not_found"}


@pytest.mark.parametrize("initial", ["unknown", "dispatched"])
def test_first_progress_moves_the_job_to_running(client, cb_job, cb_token, initial):
    job_id, _ = cb_job(status=initial)
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_PROGRESS), {"step": step()})
    assert resp.status_code == 200
    assert resp.get_json() == {"ok": True, "jobId": job_id, "status": "running", "stepId": "clone"}
    job = _fresh(job_id)
    assert job.status == "running" and job.running_at is not None
    assert [(t.from_status, t.to_status) for t in job.transitions] == [(initial, "running")]


def test_progress_upserts_by_step_id(client, cb_job, cb_token):
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    _post(client, token, {"step": step()})
    _post(
        client,
        token,
        {"step": step(status="succeeded", finished_at="2026-11-29T05:01:00Z", detail={"exitCode": 0})},
    )
    _post(client, token, {"step": step(id="setup", type="shell")})
    db.session.commit()
    rows = db.session.scalars(select(JobStep).where(JobStep.job_id == job_id).order_by(JobStep.id)).all()
    assert [(r.step_id, r.status, r.finished_at) for r in rows] == [
        ("clone", "succeeded", "2026-11-29T05:01:00Z"),
        ("setup", "running", None),
    ]
    assert rows[0].detail == {"exitCode": 0}
    assert rows[0].source == "runner"


def test_late_progress_is_recorded_but_never_changes_a_terminal_status(client, cb_job, cb_token):
    job_id, _ = cb_job(status="failed")
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_PROGRESS), {"step": step(id="late")})
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "failed"
    assert _fresh(job_id).status == "failed"
    assert db.session.scalar(select(JobStep.step_id)) == "late"


def test_concurrent_reports_of_one_step_keep_one_row(app, cb_live_server, cb_job, cb_token):
    import requests

    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)

    def send(status: str) -> Callable[[None], int]:
        return lambda _: requests.post(
            cb_live_server + URL,
            json={"step": step(status=status)},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ).status_code

    codes = each_released_together(nullcontext, [send(f"s{i}") for i in range(5)], timeout=60)
    assert codes == [200] * 5
    db.session.commit()
    rows = db.session.scalars(select(JobStep).where(JobStep.job_id == job_id)).all()
    assert len(rows) == 1 and rows[0].status in {f"s{i}" for i in range(5)}
    job = db.session.get(Job, job_id)
    assert [(t.from_status, t.to_status) for t in job.transitions] == [("dispatched", "running")]


def test_a_report_of_a_running_job_costs_one_statement(client, cb_job, cb_token):
    """The usual report (a running job) upserts the step and reads the job's status and the state
    of its secrets in one statement, on SQLite and PostgreSQL alike, once the process knows whose
    job it is (read with the job's first report, as is an unknown job's absence)."""
    from sqlalchemy import event

    job_id, _ = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    first = _post(client, token, {"step": step()})  # reads whose job it is, builds its redactor
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        again = _post(client, token, {"step": step(status="succeeded")})
        other = _post(client, cb_token(4242, "implementation", tokens.AUD_PROGRESS), {"step": step()})
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert [first.status_code, again.status_code, other.status_code] == [200, 200, 404]
    assert again.get_json() == {"ok": True, "jobId": job_id, "status": "running", "stepId": "clone"}
    work = [" ".join(s.split()).upper() for s in statements
            if not s.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    assert len(work) == 2, work
    assert work[0].startswith("INSERT INTO JOB_STEPS"), work
    assert work[1].startswith("SELECT JOBS.TEAM_KEY"), work  # an unknown job: nothing is written
    db.session.commit()
    rows = db.session.scalars(select(JobStep).where(JobStep.job_id == job_id)).all()
    assert [(r.step_id, r.status, r.source) for r in rows] == [("clone", "succeeded", "runner")]
    assert db.session.scalar(select(JobStep).where(JobStep.job_id == 4242)) is None


def test_on_sqlite_a_report_takes_the_write_lock_only_at_its_statement(client, cb_job, cb_token):
    """A report's one statement takes SQLite's write lock itself (a plain BEGIN), so the lock is
    held from that statement to the commit only; a report with a detail reads what redacting it
    needs in a read transaction of its own first, so its write holds the lock no longer."""
    from sqlalchemy import event

    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's locking")
    job_id, _ = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    sent: list[str] = []

    def count(conn, cursor, statement, *args):
        sent.append(" ".join(statement.split()).upper())

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        plain = _post(client, token, {"step": step()})
        detailed = _post(client, token, {"step": step(detail="cloned")})
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert [plain.status_code, detailed.status_code] == [200, 200]
    begins = [s for s in sent if s.startswith("BEGIN")]
    assert begins == ["BEGIN", "BEGIN", "BEGIN"], begins
    # each report writes with one statement right after its BEGIN
    writes = [sent[n + 1] for n, s in enumerate(sent) if s == "BEGIN" and n + 1 < len(sent)
              and sent[n + 1].startswith("INSERT")]
    assert len(writes) == 2 and all(w.startswith("INSERT INTO JOB_STEPS") for w in writes), sent


def test_a_report_with_a_detail_is_one_statement_too(client, cb_job, cb_token):
    """The session program reports every finished step with a detail, often ``{}`` or numbers
    only: once the job's first report has read whose job it is, each report is written in one
    statement, with a detail or without."""
    from sqlalchemy import event

    from aiimpl_core.orm import JobStep

    job_id, _ = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    sent: list[str] = []

    def count(conn, cursor, statement, *args):
        if not statement.upper().startswith("BEGIN"):
            sent.append(" ".join(statement.split()).upper())

    assert _post(client, token, {"step": step(id="first")}).status_code == 200  # whose job it is
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        empty = _post(client, token, {"step": step(id="a", status="succeeded", detail={})})
        numbers = _post(client, token,
                        {"step": step(id="b", status="succeeded", detail={"tests": 12, "ok": True})})
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert [empty.status_code, numbers.status_code] == [200, 200]
    assert len(sent) == 2 and all(s.startswith("INSERT INTO JOB_STEPS") for s in sent), sent
    rows = db.session.execute(db.select(JobStep.step_id, JobStep.detail).where(JobStep.job_id == job_id))
    stored = dict(rows.all())
    assert stored == {"first": None, "a": {}, "b": {"tests": 12, "ok": True}}
