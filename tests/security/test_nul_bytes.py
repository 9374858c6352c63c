"""NUL characters (``\\u0000``) in JSON strings and in path segments.

JSON allows them and SQLite stores them, but PostgreSQL text cannot hold one: psycopg refuses
the statement, and an endpoint that does not refuse the value first answers an unhandled 500.
Each case runs on both databases; on PostgreSQL the cases the code does not handle yet are marked
xfail (strict) at run time, so they turn into failures the day they are fixed without the mark
being removed — and stay green regression tests on SQLite.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import SECRETS, bearer

NUL = "a\u0000b"
STEP = {"id": "s1", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}

_PG_NUL = (
    "PostgreSQL refuses NUL in text: {where} passes a client string containing \\u0000 to the "
    "database and answers an unhandled 500; fix: refuse strings containing '\\x00' in one place — "
    "aiimpl_core/schemas/runner.py:read_json_body and aiimpl_core/schemas/common.py:read_json (as "
    "the endpoint's invalid-body answer) and a before_request check of request.view_args / path"
)


def _pg_xfail(request: pytest.FixtureRequest, app: Any, where: str) -> None:
    from aiimpl_core.extensions import db

    if db.engine.dialect.name == "postgresql":
        request.applymarker(pytest.mark.xfail(strict=True, reason=_PG_NUL.format(where=where)))


@pytest.fixture
def job(app, sec_mapping, sec_launch) -> tuple[int, dict[str, str]]:
    sec_mapping("ENG")
    return sec_launch("ENG-1")


def _ok(resp: Any) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert isinstance(resp.get_json(), dict)


def test_nul_in_a_progress_step(request, app, client, job):
    _pg_xfail(request, app, "aiimpl_core/services/callbacks.py:_upsert_step (POST /runner/progress)")
    _, env = job
    step = {**STEP, "id": NUL, "type": NUL, "detail": {"x": NUL}}
    _ok(client.post("/runner/progress", headers=bearer(env["AIIMPL_PROGRESS_TOKEN"]), json={"step": step}))


def test_nul_in_a_step_report(request, app, client, job):
    _pg_xfail(request, app, "aiimpl_core/services/callbacks.py:record_step_report (POST /api/step-report)")
    _, env = job
    step = {**STEP, "id": NUL}
    _ok(client.post("/api/step-report", json={"nonce": env["AIIMPL_NONCE"], "step": step}))


def test_nul_in_a_status_event(request, app, client, job):
    _pg_xfail(request, app, "aiimpl_core/services/callbacks.py:status_event (POST /api/status)")
    _, env = job
    _ok(
        client.post(
            "/api/status", json={"nonce": env["AIIMPL_NONCE"], "event": "session_failed", "reason": NUL}
        )
    )


def test_nul_in_a_result(request, app, client, job):
    _pg_xfail(request, app, "aiimpl_core/services/callbacks.py:record_result (POST /runner/result)")
    _, env = job
    body = {
        "outcome": "failure",
        "phase": "implementation",
        "comments": [{"body": NUL}],
        "error": NUL,
        "logExcerpt": NUL,
    }
    _ok(client.post("/runner/result", headers=bearer(env["AIIMPL_RESULT_TOKEN"]), json=body))


def test_nul_in_a_nonce(app, client, job):
    for url, body in (
        ("/api/status", {"nonce": NUL, "event": "session_created"}),
        ("/api/step-report", {"nonce": NUL, "step": STEP}),
        ("/api/token", {"nonce": NUL, "owner": "acme"}),
    ):
        resp = client.post(url, json=body)
        assert resp.status_code == 403, (url, resp.get_data(as_text=True))


def test_nul_in_a_mapping_team_key(request, app, client, sec_admin):
    _pg_xfail(
        request, app, "aiimpl_core/services/mappings.py:save (POST /api/mappings, teamKey looked up first)"
    )
    body = {
        "teamKey": "EN\u0000G",
        "owner": "acme",
        "repo": "api",
        "defaultBranch": "main",
        "ticketing": {"provider": "fake-tracker"},
    }
    resp = client.post("/api/mappings", headers=sec_admin, json=body)
    assert resp.status_code == 400, resp.get_data(as_text=True)


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_nul_in_a_team_key_path(request, app, client, sec_admin, method):
    _pg_xfail(request, app, f"aiimpl_core/api/admin_mappings.py ({method} /api/mappings/<teamKey>)")
    resp = client.open("/api/mappings/EN%00G", method=method, headers=sec_admin, json={"paused": True})
    assert resp.status_code == 404, resp.get_data(as_text=True)


def test_nul_in_a_gap_fill_issue_key(request, app, client, sec_mapping):
    _pg_xfail(request, app, "aiimpl_core/services/gapfill.py:trigger_gap_fill (POST /trigger/gap-fill)")
    sec_mapping("ENG")
    resp = client.post(
        "/trigger/gap-fill",
        headers=bearer(SECRETS["AIIMPL_TRIGGER_SECRET"]),
        json={"issueKey": "ENG-\u00001", "prNumber": 1},
    )
    _ok(resp)
