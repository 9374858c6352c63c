"""Delivery of queued tracker writes (comments, stage changes, done), with retries.

Items are claimed with a compare-and-set update and a short lease that runs from the claim, so
two processes never send the same item at once; an item whose sender died is picked up again when
its lease runs out. The lease is the sender's claim: a failure is recorded only while the sender
still holds it (a sender whose lease ran out must not undo what the next one recorded), a success
whoever holds the item (it was posted). A caller that must answer only once its comment is posted
(``/api/status``) may queue the item already claimed and send it itself right after its commit
(:func:`send_claimed`).
Per issue, items go out in order: when one fails, or another sender holds it, the later ones wait
for it. An item is given up on (``dead``) after :data:`MAX_ATTEMPTS` attempts, and no sooner than
the time that series of back-offs takes (:data:`FULL_SERIES`, counted from its creation, or from
an operator's retry), so a tracker that asks for quick retries (``Retry-After``) does not lose it
sooner than an outage would.
An item the tracker refuses for good (:data:`REFUSED_STATUSES`) is given up on after a few attempts,
so it does not hold the issue's later items back for the hours a full series of retries takes. An
item taken again after its sender's lease ran out counts an attempt too: one that brings its sender
down every time is given up on rather than taken forever, and until then a pass takes it after the
other issues' items, which it would otherwise hold back too.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import (
    Boolean,
    Row,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from .. import logs
from ..database import PREPARED, dialect_name, one_of, one_statement, per_dialect, serialized, upsert
from ..errors import AiimplError, NotFound, ProviderError
from ..extensions import db
from ..orm import OutboxItem, Setting, TrackedIssue, utcnow
from ..types import Comment, Stage
from . import settings
from .poller import retry_after_wait, stop_asked

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 25
MAX_BACKOFF = timedelta(hours=1)
#: HTTP statuses that say the request itself can never succeed: a stage the workflow has no
#: transition to or a comment rejected as invalid (400, 422), an issue deleted (404, 410). 401/403
#: are not among them: credentials can be fixed, and the item then goes out.
REFUSED_STATUSES = frozenset({400, 404, 410, 422})
#: attempts given to an item so refused before it is marked ``dead`` (rather than MAX_ATTEMPTS,
#: about 16 hours, during which the issue's later comments wait); the first retries still cover a
#: tracker that answered wrongly once
MAX_ATTEMPTS_REFUSED = 3
#: the last error of an item taken again after its sender's lease ran out (the sender stopped, or
#: took longer than the lease, before recording whether the tracker took it); the try counts as an
#: attempt
LEASE_RAN_OUT = "its sender stopped before recording an outcome (lease ran out); taken again"
#: the last error of an item given up on when taken again after its sender's lease ran out, as the
#: try before had ended the same way (an item that brings its sender down every time: sent again,
#: it would again, holding the issue's later items for good)
LEASE_RAN_OUT_DEAD = ("its sender stopped before recording an outcome (lease ran out), again; "
                      "given up rather than taken again")


def _backoff(attempts: int, retry_after: float | None) -> timedelta:
    if retry_after is not None:
        # (the issue's later writes wait on it)
        return retry_after_wait(retry_after, MAX_BACKOFF)
    return min(MAX_BACKOFF, timedelta(seconds=5 * 2 ** min(attempts, 12)))


#: how long the series of MAX_ATTEMPTS attempts takes at the back-off above (about 16 hours): an
#: item is given up on (other than refused for good) no sooner than this after its creation, though
#: its tracker asked for quicker retries (a rate limit's ``Retry-After`` of seconds would otherwise
#: use its attempts up in minutes)
FULL_SERIES = sum((_backoff(n, None) for n in range(1, MAX_ATTEMPTS)), timedelta())

#: when an item's series of attempts began: when it was queued, or when an operator last re-queued
#: it (its attempts reset, it gets a full series again, however long ago it was first queued)
SERIES_START = func.coalesce(OutboxItem.requeued_at, OutboxItem.created_at)


def _spent(attempts: int, series_start: datetime, at: datetime) -> bool:
    """Whether an item not refused for good is given up on, having had ``attempts`` attempts by
    ``at``: all of them, and the time they take at the back-off (:data:`FULL_SERIES`) since its
    series began (:data:`SERIES_START`)."""
    return attempts >= MAX_ATTEMPTS and at - series_start >= FULL_SERIES


def _refused_for_good(exc: Exception) -> bool:
    """Whether the tracker refused the request itself (:data:`REFUSED_STATUSES`), or a plugin
    reported the issue (or what the write names) as not found, so that no retry can succeed.

    :class:`~aiimpl_core.errors.NotFound` covers trackers that answer a missing entity without an
    HTTP error status (Linear's GraphQL answers ``Entity not found`` with HTTP 200).
    """
    if isinstance(exc, NotFound):
        return True
    if not isinstance(exc, ProviderError) or exc.status not in REFUSED_STATUSES:
        return False
    return exc.retry_after is None  # one that asked us to wait will take the request later


@dataclass
class Claimed:
    """An item taken for sending, with what sending it needs."""

    id: int
    op: str
    provider: str
    issue_key: str
    body: str | None
    stage: str | None
    remote_id: str | None = None
    #: the end of the lease this sender took it with: its claim, which the failure it records
    #: compares against (``None``: an item queued taken, see :func:`send_claimed`)
    lease_until: datetime | None = None
    #: whether it was tried before: a try failed, or its sender stopped before recording an
    #: outcome (its lease ran out); a comment tried before may have been stored by the tracker
    #: although its answer was lost (see :func:`comment_ref`)
    tried: bool = False


#: the setting holding this database's own id (migration ``0006``)
INSTALL_KEY = "install"
_INSTALL = "aiimpl.install"


def install() -> dict[str, Any]:
    """This database's own id and the last outbox item written before it had one (the
    ``install`` setting, made by migration ``0006``; made here should it be missing, as on a
    database whose items all come after it). Read once per app: it never changes."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(_INSTALL)
    if found is not None:
        return found
    value = settings.get(INSTALL_KEY)
    if not _an_install(value):
        fresh = {"id": uuid.uuid4().hex, "legacy_through": 0}
        try:
            with serialized() as session:
                row = session.get(Setting, INSTALL_KEY, populate_existing=True)
                if row is None:
                    session.add(Setting(key=INSTALL_KEY, value=fresh))
                elif not _an_install(row.value):
                    row.value = fresh
        except IntegrityError:  # another process made it first: its value is the one
            db.session.rollback()
        value = settings.get(INSTALL_KEY)
    ranges = value.get("legacy_ranges")
    found = {
        "id": str(value["id"]),
        "legacy_through": int(value.get("legacy_through", 0)),
        # items an older version wrote while the schema was downgraded past 0006 (``[first, last]``)
        "legacy_ranges": [(int(r[0]), int(r[1])) for r in ranges if isinstance(r, list) and len(r) == 2]
        if isinstance(ranges, list) else [],
    }
    app.extensions[_INSTALL] = found
    return found


