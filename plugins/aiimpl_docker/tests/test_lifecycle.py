"""Jobs dispatched through the core with runner mode ``local`` run real containers.

The whole path: secrets set through the admin API, the poll cycle's claim and launch, the
container on the engine, the reconciler reading it, the outcome comments on the (fake) tracker,
and no container left behind — for a failure, a timeout and a success.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fakes import FakeTracker

import aiimpl_docker.plugin

from .conftest import BUSYBOX, INSTANCE, add_eng_mapping, ours, wait_exited

TEAM_SECRET = "team-secret-3f8e1c"
GLOBAL_SECRET = "global-secret-77ab02"


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, engine: Any) -> list[object]:
    return [tracker.plugin, aiimpl_docker.plugin]


@pytest.fixture
def command() -> str:
    return "sh -c 'exit 0'"


@pytest.fixture
def aiimpl_config(command: str) -> dict[str, Any]:
    return {
        "AIIMPL_DOCKER_IMAGE": BUSYBOX,
        "AIIMPL_DOCKER_INSTANCE": INSTANCE,
        "AIIMPL_DOCKER_COMMAND": command,
    }


@pytest.fixture
def local_job(
    app: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker, engine: Any
) -> Iterator[Job]:
    """ENG-1 dispatched in runner mode ``local`` with a team and a global secret."""
    add_eng_mapping(machine_cpus=1, machine_memory_mb=256)
    for url, body in [
        ("/api/mappings/ENG/secrets", {"name": "TEAM_TOKEN", "value": TEAM_SECRET}),
        ("/api/global-secrets", {"name": "SHARED_KEY", "value": GLOBAL_SECRET}),
    ]:
        resp = client.post(url, json=body, headers=admin_headers)
        assert resp.status_code in (200, 201), resp.get_json()
    resp = client.post("/api/runner-mode", json={"mode": "local"}, headers=admin_headers)
    assert resp.status_code == 200, resp.get_json()
    tracker.add("ENG-1", title="Add a health endpoint")

    run_cycle(reconcile=False)  # each test reconciles when its container is where it wants it

    job = db.session.scalars(db.select(Job).where(Job.issue_key == "ENG-1")).one()
    assert job.backend == "local-docker" and job.status == "dispatched" and job.run_id, [
        (t.to_status, t.reason) for t in job.transitions
    ]
    yield job
    for container in ours(engine):
        container.remove(force=True)


def _until_removed(engine: Any) -> None:
    """The plugin removes an ended job's container in a background thread."""
    deadline = time.monotonic() + 15
    while ours(engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ours(engine) == []


def _refresh(job: Job) -> Job:
    db.session.expire_all()
    return db.session.get(Job, job.id)


def _everything_public(client: Any, admin_headers: dict[str, str], tracker: FakeTracker, job: Job) -> str:
    """Comments, the API's views of the job, sessions and secrets: where a secret must never be."""
    parts = ["\n".join(tracker.comments["ENG-1"])]
    for url in (
        "/api/sessions",
        "/api/mappings/ENG/secrets",
        "/api/global-secrets",
        f"/api/jobs/{job.id}/steps",
        "/api/issues",
    ):
        parts.append(client.get(url, headers=admin_headers).get_data(as_text=True))
    return "\n".join(parts)


@pytest.mark.parametrize(
    "command", ["sh -c 'echo cloning $AIIMPL_ISSUE_KEY; echo fatal: $TEAM_TOKEN $SHARED_KEY >&2; exit 2'"]
)
def test_failure_ends_the_job_with_the_container_failed_excerpt(
    local_job: Job, engine: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker
) -> None:
    attrs = engine.containers.get(local_job.run_id).attrs
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert (
        env["TEAM_TOKEN"] == TEAM_SECRET and env["SHARED_KEY"] == GLOBAL_SECRET
    )  # secrets reach the session
    assert env["AIIMPL_JOB_ID"] == str(local_job.id)
    labels = attrs["Config"]["Labels"]
    assert labels["aiimpl.job"] == str(local_job.id)
    assert TEAM_SECRET not in repr(labels) and GLOBAL_SECRET not in repr(labels)
    assert attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024
    wait_exited(engine, local_job.run_id)

    report = reconcile()
    run_cycle(reconcile=False)  # delivers the outbox

    job = _refresh(local_job)
    assert report.endings == {job.id: "failed"}
    assert job.status == "failed"
    comments = tracker.comments["ENG-1"]
    assert "⚠️ Implementation failed: the session container exited with code 2" in comments
    [excerpt] = [c for c in comments if c.startswith("Log excerpt (`container_failed`)")]
    assert "cloning ENG-1" in excerpt and "fatal: *** ***" in excerpt
    public = _everything_public(client, admin_headers, tracker, job)
    assert TEAM_SECRET not in public and GLOBAL_SECRET not in public
    assert tracker.stage_labels("ENG-1") == set()  # Implementation failed: AI labels removed
    _until_removed(engine)  # once the job has ended


@pytest.mark.parametrize("command", ["sh -c 'echo agent running; trap \"exit 143\" TERM; sleep 60 & wait'"])
def test_lifetime_exceeded_ends_the_job_container_timeout(
    local_job: Job, engine: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker
) -> None:
    reconcile()
    assert _refresh(local_job).status == "running"
    sessions = client.get("/api/sessions", headers=admin_headers).get_json()
    assert [(s["id"], s["backend"], s["jobId"]) for s in sessions] == [
        (local_job.run_id, "local-docker", local_job.id)
    ]
    # the session has been running for longer than its lifetime (an hour by default)
    db.session.execute(
        db.update(Job).where(Job.id == local_job.id).values(dispatched_at=utcnow() - timedelta(minutes=61))
    )
    db.session.commit()

    reconcile()
    run_cycle(reconcile=False)

    job = _refresh(local_job)
    assert (job.status, job.timeout_reason) == ("timed_out", "container_timeout")
    [excerpt] = [c for c in tracker.comments["ENG-1"] if c.startswith("Log excerpt (`container_timeout`)")]
    assert "agent running" in excerpt
    _until_removed(engine)  # once the job has ended
    assert client.get("/api/sessions", headers=admin_headers).get_json() == []


@pytest.mark.parametrize("command", ["sh -c 'sleep 1'"])
def test_success_reported_by_the_session_removes_the_container_after_it_exits(
    local_job: Job, engine: Any, client: Any
) -> None:
    env = dict(e.split("=", 1) for e in engine.containers.get(local_job.run_id).attrs["Config"]["Env"])
    resp = client.post(
        "/runner/result",
        json={
            "phase": "implementation",
            "outcome": "success",
            "comments": [],
            "prUrl": "https://github.com/acme/api/pull/5",
        },
        headers={"Authorization": f"Bearer {env['AIIMPL_RESULT_TOKEN']}"},
    )
    assert resp.status_code == 200, resp.get_json()
    assert _refresh(local_job).status == "completed"

    deadline = time.monotonic() + 15
    while ours(engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ours(engine) == []
