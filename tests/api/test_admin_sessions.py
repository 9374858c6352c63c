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


def test_a_backend_raising_not_found_for_an_id_not_its_own_is_asked_no_further(
    client, admin_headers, adm_runner, monkeypatch
) -> None:
    """The core asks each backend in turn: a backend's NotFound (the obvious answer for an id that
    is not its) is the guide's False, not a 500 naming the exception's class."""
    from aiimpl_core.errors import NotFound

    def not_mine(self: Any, session_id: str) -> bool:
        raise NotFound(f"no session {session_id}")

    monkeypatch.setattr(adm_runner.backend_class, "destroy_session", not_mine)
    resp = client.delete("/api/sessions/k-404", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (404, {"error": "Session not found"})


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


@pytest.mark.parametrize(("answer", "said"), [
    (None, "answered NoneType, not a list of SessionInfo"),
    ({"m-1": "started"}, "answered dict, not a list of SessionInfo"),
    (["m-1"], "answered a str, not a SessionInfo"),
], ids=["none", "dict", "strings"])
def test_a_listing_of_the_wrong_type_is_the_backends_failure_by_name(
    client, admin_headers, adm_runner, monkeypatch, answer, said
) -> None:
    """Not a 500 of an error inside the core (the answer used to be read as sessions)."""
    monkeypatch.setattr(adm_runner.backend_class, "list_sessions", lambda self: answer)
    resp = client.get("/api/sessions", headers=admin_headers)
    error = f"list_sessions of 'github-actions' {said}"
    assert (resp.status_code, resp.get_json()) == (500, {"error": error})


# -- a backend that is not in use does not turn the list into a 500 ----------------------------
# Local Docker counts as configured whenever DOCKER_HOST is set or the default socket exists, used
# or not: its failure answers the reference's 500 only while it is in use (the runner mode selects
# it, or a job of it is in flight). The Docker plugin's own tests do the same with a real
# unreachable engine.

ENGINE_DOWN = "local-docker: cannot reach the Docker engine: Connection refused"


@pytest.fixture
def idle_local() -> FakeRunner:
    """A ``local-docker`` backend (mode ``local`` only, like the Docker plugin's) whose listing and
    destroying fail as with an unreachable engine."""
    runner = FakeRunner("local-docker", "local", sessions=True, secrets=True, mapping_selectable=False)

    def engine_down(self: Any, *args: Any) -> Any:
        raise ProviderError(ENGINE_DOWN, provider="local-docker")

    runner.backend_class.list_sessions = engine_down  # type: ignore[method-assign]
    runner.backend_class.destroy_session = engine_down  # type: ignore[method-assign]
    return runner


def _local_mode(client, admin_headers) -> None:
    assert client.post("/api/runner-mode", json={"mode": "local"}, headers=admin_headers).status_code == 200


class TestABackendNotInUse:
    @pytest.fixture
    def aiimpl_plugins(self, adm_tracker, adm_runner, idle_local) -> list[object]:
        return [adm_tracker.plugin, adm_runner.plugin, idle_local.plugin]

    def test_its_failure_is_left_out_of_the_list_and_logged(self, client, admin_headers, adm_runner, caplog):
        start(adm_runner, 1, "m-1")
        resp = client.get("/api/sessions", headers=admin_headers)
        assert resp.status_code == 200, resp.get_json()
        assert [(s["id"], s["backend"]) for s in resp.get_json()] == [("m-1", "github-actions")]
        assert "local-docker" in caplog.text and "cannot reach the Docker engine" in caplog.text

    def test_its_failure_is_the_500_while_the_runner_mode_selects_it(self, client, admin_headers, adm_runner):
        start(adm_runner, 1, "m-1")
        _local_mode(client, admin_headers)
        resp = client.get("/api/sessions", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (500, {"error": ENGINE_DOWN})

    @pytest.mark.parametrize(("status", "shadow", "answer"), [
        ("running", False, 500),
        ("dispatched", False, 500),
        ("unknown", False, 500),
        ("completed", False, 200),  # ended: its container is no session of ours any more
        ("running", True, 200),  # a shadow job started nothing
    ])
    def test_its_failure_is_the_500_while_one_of_its_jobs_is_in_flight(
        self, client, admin_headers, cb_job, status, shadow, answer
    ) -> None:
        cb_job(status=status, shadow=shadow, backend="local-docker")
        resp = client.get("/api/sessions", headers=admin_headers)
        assert resp.status_code == answer
        if answer == 500:
            assert resp.get_json() == {"error": ENGINE_DOWN}

    def test_destroy_asks_the_other_backends(self, client, admin_headers, adm_runner, caplog):
        start(adm_runner, 1, "m-1")
        resp = client.delete("/api/sessions/m-1", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (
            200,
            {"id": "m-1", "backend": "github-actions", "destroyed": True},
        )
        caplog.clear()
        # no backend had it, and one could not be asked: its failure, never "Session not found";
        # said by the answer, not logged too (the CLI printed it twice)
        resp = client.delete("/api/sessions/c-404", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (500, {"error": ENGINE_DOWN})
        assert "destroying session" not in caplog.text


class TestOnlyAnIdleBackend:
    """Fly not configured, local mode not in use, local Docker unreachable."""

    @pytest.fixture
    def aiimpl_plugins(self, adm_tracker, adm_fly, idle_local) -> list[object]:
        return [adm_tracker.plugin, adm_fly.plugin, idle_local.plugin]

    def test_the_list_is_empty(self, client, admin_headers) -> None:
        resp = client.get("/api/sessions", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (200, [])

    def test_in_local_mode_the_list_is_the_500(self, client, admin_headers) -> None:
        _local_mode(client, admin_headers)
        resp = client.get("/api/sessions", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (500, {"error": ENGINE_DOWN})


class TestABackendThatCannotBeSetUp:
    """A plugin whose constructor raises (say, a setting it cannot parse) is left out of sessions
    and secrets, never their 500; naming it in a mapping says why it cannot be used."""

    @pytest.fixture
    def broken(self) -> FakeRunner:
        runner = FakeRunner("broken-runner", None, sessions=True, secrets=True)

        def cannot(self: Any, context: Any) -> None:
            raise RuntimeError("BROKEN_TOKEN=xyz-secret cannot be parsed")

        runner.backend_class.__init__ = cannot  # type: ignore[method-assign]
        return runner

    @pytest.fixture
    def aiimpl_plugins(self, adm_tracker, adm_runner, broken) -> list[object]:
        return [adm_tracker.plugin, adm_runner.plugin, broken.plugin]

    def test_sessions_and_secrets_go_on_without_it(self, client, admin_headers, adm_runner, caplog):
        start(adm_runner, 1, "m-1")
        resp = client.get("/api/sessions", headers=admin_headers)
        assert resp.status_code == 200, resp.get_json()
        assert [s["id"] for s in resp.get_json()] == ["m-1"]
        assert client.get("/api/global-secrets", headers=admin_headers).status_code == 200
        assert "setting up the runner provider 'broken-runner' failed" in caplog.text

    def test_a_mapping_naming_it_is_told_why(self, client, admin_headers):
        body = {"teamKey": "ENG", "owner": "acme", "repo": "api", "defaultBranch": "main",
                "executionMode": "broken-runner"}
        resp = client.post("/api/mappings", json=body, headers=admin_headers)
        assert resp.status_code == 400
        assert resp.get_json() == {"error": "the runner provider 'broken-runner' could not be set up "
                                            "(RuntimeError); the orchestrator's log has the details"}
        assert "xyz-secret" not in resp.get_data(as_text=True)