def _an_install(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value.get("id"))
            and isinstance(value.get("legacy_through", 0), int))


def comment_ref(item_id: int) -> str:
    """The identity of the comment an outbox item posts, the same on every try and unique to this
    database: keyed with ``AIIMPL_SECRET_KEY`` and the database's own id (:func:`install`), as
    another database with the same key numbers its items from 1 too. A UUID of version 4's shape,
    which Linear takes as a new comment's ``id``. A tracker plugin that can name or tag a comment
    with it finds, on a retry, the comment a try whose answer was lost did post (see
    :meth:`~aiimpl_core.providers.base.TicketingProvider.post_comment_once`). Items written before
    the database had its id, or by an older version while the schema was downgraded past ``0006``,
    keep the identity they had then."""
    key = str(current_app.config.get("AIIMPL_SECRET_KEY") or "").encode()
    ids = install()
    legacy = item_id <= ids["legacy_through"] or any(lo <= item_id <= hi for lo, hi in ids["legacy_ranges"])
    salt = "" if legacy else f"{ids['id']}:"
    mac = hmac.new(key, f"aiimpl-outbox-comment:{salt}{item_id}".encode(), hashlib.sha256)
    digest = bytearray(mac.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40  # version 4
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return str(uuid.UUID(bytes=bytes(digest)))


def _held(item: Claimed) -> Any:
    """The item, as long as this sender's claim on it holds (state ``sending``, under its lease)."""
    return and_(
        OutboxItem.id == item.id,
        OutboxItem.state == "sending",
        OutboxItem.next_attempt_at == item.lease_until,
    )


def _claim(item_id: int, now: datetime, *, own_lease: datetime | None = None) -> Claimed | None:
    """Take the item for sending (compare-and-set, with a lease); ``None`` when it is not due or
    another sender has it (or it was given up on, see :func:`_claim_many`)."""
    return _claim_many([item_id], now, own_lease=own_lease).get(item_id)


@per_dialect
def _insert_taken() -> Any:
    """See :func:`queue_taken` (SQLite and PostgreSQL share the syntax)."""
    c = OutboxItem.__table__.c

    def param(name: str, column: Any) -> Any:
        return bindparam(name, type_=column.type)

    waiting = (
        select(literal_column("1"))
        .where(c.issue_key == bindparam("issue_key"), c.state.in_(("pending", "sending")))
        .exists()
    )
    # the state is computed once, in a derived table, so the queue is looked at once (OFFSET 0
    # keeps PostgreSQL from pulling the table up into the two expressions that read its state,
    # which would look twice)
    chosen = select(
        case(
            (bindparam("shadow", type_=Boolean()), literal("shadow", c.state.type)),
            (waiting, literal("pending", c.state.type)),
            else_=literal("sending", c.state.type),
        ).label("state")
    ).offset(0).subquery("chosen")
    row = select(
        param("dedupe_key", c.dedupe_key),
        param("op", c.op),
        param("provider", c.provider),
        param("issue_key", c.issue_key),
        param("job_id", c.job_id),
        param("kind", c.kind),
        param("body", c.body),
        chosen.c.state,
        literal(0, c.attempts.type),
        # a taken item's lease, else due now
        case((chosen.c.state == "sending", param("lease_until", c.next_attempt_at)),
             else_=param("now", c.created_at)),
        param("now", c.created_at),
    ).where(true())  # SQLite reads INSERT … SELECT … ON CONFLICT only with a WHERE clause
    columns = ["dedupe_key", "op", "provider", "issue_key", "job_id", "kind", "body", "state", "attempts",
               "next_attempt_at", "created_at"]
    return (
        upsert(OutboxItem.__table__)
        .from_select(columns, row)
        .on_conflict_do_nothing(index_elements=[c.dedupe_key])
        .returning(c.id, c.state)
        .execution_options(**{PREPARED: True})
    )


def queue_taken(
    *,
    dedupe_key: str,
    op: str,
    provider: str,
    issue_key: str,
    job_id: int | None,
    now: datetime,
    shadow: bool = False,
    kind: str | None = None,
    body: str | None = None,
) -> Row[Any] | None:
    """Queue an item the caller means to send itself right after its commit, in one statement.

    The item is queued already taken (state ``sending``, under a lease) when nothing of the issue
    waits; else ``pending``, behind the earlier items, for :func:`deliver`; ``shadow`` (recorded
    only) for a shadow job. ``ON CONFLICT DO NOTHING`` on the dedupe key: concurrent tries queue it
    once.

    :returns: the new item's ``id`` and ``state``, or ``None`` when the key was queued already.
    """
    return db.session.execute(
        _insert_taken(),
        {"dedupe_key": dedupe_key, "op": op, "provider": provider, "issue_key": issue_key, "job_id": job_id,
         "kind": kind, "body": body, "now": now, "lease_until": now + LEASE,
         "shadow": shadow},
    ).first()


#: operations that change nothing when sent twice (a comment would be posted twice)
IDEMPOTENT_OPS = ("stage", "done")


def _claim_many(
    item_ids: list[int], now: datetime, *, own_lease: datetime | None = None
) -> dict[int, Claimed]:
    """Take these items for sending in one statement (compare-and-set, with a lease); the ones
    taken, by id (an item not due at ``now``, or that another sender has, is left out).

    The lease runs from the claim, not from ``now`` (the start of a pass, which may have begun
    minutes ago): a lease counted from then could have run out already, and another sender would
    take the item again while this one posts it.

    An item taken again after its sender's lease ran out was tried: the try counts as an attempt.
    (Not a stage change or "done" at its first stop, which, taken with others, may have waited its
    turn when its sender stopped: it is marked :data:`LEASE_RAN_OUT`, and :func:`deliver` takes it
    on its own from then on, so its sender's next stop counts. One taken on its own at its first
    try, after a comment of its issue, is counted the same way: one stop more before it is given
    up.) Once that makes :data:`MAX_ATTEMPTS`, the item is marked
    ``dead`` instead (in the same statement) and left out, when the try before had ended the same
    way (an item that brings its sender down would do so again, and hold its issue's later items
    back for good) or when its time is up as a failure's would be (:func:`_spent`). (Not after a
    single stop: a write rate-limited past its attempts, :data:`FULL_SERIES` not over, is not lost
    to one restart of its sender.)

    :param own_lease: this sender's own lease on items it took earlier in its pass and now takes
        again, their lease having run out meanwhile: they were not tried, and count no attempt.
    """
    if not item_ids:
        return {}
    lease_until = max(now, utcnow()) + LEASE
    # (every expression below reads the row as it was before the update, on both databases)
    stopped = OutboxItem.state == "sending"
    if own_lease is not None:
        stopped = and_(stopped, OutboxItem.next_attempt_at != own_lease)
    tried = and_(stopped, or_(OutboxItem.op.not_in(IDEMPOTENT_OPS), OutboxItem.last_error == LEASE_RAN_OUT))
    given_up = and_(
        tried,
        OutboxItem.attempts + 1 >= MAX_ATTEMPTS,
        or_(OutboxItem.last_error == LEASE_RAN_OUT, SERIES_START <= now - FULL_SERIES),
    )
    state_type, time_type, error_type = (OutboxItem.state.type, OutboxItem.next_attempt_at.type,
                                         OutboxItem.last_error.type)
    rows = db.session.execute(
        update(OutboxItem)
        .where(
            one_of(OutboxItem.id, item_ids),
            or_(OutboxItem.state == "pending", OutboxItem.state == "sending"),
            OutboxItem.next_attempt_at <= now,
        )
        .values(
            state=case((given_up, literal("dead", state_type)), else_=literal("sending", state_type)),
            next_attempt_at=case(
                (given_up, OutboxItem.next_attempt_at), else_=literal(lease_until, time_type)
            ),
            attempts=case((tried, OutboxItem.attempts + 1), else_=OutboxItem.attempts),
            # taken again from a sender whose lease ran out: it stopped mid-try, so the item was
            # tried (an operator sees why it went out late, or was given up on)
            last_error=case(
                (given_up, literal(LEASE_RAN_OUT_DEAD, error_type)),
                (stopped, literal(LEASE_RAN_OUT, error_type)),
                else_=OutboxItem.last_error,
            ),
        )
        .returning(
            OutboxItem.id,
            OutboxItem.op,
            OutboxItem.provider,
            OutboxItem.issue_key,
            OutboxItem.body,
            OutboxItem.stage,
            OutboxItem.state,
            OutboxItem.attempts,
            OutboxItem.last_error,
        ),
        execution_options={"synchronize_session": False},
    ).all()
    db.session.commit()
    for row in rows:
        if row.state == "dead":
            log.warning("outbox item %s (%s %s) given up after %d attempts: %s", row.id, row.op,
                        row.issue_key, row.attempts, row.last_error)
    return {
        row.id: Claimed(row.id, row.op, row.provider, row.issue_key, row.body, row.stage,
                        lease_until=lease_until, tried=row.attempts > 0 or row.last_error is not None)
        for row in rows
        if row.state != "dead"
    }


def _release(items: list[Claimed], now: datetime) -> None:
    """Give back items taken and not sent: due again at once. Those whose lease ran out and that
    another sender took since are left to it."""
    by_lease: dict[datetime | None, list[int]] = {}
    for item in items:
        by_lease.setdefault(item.lease_until, []).append(item.id)
    if not by_lease:
        return
    with serialized(writes_first=True):
        for lease_until, item_ids in by_lease.items():  # (one lease: the items were taken together)
            db.session.execute(
                update(OutboxItem)
                .where(
                    one_of(OutboxItem.id, item_ids),
                    OutboxItem.state == "sending",
                    OutboxItem.next_attempt_at == lease_until,
                )
                .values(state="pending", next_attempt_at=now),
                execution_options={"synchronize_session": False},
            )


def _still_waiting(item_id: int) -> bool:
    """Whether an item this sender could not take waits still: another sender holds it, or it
    failed since this pass read it. (Not when it went out meanwhile, or was given up on.)"""
    state = db.session.scalar(select(OutboxItem.state).where(OutboxItem.id == item_id))
    db.session.commit()  # (SQLite: a read transaction must end before the pass writes again)
    return state in ("pending", "sending")


def _stopping_last(rows: list[Row[Any]]) -> list[Row[Any]]:
    """The due items in the order a pass takes them: by id, but the issues with an item whose
    sender stopped before recording an outcome (its lease ran out) after the others, and those with
    one that stopped its sender twice in a row last. Should it stop this sender too (a write that
    brings its sender down every time is taken again at each pass until it is given up on), the
    other issues' writes went out first. An issue's own items keep their order: its later ones
    still wait for it."""
    rank: dict[str, int] = {}
    for row in rows:
        stops = 2 if row.again else 1 if row.stopped else 0
        rank[row.issue_key] = max(rank.get(row.issue_key, 0), stops)
    return sorted(rows, key=lambda row: (rank[row.issue_key], row.id))


def deliver(
    *,
    issue_keys: Iterable[str] | None = None,
    ids: Iterable[int] | None = None,
    limit: int = 200,
    now: datetime | None = None,
    sent: set[int] | None = None,
) -> dict[str, int]:
    """Send due items; return counts of ``sent``, ``failed`` and ``skipped`` items, and of those
    ``left`` untried because the poll loop running the pass was asked to stop (the next pass sends them).

    :param sent: when given, the ids of the items this call sent are added to it.
    """
    facade = current_app.extensions["aiimpl"]
    now = now or utcnow()
    keys = list(issue_keys) if issue_keys is not None else None
    query = select(
        OutboxItem.id, OutboxItem.issue_key, OutboxItem.provider, OutboxItem.op,
        # taken on its own, just before it is sent (see below)
        or_(OutboxItem.state == "sending", OutboxItem.last_error == LEASE_RAN_OUT).label("stopped"),
        # (a due item so marked was taken again after its sender stopped, and stopped that one too)
        (OutboxItem.last_error == LEASE_RAN_OUT).label("again"),
    ).where(
        or_(OutboxItem.state == "pending", OutboxItem.state == "sending"),
        OutboxItem.next_attempt_at <= now,
    )
    # an earlier item of the same issue still waiting (not due: backing off, or another sender's)
    # holds the later ones back: left out by the statement itself, before its limit (read and then
    # passed over, the held-back items of a failing issue filled every pass, and no other issue's
    # write was read while its tracker failed)
    held = aliased(OutboxItem)
    query = query.where(~exists().where(
        held.issue_key == OutboxItem.issue_key,
        held.state.in_(("pending", "sending")),
        held.next_attempt_at > now,
    ))
    if keys is not None:
        query = query.where(OutboxItem.issue_key.in_(keys))
    if ids is not None:
        query = query.where(OutboxItem.id.in_(list(ids)))
    rows = _stopping_last(db.session.execute(query.order_by(OutboxItem.id).limit(limit)).all())
    # On SQLite a transaction that began with a read cannot write once another connection has
    # committed ("database is locked" at once, without waiting): end every read transaction
    # before writing, and write the outcome of each send in a transaction of its own.
    db.session.commit()
    # Stage changes and "done" are idempotent on the tracker: they are taken together, in one
    # statement (a first cycle queues one per dispatched issue). Should a pass outlast their lease,
    # another sender may repeat one, which changes nothing. Comments are taken one by one, just
    # before each is sent, so a comment is never posted twice. So is a stage change or "done" whose
    # sender stopped before recording an outcome: should its sender stop again, it was sending this
    # one (not one taken with it, still waiting its turn), and the stop counts as an attempt.
    # And so is one that comes after an item of its issue taken on its own (a merged PR's comment,
    # then "done"): taken at the start, it could be held by a pass that then finds that comment
    # taken by another sender and gives it back, after the other sender passed it by; taken at its
    # turn, it goes out with the comment, from whichever sender posted it.
    alone: set[int] = set()
    taken_alone: set[str] = set()  # the issues with an item taken on its own so far
    for r in rows:  # (an issue's items in their order)
        if r.op not in IDEMPOTENT_OPS or r.stopped or r.issue_key in taken_alone:
            alone.add(r.id)
            taken_alone.add(r.issue_key)
    taken = _claim_many([r.id for r in rows if r.id not in alone], now)
    counts = {"sent": 0, "failed": 0, "skipped": 0, "left": 0}
    blocked_issues: set[str] = set()
    postponed_providers: set[str] = set()
    for index, (item_id, issue_key, provider_id, *_) in enumerate(rows):
        if stop_asked():
            # the poll loop is stopping: the next poller sends the rest (those taken together are
            # given back below)
            counts["left"] = len(rows) - index
            break
        if issue_key in blocked_issues or provider_id in postponed_providers:
            counts["skipped"] += 1
            continue
        if item_id in alone:
            item = _claim(item_id, now)
        else:
            item = taken.pop(item_id, None)
            if item is not None and item.lease_until is not None and item.lease_until <= utcnow():
                # taken at the start of a pass that outlasted its lease: another sender may have sent
                # it since, and a later stage change of its issue after it, which this copy would
                # undo; taken again (as a comment is, just before it is sent), or left to that sender
                item = _claim(item_id, utcnow(), own_lease=item.lease_until)
        if item is None:
            counts["skipped"] += 1
            if _still_waiting(item_id):
                # another sender is posting it, or it failed: the issue's later items wait for it
                # as they do for one that fails here (else they could be posted before it)
                blocked_issues.add(issue_key)
            continue
        error = _send_and_record(facade, item, now)
        if error is not None:
            counts["failed"] += 1
            blocked_issues.add(issue_key)
            retry_after = error.retry_after if isinstance(error, ProviderError) else None
            if retry_after is not None or (isinstance(error, ProviderError) and (error.status or 0) >= 500):
                postponed_providers.add(provider_id)
            continue
        counts["sent"] += 1
        if sent is not None:
            sent.add(item_id)
    # taken together, then held back (an earlier item of the issue failed, or its tracker asked to
    # wait): due again at once. (Should this pass die first, their lease runs out instead.)
    _release(list(taken.values()), now)
    return counts


def send_claimed(item: Claimed, now: datetime | None = None) -> bool:
    """Send an item its caller queued already taken (state ``sending``, its lease running: a
    status event's comment) and committed; record the outcome. Should the caller die first, the
    item's lease runs out and the poller sends it.

    :param now: the time the item was queued taken at (:func:`queue_taken`'s ``now``): its lease
        runs from it, unless ``item`` carries its ``lease_until``.
    :returns: whether it was sent (else it waits for the poller's retry, as any failed item).
    """
    now = now or utcnow()
    if item.lease_until is None:
        item.lease_until = now + LEASE  # as queue_taken took it
    return _send_and_record(current_app.extensions["aiimpl"], item, now) is None


_OUTBOX, _TRACKED = OutboxItem.__table__, TrackedIssue.__table__
#: recorded whoever holds the item now (a sender whose lease ran out posted it all the same: left
#: pending, it would be posted again), but never over a post recorded already (its remote id stays)
_MARK_DONE = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("item_id"), _OUTBOX.c.state != "done")
    .values(state="done", done_at=bindparam("when"), remote_id=bindparam("remote"))
    .execution_options(**{PREPARED: True})
)
#: our own write removed the trigger from the tracker: a trigger seen after now is new
_TRIGGER_CLEARED = (
    update(_TRACKED)
    .where(_TRACKED.c.issue_key == bindparam("item_issue"))
    # (updated_at given: a column's Python-side default is not filled in under a WITH)
    .values(trigger_consumed=False, trigger_cleared_at=bindparam("when"), updated_at=bindparam("when"))
)
#: both in one statement (PostgreSQL: a data-modifying ``WITH`` runs whatever the main statement does)
_MARK_DONE_CLEARED = _TRIGGER_CLEARED.add_cte(_MARK_DONE.cte("done"))


