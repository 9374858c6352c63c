"""``GET /api/sessions`` and ``DELETE /api/sessions/<machineId>``: every row of the reference's
"Sessions" table, over the fake runner backends."""

from __future__ import annotations

from typing import Any

import pytest

from aiimpl_core.errors import ProviderError
from aiimpl_core.testing.fakes import FakeRun, FakeRunner
from aiimpl_core.types import RunPhase


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def start(runner: FakeRunner, job_id: int, run_id: str, issue_key: str = "ENG-1") -> None:
    request: Any = type("Req", (), {"issue_key": issue_key})()
    runner.runs[job_id] = FakeRun(request=request, run_id=run_id, phase=RunPhase.RUNNING)


def test_sessions_table(client, admin_headers, adm_runner, monkeypatch) -> None:
    start(adm_runner, 1, "m-1")

    # 500 (underlying error message): listing failed
    def list_fails(self: Any) -> Any:
        raise ProviderError("Fly API error 500: machines unavailable")

    with monkeypatch.context() as m:
        m.setattr(adm_runner.backend_class, "list_sessions", list_fails)
        resp = client.get("/api/sessions", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (
            500,
            {"error": "Fly API error 500: machines unavailable"},
        )

    # 500 (underlying error message): destroying failed
    def destroy_fails(self: Any, session_id: str) -> Any:
        raise ProviderError("Fly API error 409: machine is busy")

    with monkeypatch.context() as m:
        m.setattr(adm_runner.backend_class, "destroy_session", destroy_fails)
        resp = client.delete("/api/sessions/m-1", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (500, {"error": "Fly API error 409: machine is busy"})

    # 503 Fly sessions config not set: no configured backend manages sessions
    with monkeypatch.context() as m:
        m.setattr(adm_runner.backend_class, "is_configured", lambda self: False)
        resp = client.delete("/api/sessions/m-1", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (503, {"error": "Fly sessions config not set"})
        # GET /api/sessions returns an empty list, not an error, when sessions are not configured
        resp = client.get("/api/sessions", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (200, [])
    assert adm_runner.destroyed == []


def test_list_and_destroy(client, admin_headers, adm_runner) -> None:
    start(adm_runner, 1, "m-1")
    start(adm_runner, 2, "m-2", "ENG-2")
    listed = client.get("/api/sessions", headers=admin_headers).get_json()
    assert [(s["id"], s["backend"], s["state"], s["jobId"], s["issueKey"]) for s in listed] == [
        ("m-1", "github-actions", "running", 1, "ENG-1"),
        ("m-2", "github-actions", "running", 2, "ENG-2"),
    ]
    resp = client.delete("/api/sessions/m-1", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (
        200,
        {"id": "m-1", "backend": "github-actions", "destroyed": True},
    )
    assert adm_runner.destroyed == ["m-1"]
    assert [s["id"] for s in client.get("/api/sessions", headers=admin_headers).get_json()] == ["m-2"]
    unknown = client.delete("/api/sessions/m-404", headers=admin_headers)
    assert (unknown.status_code, unknown.get_json()) == (404, {"error": "Session not found"})


def test_a_backend_crash_is_a_500_without_a_traceback(client, admin_headers, adm_runner, monkeypatch) -> None:
    def crash(self: Any) -> Any:
        raise ValueError("token=abc")

    monkeypatch.setattr(adm_runner.backend_class, "list_sessions", crash)
    resp = client.get("/api/sessions", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (500, {"error": "Fake github-actions: ValueError"})
