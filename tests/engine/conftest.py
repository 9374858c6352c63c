"""Fixtures of the engine's tests: a fake tracker and a fake runner registered as plugins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping, OutboxItem, TrackedIssue, utcnow
from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.fakes import add_mapping as add_mapping_row


@pytest.fixture
def jira() -> FakeTracker:
    """A second tracker (``fake-jira``), for a test whose ``aiimpl_plugins`` installs two."""
    return FakeTracker("fake-jira")


@pytest.fixture
def fly() -> FakeRunner:
    """A second runner backend (``fly-machines``), for a test whose ``aiimpl_plugins`` installs two."""
    return FakeRunner("fly-machines", "fly")


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    return [tracker.plugin, runner.plugin]


@pytest.fixture
def add_mapping(app: Any) -> Callable[..., Mapping]:
    def make(team_key: str = "ENG", provider: str = "fake-tracker", **kw: Any) -> Mapping:
        return add_mapping_row(team_key, provider=provider, **kw)

    return make


def claim_without_launch(tracker: FakeTracker, issue_key: str) -> Job:
    """Claim the issue's job as a cycle does, but never launch it (a poller that died in between):
    the job stays in ``unknown``."""
    from aiimpl_core.services.dispatch import CycleReport, consider

    issue = tracker.provider_class(None).get_issue(issue_key)  # type: ignore[arg-type]
    consider(issue, fetched_at=utcnow(), report=CycleReport(started_at=utcnow()), launch_now=False)
    [job] = jobs_of(issue_key)
    return job


def later(**kw: float) -> datetime:
    """A time in the future (the reconciler's clock)."""
    return utcnow() + timedelta(**kw)


def jobs_of(issue_key: str) -> list[Job]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(Job).where(Job.issue_key == issue_key).order_by(Job.id)).all())


def tracked(issue_key: str) -> TrackedIssue:
    db.session.expire_all()
    row = db.session.scalar(db.select(TrackedIssue).where(TrackedIssue.issue_key == issue_key))
    assert row is not None
    return row


def outbox_of(issue_key: str) -> list[OutboxItem]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            db.select(OutboxItem).where(OutboxItem.issue_key == issue_key).order_by(OutboxItem.id)
        ).all()
    )


def session_env(runner: FakeRunner, job_id: int) -> dict[str, str]:
    """The environment the fake runner received for a job (tokens, nonce …)."""
    return dict(runner.runs[job_id].request.env)


def post_result(client: Any, runner: FakeRunner, job_id: int, **body: Any) -> Any:
    """``POST /runner/result`` as the job's session does (``body`` takes the arguments of the kit's
    :func:`~aiimpl_core.testing.orchestrator.post_result`, ``outcome`` among them)."""
    return orchestrator.post_result(client, session_env(runner, job_id), **body)


def post_status(client: Any, runner: FakeRunner, job_id: int, event: str, **fields: Any) -> Any:
    """``POST /api/status`` as the job's session does."""
    env = session_env(runner, job_id)
    return client.post("/api/status", json={"nonce": env["AIIMPL_NONCE"], "event": event, **fields})


def first_lines(comments: list[str]) -> list[str]:
    """Each comment's first line (progress comments end with their timestamp line)."""
    return [c.split("\n", 1)[0] for c in comments]
