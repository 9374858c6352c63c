"""Job lifecycle and issue stages: the primitives every other service uses.

Status changes are compare-and-set updates in the database, so two processes racing to end the
same job cannot both win, and a terminal status never changes. Each change is recorded as a
:class:`~aiimpl_core.orm.JobTransition` with its time, and plugins hear of it after commit.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import event, insert, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from .. import logs
from ..database import dialect_name
from ..extensions import db
from ..orm import Job, JobTransition, OutboxItem, TrackedIssue, utcnow
from ..types import TERMINAL_STATUSES, JobStatus, Stage

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.UNKNOWN: frozenset({JobStatus.DISPATCHED, JobStatus.RUNNING}) | TERMINAL_STATUSES,
    JobStatus.DISPATCHED: frozenset({JobStatus.RUNNING}) | TERMINAL_STATUSES,
    JobStatus.RUNNING: TERMINAL_STATUSES,
}
_TIMESTAMP = {
    JobStatus.DISPATCHED: "dispatched_at",
    JobStatus.RUNNING: "running_at",
}
_EVENTS_KEY = "aiimpl_events"

log = logging.getLogger(__name__)


def can_transition(old: JobStatus, new: JobStatus) -> bool:
    return new in _ALLOWED.get(old, frozenset())


def _queue_event(kind: str, line: tuple[Any, ...] = (), **payload: Any) -> None:
    """Queue a plugin event for the commit, and the log line that says it (``line``: a format and
    its arguments), logged once the change is committed (never for one rolled back)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    db.session.info.setdefault(_EVENTS_KEY, []).append((app, kind, payload, line))


@event.listens_for(Session, "after_commit")
def _fire_events(session: Session) -> None:
    pending = session.info.pop(_EVENTS_KEY, None)
    for app, kind, payload, line in pending or ():
        if line:
            log.info(*line)  # an operator follows an issue through the log: its jobs and their ends
        facade = app.extensions.get("aiimpl")
        if facade is None:
            continue
        if kind == "job":
            facade.job_status_changed(**payload)
        else:
            facade.issue_stage_changed(**payload)


@event.listens_for(Session, "after_rollback")
def _drop_events(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint's rollback: the events of what the transaction keeps still hold
    session.info.pop(_EVENTS_KEY, None)


def queued_events() -> int:
    """How many hook events wait for the session's commit (a mark for :func:`discard_events_after`)."""
    return len(db.session.info.get(_EVENTS_KEY, ()))


def discard_events_after(mark: int) -> None:
    """Forget the events queued after ``mark``: a savepoint's rollback undid their changes. (A
    rollback of the whole transaction forgets them all by itself; a savepoint's cannot tell which.)"""
    events = db.session.info.get(_EVENTS_KEY)
    if events:
        del events[mark:]


def record_created(job: Job) -> None:
    """Record the initial transition of a job that was just added and flushed."""
    db.session.add(JobTransition(job_id=job.id, from_status=None, to_status=job.status, at=job.created_at))
    line = ("job %s of %s created: %s on %s%s (%s)", job.id, job.issue_key, job.phase, job.backend,
            " in shadow mode" if job.shadow else "", job.status)
    _queue_event("job", line, job_id=job.id, issue_key=job.issue_key, old=None, new=JobStatus(job.status),
                 backend=job.backend)


def transition(
    job: Job,
    new: JobStatus,
    *,
    reason: str | None = None,
    timeout_reason: str | None = None,
    now: datetime | None = None,
    **fields: Any,
) -> bool:
    """Move ``job`` to ``new`` if the lifecycle allows it; return whether it moved.

    The caller commits. ``fields`` are other columns to set in the same update (``error``,
    ``pr_url`` …). Refused (returns false, changes nothing): a terminal job, a backward move,
    or another process having changed the status first.
    """
    old = JobStatus(job.status)
    if old == new or not can_transition(old, new):
        return False
    now = now or utcnow()
    values: dict[str, Any] = {"status": new.value, "updated_at": now, **fields}
    if new in _TIMESTAMP and getattr(job, _TIMESTAMP[new]) is None:
        values[_TIMESTAMP[new]] = now
    if new in TERMINAL_STATUSES:
        values["finished_at"] = now
    if timeout_reason is not None:
        values["timeout_reason"] = timeout_reason
    if not _move(job, old, new, values, reason, now):
        db.session.refresh(job)
        return False
    for key, value in values.items():
        # the row holds these already: set them as loaded, or the flush would send the update again
        set_committed_value(job, key, value)
    # one line, however the runner wrote it; masked whole before it is cut (the log's own masking
    # would meet only the part of a secret left before the cut)
    why = " ".join(logs.masked(reason or timeout_reason or "").split())
    if len(why) > 200:
        why = why[:199] + "…"
    line = ("job %s of %s: %s -> %s%s", job.id, job.issue_key, old.value, new.value,
            f" ({why})" if why else "")
    _queue_event("job", line, job_id=job.id, issue_key=job.issue_key, old=old, new=new, backend=job.backend)
    return True


def record_note(job: Job, reason: str, now: datetime | None = None) -> None:
    """Add an event to the job's history that keeps its status (a transition to the status it has:
    a rate-limited dispatch that is tried again later); the caller commits. No hook hears of it."""
    db.session.add(JobTransition(
        job_id=job.id, from_status=job.status, to_status=job.status, reason=reason, at=now or utcnow()
    ))


_JOBS, _TRANSITIONS = Job.__table__, JobTransition.__table__


def _move(job: Job, old: JobStatus, new: JobStatus, values: dict[str, Any], reason: str | None,
          now: datetime) -> bool:
    """The compare-and-set of :func:`transition` and the transition's record; whether it moved.

    On PostgreSQL one statement (the record is inserted from what the update returns, so only a
    move that happened is recorded); on SQLite, where a statement is a call into the library and
    not a round trip, an ``UPDATE`` and an ``INSERT``.
    """
    moved = update(_JOBS).where(_JOBS.c.id == job.id, _JOBS.c.status == old.value).values(**values)
    if dialect_name() != "postgresql":
        if db.session.execute(moved, execution_options={"synchronize_session": False}).rowcount != 1:
            return False
        db.session.add(
            JobTransition(job_id=job.id, from_status=old.value, to_status=new.value, reason=reason, at=now)
        )
        return True
    row = moved.returning(_JOBS.c.id).cte("moved")
    record = insert(_TRANSITIONS).from_select(
        ["job_id", "from_status", "to_status", "reason", "at"],
        select(
            row.c.id,
            literal(old.value, _TRANSITIONS.c.from_status.type),
            literal(new.value, _TRANSITIONS.c.to_status.type),
            literal(reason, _TRANSITIONS.c.reason.type),
            literal(now, _TRANSITIONS.c.at.type),
        ),
    )
    return db.session.execute(record.returning(_TRANSITIONS.c.id)).first() is not None


def tracked_issue(
    issue_key: str, *, team_key: str | None = None, provider: str | None = None
) -> TrackedIssue:
    row = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == issue_key))
    if row is None:
        row = TrackedIssue(
            issue_key=issue_key,
            team_key=team_key or issue_key.rsplit("-", 1)[0],
            provider=provider or "",
        )
        db.session.add(row)
        db.session.flush()
    return row


