"""A runner cannot make a job's step history grow without bound.

The progress token (and the nonce) sit in the session's environment, where the agent and whatever
the repository runs can read them, and the progress token stays good for hours (reports after the
job ended are recorded too). Every new step id was a new row of up to the body's size, and
``GET /api/jobs/<id>/steps`` answers them all at once: enough reports would fill the database and
make the admin's steps view take a worker's memory. A job keeps at most ``MAX_JOB_STEPS`` steps;
a step it has already is still updated.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from aiimpl_core.extensions import db
from aiimpl_core.orm import JobStep
from aiimpl_core.services import callbacks

CAP = 3


@pytest.fixture
def few_steps(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(callbacks, "MAX_JOB_STEPS", CAP)
    return CAP


def _step(step_id: str, status: str = "running") -> dict[str, Any]:
    return {"id": step_id, "type": "agent", "status": status, "started_at": "2026-01-01T00:00:00Z",
            "detail": {"output": "x" * 1000}}


def _progress(client: Any, env: dict[str, str], step: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {env['AIIMPL_PROGRESS_TOKEN']}"}
    return client.post("/runner/progress", json={"step": step}, headers=headers)


def _report(client: Any, env: dict[str, str], step: dict[str, Any]) -> Any:
    return client.post("/api/step-report", json={"nonce": env["AIIMPL_NONCE"], "step": step})


def _steps(job_id: int) -> int:
    db.session.commit()
    return db.session.scalar(select(func.count()).select_from(JobStep).where(JobStep.job_id == job_id))


def _status_of(job_id: int, step_id: str) -> str:
    db.session.commit()
    mine = (JobStep.job_id == job_id) & (JobStep.step_id == step_id)
    return db.session.scalar(select(JobStep.status).where(mine))


def test_a_jobs_steps_stop_at_the_cap_over_runner_progress(client, sec_mapping, sec_launch, few_steps):
    sec_mapping()
    job, env = sec_launch("ENG-1")
    for i in range(CAP):
        assert _progress(client, env, _step(f"s{i}")).status_code == 200
    refused = _progress(client, env, _step("one-more"))
    assert refused.status_code == 409 and refused.get_json() == {"error": "too_many_steps"}
    # a step the job has is still reported on
    again = _progress(client, env, _step("s0", "succeeded"))
    assert again.status_code == 200 and again.get_json()["stepId"] == "s0"
    assert _steps(job) == CAP and _status_of(job, "s0") == "succeeded"


def test_a_jobs_steps_stop_at_the_cap_over_step_report(client, sec_mapping, sec_launch, few_steps):
    sec_mapping()
    job, env = sec_launch("ENG-1")
    for i in range(CAP):
        assert _report(client, env, _step(f"s{i}")).status_code == 200
    refused = _report(client, env, _step("one-more"))
    assert refused.status_code == 409
    assert refused.get_json() == {"error": f"A job keeps at most {CAP} steps"}
    again = _report(client, env, _step("s1", "succeeded"))
    assert again.status_code == 200
    assert _steps(job) == CAP and _status_of(job, "s1") == "succeeded"


def test_the_cap_is_per_job(client, sec_mapping, sec_launch, few_steps):
    sec_mapping()
    first, env_first = sec_launch("ENG-1")
    second, env_second = sec_launch("ENG-2")
    for env in (env_first, env_second):
        for i in range(CAP):
            assert _progress(client, env, _step(f"s{i}")).status_code == 200
    assert _steps(first) == _steps(second) == CAP
