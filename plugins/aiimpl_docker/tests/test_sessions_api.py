"""``GET /api/sessions`` with the Docker plugin installed and its engine unreachable (no engine needed).

The backend counts as configured whenever ``DOCKER_HOST`` is set (or the default socket exists),
whether or not local mode is used. An engine that does not answer must not turn the list into a
500 while local Docker is not in use: the reference answers an empty list when sessions are not
configured. In local mode (or while a local job is in flight) it is the reference's 500.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping
from aiimpl_core.testing.fakes import FakeTracker

import aiimpl_docker.plugin


def _closed_port() -> int:
    """A local TCP port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def aiimpl_plugins(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    return [FakeTracker().plugin, aiimpl_docker.plugin]


def _engine_down(resp: Any) -> bool:
    error = resp.get_json()["error"]
    return resp.status_code == 500 and error.startswith("local-docker: cannot reach the Docker engine")


def test_an_unreachable_engine_not_in_use_lists_no_sessions(
    client: Any, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        resp = client.get("/api/sessions", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (200, [])
    assert "sessions of local-docker left out" in caplog.text


def test_an_unreachable_engine_in_local_mode_is_the_500(client: Any, admin_headers: dict[str, str]) -> None:
    assert client.post("/api/runner-mode", json={"mode": "local"}, headers=admin_headers).status_code == 200
    assert _engine_down(client.get("/api/sessions", headers=admin_headers))


def test_an_unreachable_engine_with_a_local_job_in_flight_is_the_500(
    app: Any, client: Any, admin_headers: dict[str, str]
) -> None:
    mapping = Mapping(team_key="ENG", owner="acme", repo="api", default_branch="main",
                      execution_mode="github-actions", ticketing={"provider": "fake-tracker"})
    db.session.add(mapping)
    db.session.flush()
    db.session.add(Job(issue_key="ENG-1", team_key="ENG", mapping_id=mapping.id, provider="fake-tracker",
                       phase="implementation", status="running", backend="local-docker", owner="acme",
                       repo="api"))
    db.session.commit()
    # the mode was switched away from local while the job runs: its container is still a session
    assert _engine_down(client.get("/api/sessions", headers=admin_headers))


def test_destroying_on_an_unreachable_engine_is_the_500_not_a_404(
    client: Any, admin_headers: dict[str, str]
) -> None:
    assert _engine_down(client.delete("/api/sessions/0123456789ab", headers=admin_headers))
