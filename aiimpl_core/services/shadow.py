"""Leaving shadow mode: what shadow jobs held is given back.

A shadow job consumes its issue's trigger as a real one does, and nothing is written to the tracker,
so the trigger stays on the issue: while shadow mode is in force, that keeps the issue from being
dispatched again each cycle. Once another mode is in force, :func:`leave` ends the shadow jobs still
in flight (``timed_out`` / ``run_not_found``: no run was ever started) and releases the triggers
whose last job was a shadow job, so the issues that still carry them are dispatched for real, once,
as they would have been without the trial.

It runs when ``POST /api/runner-mode`` saves a mode, before a poll loop's first cycle and before
``aiimpl poll --once`` (a ``RUNNER_MODE`` override taken out of the environment takes effect at a
restart), and from the reconciler when it
finds a shadow job in flight outside shadow mode (one a poller claimed having read the mode just
before it changed). It is idempotent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from ..database import serialized
from ..extensions import db
from ..orm import Job, TrackedIssue, utcnow
from ..types import ACTIVE_STATUSES, JobStatus, TimeoutReason
from . import settings
from .outcomes import Outcome, end_job

log = logging.getLogger(__name__)

SHADOW = "shadow"


@dataclass(frozen=True)
class Left:
    """What :func:`leave` did: the shadow jobs it ended and the number of triggers released."""

    ended: tuple[int, ...] = ()
    released: int = 0


#: the issue's last job, a shadow one
_LAST_JOB_SHADOW = (
    select(Job.shadow)
    .where(Job.issue_key == TrackedIssue.issue_key)
    .order_by(Job.id.desc())
    .limit(1)
    .scalar_subquery()
)


def leave(now: datetime | None = None) -> Left:
    """End the shadow jobs in flight and release the triggers shadow jobs consumed, unless shadow
    mode is in force. Returns what it did (nothing when no shadow job was ever made)."""
    if settings.effective_runner_mode() == SHADOW:
        db.session.commit()
        return Left()
    now = now or utcnow()
    in_flight = db.session.scalars(
        select(Job.id).where(Job.shadow.is_(True), Job.status.in_([s.value for s in ACTIVE_STATUSES]))
    ).all()
    any_shadow = bool(in_flight) or db.session.scalar(select(Job.id).where(Job.shadow.is_(True)).limit(1))
    db.session.commit()
    if not any_shadow:
        return Left()
    ended: list[int] = []
    for job_id in in_flight:
        with serialized():
            job = db.session.get(Job, job_id, populate_existing=True)
            if job is None or JobStatus(job.status).terminal:
                continue
            if end_job(job, Outcome(JobStatus.TIMED_OUT, timeout_reason=TimeoutReason.RUN_NOT_FOUND.value)):
                ended.append(job_id)
    with serialized(writes_first=True):
        # (a job in flight holds its issue: one ended above no longer does; a real job claimed
        # since is the issue's last job, and keeps its trigger)
        released = db.session.execute(
            update(TrackedIssue)
            .where(TrackedIssue.trigger_consumed.is_(True), _LAST_JOB_SHADOW.is_(True))
            .values(trigger_consumed=False, updated_at=now)
            .returning(TrackedIssue.id),
            execution_options={"synchronize_session": False},
        ).all()
    if ended or released:
        log.info("shadow mode left: %d shadow job(s) in flight ended, %d trigger(s) given back to be "
                 "dispatched for real", len(ended), len(released))
    return Left(tuple(ended), len(released))
