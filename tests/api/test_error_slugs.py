"""The errors no view answers itself — an unexpected or a database error, no route, a method the route
does not take — in the shape of their path: the reference wants "a stable slug code" from
``/runner/*`` and ``/trigger/gap-fill`` and "a human-readable message" from ``/api/*``.

The shared handlers used to answer every path with the admin API's message (``Internal server
error``) or werkzeug's sentence (``The method is not allowed for the requested URL.``), so a runner
matching on the slug found a sentence there."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from aiimpl_core.auth import tokens
from aiimpl_core.services import callbacks, gapfill

SECRET = "gap-fill-trigger-secret"
STEP = {"id": "clone", "type": "git", "status": "running", "started_at": "2026-11-29T05:00:00Z"}


@pytest.fixture
def aiimpl_config():
    return {"AIIMPL_TRIGGER_SECRET": SECRET}


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def _broken(*args, **kwargs):
    raise RuntimeError("database went away")


def _database_down(*args, **kwargs):
    raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


@pytest.mark.parametrize("failure", [_broken, _database_down], ids=["unexpected", "database"])
def test_a_runner_callbacks_500_is_a_slug(client, cb_job, cb_token, monkeypatch, failure):
    """``/runner/progress`` answered ``Internal server error``, the ``/api/*`` message."""
    monkeypatch.setattr(callbacks, "record_progress", failure)
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    resp = client.post("/runner/progress", json={"step": STEP}, headers={"Authorization": f"Bearer {token}"})
    assert (resp.status_code, resp.get_json()) == (500, {"error": "internal_error"})


@pytest.mark.parametrize("failure", [_broken, _database_down], ids=["unexpected", "database"])
def test_a_gap_fill_triggers_500_is_a_slug(client, cb_mapping, monkeypatch, failure):
    monkeypatch.setattr(gapfill, "trigger_gap_fill", failure)
    cb_mapping()
    resp = client.post("/trigger/gap-fill", json={"issueKey": "ENG-1", "prNumber": 7},
                       headers={"Authorization": f"Bearer {SECRET}"})
    assert (resp.status_code, resp.get_json()) == (500, {"error": "internal_error"})


def test_an_api_500_keeps_the_references_message(client, cb_job, monkeypatch):
    """(``/api/step-report``'s table: ``500 Internal server error``)"""
    monkeypatch.setattr(callbacks, "record_step_report", _broken)
    _, nonce = cb_job()
    resp = client.post("/api/step-report", json={"nonce": nonce, "step": STEP})
    assert (resp.status_code, resp.get_json()) == (500, {"error": "Internal server error"})


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/runner/result", {"POST", "OPTIONS"}),
    ("PUT", "/runner/progress", {"POST", "OPTIONS"}),
    ("POST", "/runner/planning-context", {"GET", "HEAD", "OPTIONS"}),
    ("GET", "/trigger/gap-fill", {"POST", "OPTIONS"}),
])
def test_a_method_the_route_does_not_take_is_a_slug(client, method, path, allowed):
    """It used to be werkzeug's sentence, ``Method Not Allowed``'s description; ``Allow`` stays."""
    resp = client.open(path, method=method)
    assert (resp.status_code, resp.get_json()) == (405, {"error": "method_not_allowed"})
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) == allowed


@pytest.mark.parametrize("path", ["/runner/nothing", "/trigger/nothing", "/runner/session-package",
                                  "/runner/res%00ult"])
def test_no_route_under_a_slug_path_is_a_slug(client, path):
    """A NUL in the path is refused before routing (PostgreSQL's text cannot hold it): the same slug."""
    resp = client.post(path, json={})
    assert (resp.status_code, resp.get_json()) == (404, {"error": "not_found"})


def test_no_route_under_api_keeps_a_message(client, admin_headers):
    resp = client.get("/api/nothing", headers=admin_headers)
    assert resp.status_code == 404
    assert resp.get_json()["error"].startswith("The requested URL was not found")
    resp = client.get("/api/mappings%00/ENG", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (404, {"error": "Not Found"})