def _send_and_record(facade, item: Claimed, now: datetime) -> Exception | None:  # noqa: ANN001
    """Send one claimed item and record the outcome; the failure, or ``None`` when it was sent."""
    try:
        _send(facade, item)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
        refused = _refused_for_good(exc)
        # (masked as stored: a tracker or a proxy may echo the credential it was sent)
        last_error = logs.masked(str(exc))[:2000] if isinstance(exc, AiimplError) else type(exc).__name__
        failed_at = max(now, utcnow())  # (a long pass's back-off counts from the failure, not its start)
        attempts, dead, recorded = 0, False, False
        with serialized():
            # compare-and-set on this sender's claim: once its lease ran out, another sender may
            # have taken the item and posted it (done) or failed it (pending, its own back-off)
            before = db.session.execute(
                select(OutboxItem.attempts, SERIES_START.label("series_start")).where(_held(item))
            ).first()
            if before is not None:
                attempts = before.attempts + 1
                if refused:
                    dead = attempts >= MAX_ATTEMPTS_REFUSED
                else:
                    dead = _spent(attempts, before.series_start, failed_at)
                # given up on: a dead item no longer holds back the later items of its issue
                values: dict[str, Any] = {"attempts": attempts, "last_error": last_error, "state": "dead"}
                if not dead:
                    values.update(state="pending",
                                  next_attempt_at=failed_at + _backoff(attempts, retry_after))
                recorded = db.session.execute(
                    update(OutboxItem).where(_held(item)).values(**values).returning(OutboxItem.id),
                    execution_options={"synchronize_session": False},
                ).first() is not None
        # the traceback of an exception that is not one of the project's: a plugin's bug shows
        # where it is (the log masks the known secrets in it)
        trace = None if isinstance(exc, AiimplError) else exc
        if not recorded:
            log.warning("outbox item %s (%s %s) failed after its lease ran out, not recorded (another "
                        "sender took it): %s", item.id, item.op, item.issue_key, last_error, exc_info=trace)
            return exc
        if dead:
            why = ""
            if isinstance(exc, NotFound):
                why = " (refused: not found)"
            elif refused:
                why = f" (refused: HTTP {exc.status})"
            log.warning("outbox item %s (%s %s) given up after %d attempts%s: %s", item.id, item.op,
                        item.issue_key, attempts, why, last_error, exc_info=trace)
        else:
            log.warning("outbox item %s (%s %s) failed: %s", item.id, item.op, item.issue_key, last_error,
                        exc_info=trace)
        return exc
    done = {"item_id": item.id, "when": utcnow(), "remote": item.remote_id, "item_issue": item.issue_key}
    cleared = item.op == "stage" and item.stage != Stage.TRIGGERED.value
    if dialect_name() == "postgresql":  # one statement, a transaction of its own
        with one_statement() as connection:
            connection.execute(_MARK_DONE_CLEARED if cleared else _MARK_DONE, done)
        return None
    with serialized(writes_first=True):  # updates only
        db.session.execute(_MARK_DONE, done)
        if cleared:
            db.session.execute(_TRIGGER_CLEARED, done)
    return None


def _send(facade, item: Claimed) -> None:  # noqa: ANN001
    tracker = facade.ticketing(item.provider)
    if item.op == "comment":
        comment = tracker.post_comment_once(
            item.issue_key, item.body or "", ref=comment_ref(item.id), retry=item.tried
        )
        if isinstance(comment, Comment):
            item.remote_id = comment.id
        else:
            # it returned, so the comment was posted: trying again would post it again
            log.warning("the tracker %r answered %s for comment %s on %s, not a Comment; counted as "
                        "posted, without its remote id", item.provider, type(comment).__name__, item.id,
                        item.issue_key)
    elif item.op == "stage":
        tracker.set_stage(item.issue_key, Stage(item.stage))
    elif item.op == "done":
        tracker.mark_done(item.issue_key)
    else:
        raise AiimplError(f"unknown outbox op {item.op!r}")
