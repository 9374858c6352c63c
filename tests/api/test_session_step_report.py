"""``POST /api/step-report``: every row of the reference's table."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, JobStep

URL = "/api/step-report"


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def step(**over):
    value = {"id": "verify", "type": "script", "status": "running", "started_at": "2026-11-29T05:10:00Z"}
    value.update(over)
    return value


def without(key):
    return {k: v for k, v in step().items() if k != key}


ROWS = [
    # 400 nonce is required: nonce is missing or not a string
    (400, "nonce is required", lambda n: {"step": step()}, None),
    (400, "nonce is required", lambda n: {"nonce": ["x"], "step": step()}, None),
    (400, "nonce is required", lambda n: "just a string", None),
    # 400 Invalid JSON body: Body could not be parsed as JSON
    (400, "Invalid JSON body", None, b"{'single': 'quotes'}"),
    (400, "Invalid JSON body", None, b""),
    # 400 step is required: step is missing or not an object
    (400, "step is required", lambda n: {"nonce": n}, None),
    (400, "step is required", lambda n: {"nonce": n, "step": "verify"}, None),
    (400, "step is required", lambda n: {"nonce": n, "step": None}, None),
    # 400 step.<field> is required and must be a string (id, type, status, started_at)
    (400, "step.id is required and must be a string", lambda n: {"nonce": n, "step": without("id")}, None),
    (400, "step.id is required and must be a string", lambda n: {"nonce": n, "step": step(id=1)}, None),
    (
        400,
        "step.type is required and must be a string",
        lambda n: {"nonce": n, "step": without("type")},
        None,
    ),
    (
        400,
        "step.status is required and must be a string",
        lambda n: {"nonce": n, "step": step(status=0)},
        None,
    ),
    (
        400,
        "step.started_at is required and must be a string",
        lambda n: {"nonce": n, "step": without("started_at")},
        None,
    ),
    # 403 Invalid or expired nonce: No active job matches the nonce
    (403, "Invalid or expired nonce", lambda n: {"nonce": "nope", "step": step()}, None),
    # an empty nonce is a string (not "nonce is required", which was answered) that no job has
    (403, "Invalid or expired nonce", lambda n: {"nonce": "", "step": step()}, None),
]


@pytest.mark.parametrize(("status", "error", "make_body", "raw"), ROWS)
def test_step_report_table_rows(client, cb_job, status, error, make_body, raw):
    _, nonce = cb_job()
    if raw is not None:
        resp = client.post(URL, data=raw, content_type="application/json")
    else:
        resp = client.post(URL, json=make_body(nonce))
    assert resp.status_code == status
    assert resp.get_json() == {"error": error}
    assert db.session.scalar(select(JobStep)) is None


def test_step_report_first_failing_field_in_order(client, cb_job):
    _, nonce = cb_job()
    assert client.post(URL, json={"nonce": nonce, "step": {}}).get_json() == {
        "error": "step.id is required and must be a string"
    }
    assert client.post(URL, json={"nonce": nonce, "step": {"id": "a"}}).get_json() == {
        "error": "step.type is required and must be a string"
    }
    assert client.post(URL, json={"step": {}}).get_json() == {"error": "nonce is required"}


@pytest.mark.parametrize(
    "finished_at", [123, False, ["t"], "x" * 65], ids=["number", "bool", "list", "65-chars"]
)
def test_a_bad_optional_finished_at_is_named_not_step_is_required(client, cb_job, finished_at):
    """The step is there and is an object, so "step is required" would be false: the message names
    the optional field and what it must be, in the style of the table's ``step.<field>`` rows."""
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "step": step(finished_at=finished_at)})
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "step.finished_at must be a string of at most 64 characters"}
    assert db.session.scalar(select(JobStep)) is None


@pytest.mark.parametrize(("field", "limit"), [("id", 255), ("type", 255), ("status", 64), ("started_at", 64)])
def test_a_required_step_field_too_long_says_so(client, cb_job, field, limit):
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "step": step(**{field: "x" * (limit + 1)})})
    assert resp.status_code == 400
    assert resp.get_json() == {"error": f"step.{field} must be a string of at most {limit} characters"}
    assert client.post(URL, json={"nonce": nonce, "step": step(**{field: "x" * limit})}).status_code == 200
    # an empty id is still a missing one
    assert client.post(URL, json={"nonce": nonce, "step": step(id="")}).get_json() == {
        "error": "step.id is required and must be a string"
    }


def test_required_step_fields_come_before_a_bad_finished_at(client, cb_job):
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "step": {"id": "a", "finished_at": 1}})
    assert resp.get_json() == {"error": "step.type is required and must be a string"}


@pytest.mark.parametrize(("finished_at", "detail"), [(None, None), ("x" * 64, "log tail"), ("t", [1, 2])])
def test_optional_step_fields_accept_what_they_document(client, cb_job, finished_at, detail):
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "step": step(finished_at=finished_at, detail=detail)})
    assert resp.status_code == 200, resp.get_json()


def test_step_report_table_500_when_persisting_fails(client, cb_job, monkeypatch):
    from aiimpl_core.services import callbacks

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(callbacks, "_upsert_step", broken)
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "step": step()})
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "Internal server error"}


def test_step_report_is_recorded_and_upserted(client, cb_job):
    job_id, nonce = cb_job(status="dispatched")
    assert client.post(URL, json={"nonce": nonce, "step": step()}).status_code == 200
    resp = client.post(
        URL, json={"nonce": nonce, "step": step(status="passed", finished_at="2026-11-29T05:11:00Z")}
    )
    assert resp.get_json() == {"ok": True, "jobId": job_id, "status": "running", "stepId": "verify"}
    db.session.commit()
    [row] = db.session.scalars(select(JobStep)).all()
    assert (row.step_id, row.type, row.status, row.finished_at, row.source) == (
        "verify",
        "script",
        "passed",
        "2026-11-29T05:11:00Z",
        "session",
    )
    assert db.session.get(Job, job_id).status == "running"


def test_step_report_for_a_terminal_job_is_refused(client, cb_job):
    _, nonce = cb_job(status="completed")
    resp = client.post(URL, json={"nonce": nonce, "step": step()})
    assert resp.status_code == 403
    assert resp.get_json() == {"error": "Invalid or expired nonce"}
