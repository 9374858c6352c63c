"""Delivery of queued tracker writes (comments, stage changes, done), with retries.

Items are claimed with a compare-and-set update and a short lease, so two processes never send
the same item at once; an item whose sender died is picked up again when its lease runs out.
Per issue, items go out in order: when one fails, the later ones wait for it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from ..database import serialized
from ..errors import AiimplError, ProviderError
from ..extensions import db
from ..orm import OutboxItem, TrackedIssue, utcnow
from ..types import Stage

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 25
MAX_BACKOFF = timedelta(hours=1)


def _backoff(attempts: int, retry_after: float | None) -> timedelta:
    if retry_after is not None:
        return timedelta(seconds=max(1.0, retry_after))
    return min(MAX_BACKOFF, timedelta(seconds=5 * 2 ** min(attempts, 12)))


def _claim(item_id: int, now: datetime) -> bool:
    result = db.session.execute(
        update(OutboxItem)
        .where(
            OutboxItem.id == item_id,
            or_(OutboxItem.state == "pending", OutboxItem.state == "sending"),
            OutboxItem.next_attempt_at <= now,
        )
        .values(state="sending", next_attempt_at=now + LEASE),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()
    return result.rowcount == 1


def deliver(
    *,
    issue_keys: Iterable[str] | None = None,
    ids: Iterable[int] | None = None,
    limit: int = 200,
    now: datetime | None = None,
) -> dict[str, int]:
    """Send due items; return counts of ``sent``, ``failed`` and ``skipped`` items."""
    facade = current_app.extensions["aiimpl"]
    now = now or utcnow()
    query = select(OutboxItem.id, OutboxItem.issue_key, OutboxItem.provider).where(
        or_(OutboxItem.state == "pending", OutboxItem.state == "sending"),
        OutboxItem.next_attempt_at <= now,
    )
    if issue_keys is not None:
        query = query.where(OutboxItem.issue_key.in_(list(issue_keys)))
    if ids is not None:
        query = query.where(OutboxItem.id.in_(list(ids)))
    rows = db.session.execute(query.order_by(OutboxItem.id).limit(limit)).all()
    db.session.commit()
    counts = {"sent": 0, "failed": 0, "skipped": 0}
    blocked_issues: set[str] = set()
    postponed_providers: set[str] = set()
    # an earlier item of the same issue still waiting (not due) holds the later ones back
    waiting = set(
        db.session.scalars(
            select(OutboxItem.issue_key).where(
                OutboxItem.state.in_(("pending", "sending")), OutboxItem.next_attempt_at > now
            )
        ).all()
    )
    # On SQLite a transaction that began with a read cannot write once another connection has
    # committed ("database is locked" at once, without waiting): end every read transaction
    # before writing, and write the outcome of each send in a transaction of its own.
    db.session.commit()
    for item_id, issue_key, provider_id in rows:
        if issue_key in blocked_issues or provider_id in postponed_providers or issue_key in waiting:
            counts["skipped"] += 1
            continue
        if not _claim(item_id, now):
            counts["skipped"] += 1
            continue
        item = db.session.get(OutboxItem, item_id)
        assert item is not None
        db.session.expunge(item)  # a detached copy keeps its values across the commit below
        db.session.commit()
        try:
            _send(facade, item)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
            with serialized():
                row = db.session.get(OutboxItem, item_id)
                assert row is not None
                row.attempts += 1
                row.last_error = str(exc)[:2000] if isinstance(exc, AiimplError) else type(exc).__name__
                if row.attempts >= MAX_ATTEMPTS:
                    row.state = "dead"
                else:
                    row.state = "pending"
                    row.next_attempt_at = now + _backoff(row.attempts, retry_after)
                last_error = row.last_error
            log.warning("outbox item %s (%s %s) failed: %s", item_id, item.op, item.issue_key, last_error)
            counts["failed"] += 1
            blocked_issues.add(issue_key)
            if retry_after is not None or (isinstance(exc, ProviderError) and (exc.status or 0) >= 500):
                postponed_providers.add(provider_id)
            continue
        with serialized():
            row = db.session.get(OutboxItem, item_id)
            assert row is not None
            row.state = "done"
            row.done_at = utcnow()
            row.remote_id = item.remote_id
            if row.op == "stage" and row.stage != Stage.TRIGGERED.value:
                # our own write removed the trigger from the tracker: a trigger seen after now is new
                tracked = db.session.scalar(
                    select(TrackedIssue).where(TrackedIssue.issue_key == row.issue_key)
                )
                if tracked is not None:
                    tracked.trigger_consumed = False
                    tracked.trigger_cleared_at = row.done_at
        counts["sent"] += 1
    return counts


def _send(facade, item: OutboxItem) -> None:  # noqa: ANN001
    tracker = facade.ticketing(item.provider)
    if item.op == "comment":
        comment = tracker.post_comment(item.issue_key, item.body or "")
        item.remote_id = comment.id
    elif item.op == "stage":
        tracker.set_stage(item.issue_key, Stage(item.stage))
    elif item.op == "done":
        tracker.mark_done(item.issue_key)
    else:
        raise AiimplError(f"unknown outbox op {item.op!r}")
