"""Housekeeping: the records that only guard against repeats are removed once no repeat can come.

Every delivered tracker write (``outbox``), handled webhook delivery (``webhook_deliveries``) and
used result token (``consumed_tokens``) is kept so that a retry, a redelivery or a replay is
recognised. Past ``AIIMPL_RETENTION_DAYS`` none can come any more — a job's session ends within
hours, GitHub redelivers for days, a run token expires after ``AIIMPL_RUN_TOKEN_SECONDS`` — so
they are removed, with admin sign-in failures older than a day and signed-out admin sessions past
their expiry. Jobs, their steps and transitions, tracked issues and settings are kept: they are the
install's history.

The session program wheels kept for the GitHub Actions workflows that pin them
(``session_packages``, :func:`aiimpl_core.session_package.pin`) go by their own rule, whatever the
retention: one no sync or check has pinned for :data:`SESSION_PACKAGES_KEPT` is removed, but never
one of the :data:`SESSION_PACKAGES_NEWEST` pinned last, nor the one the pruning process runs.

The poller runs :func:`maybe_prune` after its cycles; the ``housekeeping`` lease lets one poller of
all the hosts do it once per :data:`EVERY`. ``aiimpl prune`` runs it at once. Rows go in batches of
:data:`BATCH`, each its own transaction, so no table is locked for long.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, delete, func, or_, select

from .. import session_package
from ..database import serialized
from ..extensions import db
from ..orm import (
    AuthFailure,
    ConsumedToken,
    EndedAdminSession,
    Job,
    OutboxItem,
    StoredSessionPackage,
    WebhookDelivery,
    utcnow,
)
from . import poller

log = logging.getLogger(__name__)

#: how often the poller's housekeeping runs, over all pollers
EVERY = timedelta(hours=1)
#: rows removed per statement (and per transaction)
BATCH = 5000
#: an admin sign-in failure counts within minutes; older rows only take room
AUTH_FAILURES_KEPT = timedelta(days=1)
#: a kept session program wheel no workflow sync or check pinned for this long is removed: the
#: workflows still pinning it have not been synced nor checked since (``aiimpl check`` reports them)
SESSION_PACKAGES_KEPT = timedelta(days=90)
#: the wheels pinned last are kept whatever their age (an install that neither deploys nor syncs
#: for months still serves what its workflows pin)
SESSION_PACKAGES_NEWEST = 5
LEASE = "housekeeping"
#: outbox states that are settled: nothing will send the item again
SETTLED = ("done", "shadow", "dead")


def retention_days(value: Any = None) -> int:
    """The retention in days: ``value``, else ``AIIMPL_RETENTION_DAYS``; 0 keeps the guard records."""
    days = current_app.config.get("AIIMPL_RETENTION_DAYS", 90) if value is None else value
    return int(days or 0)


def prune(now: datetime | None = None, *, days: int | None = None, batch: int = BATCH) -> dict[str, int]:
    """Remove what is older than the retention now; the number of rows removed per table.

    :param days: the retention in days (default ``AIIMPL_RETENTION_DAYS``); 0 keeps the tracker
        writes, webhook deliveries and used tokens for good. Admin sign-in failures, signed-out
        sessions and kept session program wheels go by their own rules whatever the retention.
    """
    now = now or utcnow()
    days = retention_days(days)
    removed = {"outbox": 0, "webhook_deliveries": 0, "consumed_tokens": 0, "auth_failures": 0,
               "ended_admin_sessions": 0, "session_packages": 0}
    if days > 0:
        _prune_guards(removed, now, days, batch)
    removed["auth_failures"] = _delete(
        AuthFailure.client, (AuthFailure.last_failure_at < now - AUTH_FAILURES_KEPT,), batch
    )
    # a signed-out session's token is refused by its own expiry from then on
    removed["ended_admin_sessions"] = _delete(
        EndedAdminSession.session_id, (EndedAdminSession.expires_at < now,), batch
    )
    removed["session_packages"] = _prune_session_packages(now, batch)
    if any(removed.values()):
        kept = f"older than {days} days" if days > 0 else "expired; the retention keeps the rest"
        if removed["session_packages"]:
            kept += f"; session packages last pinned over {SESSION_PACKAGES_KEPT.days} days ago"
        log.info("housekeeping: removed %s (%s)",
                 ", ".join(f"{n} {table}" for table, n in removed.items() if n), kept)
    return removed


def _prune_session_packages(now: datetime, batch: int) -> int:
    """Remove the kept session program wheels no one pinned for :data:`SESSION_PACKAGES_KEPT`, but
    the :data:`SESSION_PACKAGES_NEWEST` pinned last and the running one; how many."""
    table = StoredSessionPackage
    newest = (select(table.sha256)
              .order_by(table.last_pinned_at.desc(), table.created_at.desc(), table.sha256)
              .limit(SESSION_PACKAGES_NEWEST).scalar_subquery())
    where = [table.last_pinned_at < now - SESSION_PACKAGES_KEPT, table.sha256.not_in(newest)]
    running = session_package.running()
    if running is not None:
        # (served whether kept or not; kept all the same for when a deploy serves another)
        where.append(table.sha256 != running.sha256)
    return _delete(table.sha256, tuple(where), batch)


def _prune_guards(removed: dict[str, int], now: datetime, days: int, batch: int) -> None:
    """Remove the settled tracker writes, handled deliveries and used tokens past the retention."""
    cutoff = now - timedelta(days=days)
    # a used token is refused as used until it has expired: kept at least that long (the tokens of
    # a session started with a longer lifetime than the setting's now live longer)
    from .launch import run_token_seconds
    from .reconcile import session_lifetime_seconds

    longest = db.session.scalar(select(func.max(Job.lifetime_seconds))) or 0
    token_seconds = run_token_seconds(max(longest, session_lifetime_seconds()))
    tokens_cutoff = min(cutoff, now - timedelta(seconds=token_seconds, days=1))
    removed["outbox"] = _delete(
        OutboxItem.id,
        (
            OutboxItem.state.in_(SETTLED),
            OutboxItem.created_at < cutoff,
            # (an old item delivered only now, after an outage, waits its own retention, as does
            # one an operator retried lately that was given up on again)
            or_(OutboxItem.done_at.is_(None), OutboxItem.done_at < cutoff),
            or_(OutboxItem.requeued_at.is_(None), OutboxItem.requeued_at < cutoff),
        ),
        batch,
    )
    removed["webhook_deliveries"] = _delete(
        WebhookDelivery.delivery_id, (WebhookDelivery.received_at < cutoff,), batch
    )
    removed["consumed_tokens"] = _delete(
        ConsumedToken.jti, (ConsumedToken.consumed_at < tokens_cutoff,), batch
    )


def _delete(key: Any, where: tuple[ColumnElement[bool], ...], batch: int) -> int:
    """Delete the rows matching ``where``, ``batch`` at a time; how many."""
    table = key.class_
    total = 0
    while True:
        with serialized(writes_first=True):
            doomed = select(key).where(*where).limit(batch).scalar_subquery()
            # ``where`` again on the rows themselves: on PostgreSQL a row changed while the delete
            # waited for its lock (a dead comment re-queued by an operator) is checked again as it is
            # now, where the subquery's choice alone would delete it as it was
            result = db.session.execute(
                delete(table).where(key.in_(doomed), *where), execution_options={"synchronize_session": False}
            )
        total += result.rowcount
        if result.rowcount < batch:
            return total


def maybe_prune(now: datetime | None = None, *, holder: str | None = None) -> dict[str, int] | None:
    """:func:`prune`, when no poller did within :data:`EVERY` (``None`` otherwise)."""
    now = now or utcnow()
    if not poller.acquire_lease(LEASE, EVERY.total_seconds(), holder=holder, now=now, renew=False):
        return None
    return prune(now)
