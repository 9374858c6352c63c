"""Fixtures of the engine's tests: a fake tracker and a fake runner registered as plugins."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping, OutboxItem, TrackedIssue, utcnow
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


@pytest.fixture
def tracker() -> FakeTracker:
    return FakeTracker()


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    return [tracker.plugin, runner.plugin]


@pytest.fixture
def add_mapping(app: Any) -> Callable[..., Mapping]:
    def make(team_key: str = "ENG", provider: str = "fake-tracker", **kw: Any) -> Mapping:
        values: dict[str, Any] = {
            "owner": "acme",
            "repo": team_key.lower(),
            "default_branch": "main",
            "execution_mode": "github-actions",
            "ticketing": {"provider": provider},
        }
        values.update(kw)
        row = Mapping(team_key=team_key, **values)
        db.session.add(row)
        db.session.commit()
        return row

    return make


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
    return list(db.session.scalars(db.select(OutboxItem).where(OutboxItem.issue_key == issue_key)
                                   .order_by(OutboxItem.id)).all())
