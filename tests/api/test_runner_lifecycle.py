"""A whole run through the callback API, with the credentials the launcher really issues.

The job is created and launched by :mod:`aiimpl_core.services.launch` onto the fake runner; the
test then plays the session with the nonce and run tokens found in the session's environment.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from aiimpl_core.auth.signatures import github_signature
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, JobStep, TrackedIssue
from aiimpl_core.orm import Mapping as MappingRow
from aiimpl_core.services import launch
from aiimpl_core.types import Phase

WEBHOOK_SECRET = "lifecycle-webhook-secret"


@pytest.fixture
def aiimpl_config():
    return {"AIIMPL_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET}


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def start(phase: Phase, cb_runner, plan: str | None = None) -> tuple[int, dict[str, str]]:
    mapping = db.session.scalar(select(MappingRow).where(MappingRow.team_key == "ENG"))
    job = launch.create_job(
        mapping,
        "ENG-1",
        phase=phase,
        provider="fake-tracker",
        choice=launch.choose_backend(mapping),
        plan=plan,
    )
    db.session.commit()
    launch.launch(job)
    return job.id, dict(cb_runner.runs[job.id].request.env)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _job(job_id: int) -> Job:
    db.session.commit()
    return db.session.get(Job, job_id)


def test_planning_then_implementation_then_merge(
    client, cb_mapping, cb_runner, cb_tracker, cb_merged_payload
):
    cb_mapping("ENG", planning_enabled=True)

    # -- planning --------------------------------------------------------------------------
    plan_job, env = start(Phase.PLANNING, cb_runner)
    assert _job(plan_job).status == "dispatched"
    ctx = client.get("/runner/planning-context", headers=bearer(env["AIIMPL_CONTEXT_TOKEN"]))
    assert ctx.status_code == 200
    assert ctx.get_json()["issue"]["title"] == "Add a health check"
    assert ctx.get_json()["phase"] == "planning"
    # the planning token does not open the implementation's result
    wrong = client.post(
        "/runner/result",
        headers=bearer(env["AIIMPL_RESULT_TOKEN"]),
        json={
            "outcome": "success",
            "phase": "implementation",
            "comments": [],
            "prUrl": "https://github.com/acme/api/pull/1",
        },
    )
    assert wrong.get_json() == {"error": "phase_mismatch"}
    done = client.post(
        "/runner/result",
        headers=bearer(env["AIIMPL_RESULT_TOKEN"]),
        json={
            "outcome": "success",
            "phase": "planning",
            "comments": [],
            "plan": "1. Add /healthz\n2. Test it",
        },
    )
    assert done.get_json()["status"] == "completed"
    assert cb_tracker.stage_labels("ENG-1") == {"Plan-Complete"}

    # -- implementation (after approval) gets the plan -------------------------------------
    impl_job, env = start(Phase.IMPLEMENTATION, cb_runner)
    nonce = env["AIIMPL_NONCE"]
    assert client.post("/api/status", json={"nonce": nonce, "event": "session_created"}).status_code == 200
    assert _job(impl_job).status == "running"
    ctx = client.get("/runner/planning-context", headers=bearer(env["AIIMPL_CONTEXT_TOKEN"])).get_json()
    assert ctx["plan"] == "1. Add /healthz\n2. Test it"
    assert ctx["branch"] == "ai/ENG-1" and ctx["baseBranch"] == "main"
    step = {"id": "agent", "type": "agent", "status": "running", "started_at": "2026-11-29T05:00:00Z"}
    assert (
        client.post(
            "/runner/progress", headers=bearer(env["AIIMPL_PROGRESS_TOKEN"]), json={"step": step}
        ).status_code
        == 200
    )
    assert (
        client.post("/api/step-report", json={"nonce": nonce, "step": {**step, "id": "verify"}}).status_code
        == 200
    )
    assert (
        client.post(
            "/api/status",
            json={
                "nonce": nonce,
                "event": "pr_opened",
                "prNumber": 12,
                "prUrl": "https://github.com/acme/api/pull/12",
            },
        ).status_code
        == 200
    )
    result = client.post(
        "/runner/result",
        headers=bearer(env["AIIMPL_RESULT_TOKEN"]),
        json={
            "outcome": "success",
            "phase": "implementation",
            "comments": [],
            "prUrl": "https://github.com/acme/api/pull/12",
            "prNumber": 12,
        },
    )
    assert result.get_json() == {"jobId": impl_job, "status": "completed", "ended": True}
    db.session.commit()
    assert {s.step_id for s in db.session.scalars(select(JobStep).where(JobStep.job_id == impl_job))} == {
        "agent",
        "verify",
    }
    assert cb_tracker.stage_labels("ENG-1") == {"Ready for Review"}
    # the nonce dies with the job
    late = client.post("/api/status", json={"nonce": nonce, "event": "session_cleaned_up"})
    assert late.get_json() == {"error": "Invalid or expired nonce"}

    # -- GitHub reports the merge -------------------------------------------------------------
    payload = cb_merged_payload("acme/api", 12, "ai/ENG-1", "abcdef12" * 5)
    body = json.dumps(payload).encode()
    merged = client.post(
        "/api/github/webhook",
        data=body,
        content_type="application/json",
        headers={
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": "lifecycle-1",
            "X-Hub-Signature-256": github_signature(WEBHOOK_SECRET, body),
        },
    )
    assert merged.get_json()["jobId"] == impl_job
    assert _job(impl_job).merge_sha == "abcdef12" * 5
    assert cb_tracker.issues["ENG-1"].done is True
    tracked = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == "ENG-1"))
    assert tracked.stage == "done"

    comments = cb_tracker.comments["ENG-1"]
    assert comments[0].startswith("📋 Plan ready for review.")
    assert comments[1].startswith("🚀 Session machine created. Cloning repo and running setup…")
    assert comments[2].startswith("📝 Claude finished. PR #12 opened: https://github.com/acme/api/pull/12")
    assert comments[3] == "🔗 PR #12 is ready for review: https://github.com/acme/api/pull/12"
    assert comments[4] == "🎉 PR #12 merged (abcdef1). Closing this issue out."
