"""The Fly backend inside the orchestrator: secrets set through the admin API reach a machine's
environment and nothing else; sessions are listed and destroyed through ``/api/sessions``; a
machine past its lifetime ends its job ``timed_out`` / ``machine_timeout`` through the reconciler."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping, utcnow
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fakes import FakeTracker

from aiimpl_fly.testing import FakeFly

from .conftest import APP, TOKEN

TEAM_SECRET = "team-secret-5c1d9e"
GLOBAL_SECRET = "global-secret-a0b4f7"
OTHER_TEAM_SECRET = "ops-secret-2e6f"


@pytest.fixture
def configured() -> bool:
    return True


@pytest.fixture
def aiimpl_config(app_fly: FakeFly, configured: bool) -> dict[str, Any]:
    if not configured:
        return {"AIIMPL_FLY_API_URL": app_fly.url}
    return {
        "AIIMPL_FLY_API_TOKEN": TOKEN,
        "AIIMPL_FLY_APP": APP,
        "AIIMPL_FLY_API_URL": app_fly.url,
        "AIIMPL_FLY_IMAGE": "registry.fly.io/aiimpl-session:v1",
    }


def add_mapping(team_key: str = "ENG", **kw: Any) -> None:
    values: dict[str, Any] = dict(
        owner="acme",
        repo="api",
        default_branch="main",
        execution_mode="fly-machines",
        machine_cpus=2,
        machine_memory_mb=1024,
        session_mode="interactive",
        extra_env={"NODE_ENV": "test"},
        ticketing={"provider": "fake-tracker"},
    )
    values.update(kw)
    db.session.add(Mapping(team_key=team_key, **values))
    db.session.commit()


def set_secrets(client: Any, headers: dict[str, str]) -> None:
    for url, body in [
        ("/api/mappings/ENG/secrets", {"name": "TEAM_TOKEN", "value": TEAM_SECRET}),
        ("/api/mappings/ENG/secrets", {"name": "SHARED_KEY", "value": "team-wins-9d"}),
        ("/api/mappings/OPS/secrets", {"name": "OPS_ONLY", "value": OTHER_TEAM_SECRET}),
        ("/api/global-secrets", {"name": "SHARED_KEY", "value": GLOBAL_SECRET}),
        ("/api/global-secrets", {"name": "GLOBAL_ONLY", "value": GLOBAL_SECRET + "-2"}),
    ]:
        resp = client.post(url, json=body, headers=headers)
        assert resp.status_code in (200, 201), resp.get_json()


def dispatch(tracker: FakeTracker, key: str = "ENG-1") -> Job:
    tracker.add(key, title="Add a health endpoint")
    run_cycle(reconcile=False)
    db.session.expire_all()
    return db.session.scalars(db.select(Job).where(Job.issue_key == key)).one()


def test_secrets_reach_the_machine_env_and_nowhere_else(
    app: Any,
    client: Any,
    admin_headers: dict[str, str],
    tracker: FakeTracker,
    app_fly: FakeFly,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    add_mapping("ENG")
    add_mapping("OPS", repo="ops")
    set_secrets(client, admin_headers)

    job = dispatch(tracker)

    assert job.backend == "fly-machines" and job.status == "dispatched"
    [machine] = app_fly.live()
    assert job.run_id == machine["id"]
    env = machine["config"]["env"]
    assert env["TEAM_TOKEN"] == TEAM_SECRET and env["GLOBAL_ONLY"] == GLOBAL_SECRET + "-2"
    assert env["SHARED_KEY"] == "team-wins-9d"  # the team's value over the global one
    assert "OPS_ONLY" not in env  # another team's secret
    assert env["NODE_ENV"] == "test" and env["AIIMPL_SESSION_MODE"] == "interactive"
    assert set(env["AIIMPL_SECRET_NAMES"].split(",")) >= {"TEAM_TOKEN", "SHARED_KEY", "GLOBAL_ONLY"}
    assert machine["config"]["guest"]["cpus"] == 2 and machine["config"]["guest"]["memory_mb"] == 1024

    # everywhere else a person or a log could look
    elsewhere = [
        repr({k: v for k, v in machine["config"].items() if k != "env"}),
        repr(machine["name"]),
        caplog.text,
        "\n".join(tracker.comments["ENG-1"]),
    ]
    for url in (
        "/api/sessions",
        "/api/mappings/ENG/secrets",
        "/api/global-secrets",
        "/api/issues",
        f"/api/jobs/{job.id}/steps",
    ):
        resp = client.get(url, headers=admin_headers)
        assert resp.status_code == 200, (url, resp.get_json())
        elsewhere.append(resp.get_data(as_text=True))
    for text in elsewhere:
        for secret in (TEAM_SECRET, GLOBAL_SECRET, "team-wins-9d", TOKEN):
            assert secret not in text


def test_sessions_are_listed_and_destroyed_through_the_api(
    app: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker, app_fly: FakeFly
) -> None:
    add_mapping()
    job = dispatch(tracker)
    app_fly.start(job.run_id)

    sessions = client.get("/api/sessions", headers=admin_headers).get_json()

    assert len(sessions) == 1
    row = sessions[0]
    assert (row["id"], row["backend"], row["state"], row["jobId"], row["issueKey"]) == (
        job.run_id,
        "fly-machines",
        "started",
        job.id,
        "ENG-1",
    )
    resp = client.delete(f"/api/sessions/{job.run_id}", headers=admin_headers)
    assert resp.status_code == 200, resp.get_json()
    assert app_fly.machines[job.run_id]["state"] == "destroyed"
    assert client.get("/api/sessions", headers=admin_headers).get_json() == []


def test_a_fly_failure_listing_sessions_is_a_500_with_its_message(
    app: Any, client: Any, admin_headers: dict[str, str], app_fly: FakeFly
) -> None:
    app_fly.fail_next("GET", f"/apps/{APP}/machines", 401, "token has expired")
    resp = client.get("/api/sessions", headers=admin_headers)
    assert resp.status_code == 500 and "token has expired" in resp.get_json()["error"]
    assert TOKEN not in resp.get_data(as_text=True)


def test_machine_past_its_lifetime_ends_the_job_machine_timeout(
    app: Any, client: Any, tracker: FakeTracker, app_fly: FakeFly
) -> None:
    add_mapping()
    job = dispatch(tracker)
    app_fly.start(job.run_id)
    reconcile()
    db.session.expire_all()
    assert db.session.get(Job, job.id).status == "running"

    db.session.execute(
        db.update(Job).where(Job.id == job.id).values(dispatched_at=utcnow() - timedelta(minutes=61))
    )
    db.session.commit()
    reconcile()
    run_cycle(reconcile=False)  # delivers the outbox

    db.session.expire_all()
    ended = db.session.get(Job, job.id)
    assert (ended.status, ended.timeout_reason) == ("timed_out", "machine_timeout")
    assert app_fly.machines[job.run_id]["state"] == "destroyed"
    [excerpt] = [c for c in tracker.comments["ENG-1"] if c.startswith("Log excerpt (`machine_timeout`)")]
    assert "exceeded its lifetime" in excerpt
    assert tracker.stage_labels("ENG-1") == set()


def test_a_machine_that_exits_non_zero_fails_the_job_session_failed(
    app: Any, tracker: FakeTracker, app_fly: FakeFly
) -> None:
    add_mapping()
    job = dispatch(tracker)
    app_fly.start(job.run_id)
    app_fly.exit(job.run_id, 1)

    reconcile()
    run_cycle(reconcile=False)

    db.session.expire_all()
    assert db.session.get(Job, job.id).status == "failed"
    comments = tracker.comments["ENG-1"]
    assert "⚠️ Implementation failed: the session machine exited with code 1" in comments
    assert any(c.startswith("Log excerpt (`session_failed`)") for c in comments)


def test_a_creation_without_an_answer_waits_dispatched_for_its_machine(
    app: Any, tracker: FakeTracker, app_fly: FakeFly
) -> None:
    # the proxy lost the creation's answer and the lookup right after failed: the job is not
    # failed (its machine runs the session), it waits dispatched without a run, the next reconcile
    # links the machine Fly created, and the issue is never dispatched a second time
    add_mapping()
    app_fly.lose_next_answer("POST", "/machines", 502)
    for _ in range(3):  # the lookup and the HTTP client's two retries of it
        app_fly.fail_next("GET", f"/apps/{APP}/machines", 503, "service unavailable")
    job = dispatch(tracker)
    assert (job.status, job.run_id) == ("dispatched", None)
    [machine] = app_fly.live()
    app_fly.start(machine["id"])

    reconcile(utcnow() + timedelta(minutes=1))  # once the back-off after the dispatch has passed
    run_cycle(reconcile=False)

    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert (job.status, job.run_id) == ("running", machine["id"])
    assert [m["id"] for m in app_fly.live()] == [machine["id"]]
    assert len(app_fly.server.requests_to("POST", f"/apps/{APP}/machines")) == 1


def test_no_capacity_fails_the_job_at_once_and_backs_the_dispatcher_off(
    app: Any, tracker: FakeTracker, app_fly: FakeFly
) -> None:
    # Fly answered that it cannot place the machine: none was created, so the job fails now with
    # the reason (not dispatched until the run-not-found window ends), and the next issues wait
    add_mapping()
    app_fly.no_capacity_next(503)
    job = dispatch(tracker)

    assert (job.status, job.run_id) == ("failed", None)
    assert job.error is not None and job.error.startswith(
        f"dispatch to Fly Machines failed: fly: POST /apps/{APP}/machines failed with HTTP 503: "
    )
    assert job.error.endswith("(Fly has no capacity for the machine: none was created)")
    assert app_fly.live() == [] and app_fly.server.requests_to("GET", f"/apps/{APP}/machines") == []
    backoff = poller.backoff_of("runner", "fly-machines")
    assert backoff is not None and "no capacity" in backoff.error


def test_a_rate_limited_creation_waits_and_a_later_cycle_creates_its_machine_once(
    app: Any, tracker: FakeTracker, app_fly: FakeFly
) -> None:
    # Fly rate-limited the creation (429, its retries too): nothing was created, so the job waits
    # unknown for a later cycle instead of failing, and that cycle creates its one machine
    add_mapping()
    for _ in range(3):  # the creation and the HTTP client's two retries of a 429, which did nothing
        app_fly.fail_next("POST", f"/apps/{APP}/machines", 429, "rate limit exceeded")
    job = dispatch(tracker)

    assert (job.status, job.run_id, job.launch_after is not None) == ("unknown", None, True)
    assert app_fly.live() == [] and tracker.comments.get(job.issue_key, []) == []

    run_cycle(now=utcnow() + timedelta(minutes=3), reconcile=False)

    db.session.expire_all()
    job = db.session.get(Job, job.id)
    [machine] = app_fly.live()
    assert (job.status, job.run_id, job.launch_after) == ("dispatched", machine["id"], None)
    assert len(app_fly.server.requests_to("POST", f"/apps/{APP}/machines")) == 4


def test_bedrock_is_refused_on_fly_machines(app: Any, client: Any, admin_headers: dict[str, str]) -> None:
    body = {
        "teamKey": "ENG",
        "owner": "acme",
        "repo": "api",
        "defaultBranch": "main",
        "provider": "bedrock",
        "awsRegion": "us-east-1",
        "executionMode": "fly-machines",
        "ticketing": {"provider": "fake-tracker"},
    }
    resp = client.post("/api/mappings", json=body, headers=admin_headers)
    assert resp.status_code == 400
    assert resp.get_json() == {
        "error": "provider 'bedrock' is not supported with executionMode 'fly-machines'"
    }


@pytest.mark.parametrize(
    ("size", "said"),
    [
        ({"machineMemoryMb": 1000}, "machineMemoryMb must be a multiple of 256 on Fly Machines, not 1000"),
        ({"machineCpus": 1, "machineMemoryMb": 4096},
         "machineMemoryMb must be between 256 and 2048 for 1 shared CPU on Fly Machines (256 to 2048 a CPU), "
         "not 4096"),
        ({"machineCpus": 4, "machineMemoryMb": 768},
         "machineMemoryMb must be between 1024 and 8192 for 4 shared CPUs on Fly Machines (256 to 2048 a "
         "CPU), not 768"),
    ],
)
def test_a_machine_size_fly_refuses_is_refused_when_the_mapping_is_saved(
    app: Any, client: Any, admin_headers: dict[str, str], size: dict[str, int], said: str
) -> None:
    """Saved, the mapping failed every dispatch at Fly (memory in steps of 256 MB, 256 MB to 2 GB a
    shared CPU); the reference's own checks of the two fields come first."""
    body = {"teamKey": "ENG", "owner": "acme", "repo": "api", "defaultBranch": "main",
            "executionMode": "fly-machines", "ticketing": {"provider": "fake-tracker"}, **size}
    resp = client.post("/api/mappings", json=body, headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (400, {"error": said})
    resp = client.post("/api/mappings", json={**body, "machineMemoryMb": 255}, headers=admin_headers)
    assert resp.get_json() == {"error": "machineMemoryMb must be an integer >= 256"}


@pytest.mark.parametrize("configured", [False])
def test_not_configured_sessions_are_empty_and_secrets_503(
    app: Any, client: Any, admin_headers: dict[str, str], app_fly: FakeFly
) -> None:
    add_mapping()
    assert client.get("/api/sessions", headers=admin_headers).get_json() == []
    for method, url in [
        ("delete", "/api/sessions/abc"),
        ("get", "/api/global-secrets"),
        ("get", "/api/mappings/ENG/secrets"),
    ]:
        resp = getattr(client, method)(url, headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (503, {"error": "Fly sessions config not set"}), url
    resp = client.post("/api/global-secrets", json={"name": "X", "value": "y"}, headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (503, {"error": "Fly sessions config not set"})
    assert app_fly.server.requests == []
