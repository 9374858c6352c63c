"""Small helpers shared by the drills: post as a runner does, read jobs back."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job
from aiimpl_core.testing.fakes import FakeRunner


def env_of(runner: FakeRunner, job_id: int) -> dict[str, str]:
    """The session environment the fake runner received for a job (tokens, nonce …)."""
    return dict(runner.runs[job_id].request.env)


def result_request(runner: FakeRunner, job_id: int, **body: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of ``POST /runner/result`` as the job's session sends them."""
    env = env_of(runner, job_id)
    payload: dict[str, Any] = {"comments": [], "phase": env["AIIMPL_PHASE"], **body}
    return payload, {"Authorization": f"Bearer {env['AIIMPL_RESULT_TOKEN']}"}


def progress_request(
    runner: FakeRunner, job_id: int, step_id: str = "agent"
) -> tuple[dict[str, Any], dict[str, str]]:
    env = env_of(runner, job_id)
    step = {"id": step_id, "type": "agent", "status": "running", "started_at": "2026-11-29T06:00:00Z"}
    return {"step": step}, {"Authorization": f"Bearer {env['AIIMPL_PROGRESS_TOKEN']}"}


def jobs() -> list[Job]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(Job).order_by(Job.id)).all())


def job_of(issue_key: str) -> Job:
    found = [j for j in jobs() if j.issue_key == issue_key]
    assert len(found) == 1, (issue_key, [(j.id, j.status) for j in found])
    return found[0]


def jobs_per_issue() -> Counter[str]:
    return Counter(j.issue_key for j in jobs())