def set_stage(
    issue_key: str,
    stage: Stage,
    *,
    provider: str,
    job: Job | None = None,
    now: datetime | None = None,
    tracked: TrackedIssue | None = None,
    new_job: bool = False,
) -> None:
    """Record the issue's new stage and queue the tracker change (none in shadow mode).

    :param tracked: the issue's row when the caller holds it already (spares reading it again).
    :param new_job: ``job`` was created in this transaction, so no change of it is queued yet
        (spares looking for one).
    """
    now = now or utcnow()
    if tracked is None:
        tracked = tracked_issue(issue_key, provider=provider)
    old = Stage(tracked.stage) if tracked.stage else None
    tracked.stage = stage.value
    tracked.stage_changed_at = now
    if not (job is not None and job.shadow):
        _enqueue(
            op="stage",
            provider=provider,
            issue_key=issue_key,
            job_id=job.id if job else None,
            stage=stage.value,
            dedupe_key=f"stage:{issue_key}:{job.id if job else uuid.uuid4().hex}:{stage.value}",
            now=now,
            known_new=new_job and job is not None,
        )
    if old != stage:
        stage_changed(issue_key, old, stage)


def stage_changed(issue_key: str, old: Stage | None, new: Stage) -> None:
    """Tell the plugins (``aiimpl_issue_stage_changed``) once this transaction commits."""
    _queue_event("stage", issue_key=issue_key, old=old, new=new)


def enqueue_comment(
    issue_key: str,
    body: str,
    *,
    provider: str,
    kind: str,
    job: Job | None = None,
    dedupe_key: str | None = None,
    now: datetime | None = None,
) -> int | None:
    """Queue a comment for the issue; its item's id, or ``None`` when ``dedupe_key`` was queued
    already.

    In shadow mode the comment is recorded (state ``shadow``) and never sent.
    """
    return _enqueue(
        op="comment",
        provider=provider,
        issue_key=issue_key,
        job_id=job.id if job else None,
        kind=kind,
        body=body,
        dedupe_key=dedupe_key or f"comment:{uuid.uuid4().hex}",
        state="shadow" if job is not None and job.shadow else "pending",
        now=now,
    )


def enqueue_done(issue_key: str, *, provider: str, job: Job | None = None) -> int | None:
    return _enqueue(
        op="done",
        provider=provider,
        issue_key=issue_key,
        job_id=job.id if job else None,
        dedupe_key=f"done:{issue_key}:{job.id if job else uuid.uuid4().hex}",
        state="shadow" if job is not None and job.shadow else "pending",
    )


_OUTBOX = OutboxItem.__table__
_INSERT_OUTBOX = insert(_OUTBOX).returning(_OUTBOX.c.id)


def _enqueue(
    *,
    dedupe_key: str,
    now: datetime | None = None,
    state: str = "pending",
    known_new: bool = False,
    **values: Any,
) -> int | None:
    if not known_new:
        existing = db.session.scalar(select(OutboxItem.id).where(OutboxItem.dedupe_key == dedupe_key))
        if existing is not None:
            return None
    created = utcnow()
    # a Core insert: nothing reads the item back as an object, and the ORM's unit of work would
    # cost more than the statement (a claim queues its stage change this way)
    values = {"dedupe_key": dedupe_key, "state": state, "next_attempt_at": now or created,
              "created_at": created, "attempts": 0, **values}
    return int(db.session.execute(_INSERT_OUTBOX, values).scalar_one())
