"""NUL characters (``\\u0000``) in JSON strings and in path segments.

JSON allows them and SQLite stores them, but PostgreSQL text cannot hold one: psycopg refuses
the statement. Every body is read through ``aiimpl_core.schemas.common.parse_json``, which treats
such text as not JSON (the endpoint's invalid-body answer), and a NUL in a path is refused before
any view: each case runs on both databases and never answers a 500.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import SECRETS, bearer

NUL = "a\u0000b"
STEP = {"id": "s1", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}




@pytest.fixture
def job(app, sec_mapping, sec_launch) -> tuple[int, dict[str, str]]:
    sec_mapping("ENG")
    return sec_launch("ENG-1")


def _ok(resp: Any) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert isinstance(resp.get_json(), dict)


def test_nul_in_a_progress_step(request, app, client, job):
    _, env = job
    step = {**STEP, "id": NUL, "type": NUL, "detail": {"x": NUL}}
    _ok(client.post("/runner/progress", headers=bearer(env["AIIMPL_PROGRESS_TOKEN"]), json={"step": step}))


def test_nul_in_a_step_report(request, app, client, job):
    _, env = job
    step = {**STEP, "id": NUL}
    _ok(client.post("/api/step-report", json={"nonce": env["AIIMPL_NONCE"], "step": step}))


def test_nul_in_a_status_event(request, app, client, job):
    _, env = job
    _ok(
        client.post(
            "/api/status", json={"nonce": env["AIIMPL_NONCE"], "event": "session_failed", "reason": NUL}
        )
    )


def test_nul_in_a_result(request, app, client, job):
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
    # text no database can store makes the body unusable: each endpoint's not-JSON row answers
    for url, body, answer in (
        ("/api/status", {"nonce": NUL, "event": "session_created"}, (400, "Invalid JSON body")),
        ("/api/step-report", {"nonce": NUL, "step": STEP}, (400, "Invalid JSON body")),
        ("/api/token", {"nonce": NUL, "owner": "acme"}, (500, "Failed to generate token")),
    ):
        resp = client.post(url, json=body)
        assert (resp.status_code, resp.get_json()["error"]) == answer, (url, resp.get_data(as_text=True))


def test_nul_in_a_mapping_team_key(request, app, client, sec_admin):
    body = {
        "teamKey": "EN\u0000G",
        "owner": "acme",
        "repo": "api",
        "defaultBranch": "main",
        "ticketing": {"provider": "fake-tracker"},
    }
    resp = client.post("/api/mappings", headers=sec_admin, json=body)
    assert resp.status_code == 400, resp.get_data(as_text=True)


@pytest.mark.parametrize(("method", "path", "answer"), [
    ("GET", "/api/mappings/EN%00G", {"error": "Team not found"}),
    ("PATCH", "/api/mappings/EN%00G", {"error": "Team not found"}),
    ("DELETE", "/api/mappings/EN%00G", {"deleted": False}),
    ("GET", "/api/mappings/EN%00G/secrets", {"error": "Team not found"}),
    ("DELETE", "/api/global-secrets/A%00B", {"error": "Secret not found"}),
    ("GET", "/api/jobs/1%00/steps", {"error": "job not found"}),
    ("GET", "/api/mappings%00/ENG", {"error": "Not Found"}),  # no route
])
def test_nul_in_a_path_parameter_is_the_endpoints_own_not_found(request, app, client, sec_admin, method, path,
                                                                 answer):
    """(on PostgreSQL too, which refuses NUL in text: the views never see one)"""
    resp = client.open(path, method=method, headers=sec_admin, json={"paused": True})
    assert (resp.status_code, resp.get_json()) == (404, answer), resp.get_data(as_text=True)


def test_nul_in_a_gap_fill_issue_key(request, app, client, sec_mapping):
    sec_mapping("ENG")
    resp = client.post(
        "/trigger/gap-fill",
        headers=bearer(SECRETS["AIIMPL_TRIGGER_SECRET"]),
        json={"issueKey": "ENG-\u00001", "prNumber": 1},
    )
    _ok(resp)
