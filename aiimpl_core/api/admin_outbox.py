"""Tracker writes the outbox gave up on: ``GET /api/outbox`` and ``POST /api/outbox/<itemId>/retry``.

An outbox item is marked ``dead`` after its last attempt (:mod:`aiimpl_core.services.outbox`) and
is only logged; these endpoints show such items and put one back in the queue, for the next
delivery (a poll cycle, or a write of the same issue) to send.

What is shown was stored without secrets — a comment's body is built from redacted text, and a
failure is recorded as the project error's message (which never holds a secret) or else as the
exception's type only. The orchestrator's own sensitive settings are masked once more all the same:
a tracker's error message is remote text, and it could quote the credential it was sent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import and_, exists, func, not_, select, update
from sqlalchemy.orm import aliased

from ..database import serialized
from ..extensions import db
from ..orm import OutboxItem, iso_z, utcnow
from ..schemas import admin as schemas
from ..schemas.common import ApiError
from ..services import redaction
from ..session.redact import Redactor

bp = Blueprint("admin_outbox", __name__)
log = logging.getLogger(__name__)

ITEM_NOT_FOUND = "outbox item not found"
NOT_DEAD = "only a dead item can be retried"
LATER_STAGE_DELIVERED = "a later stage change of this issue was delivered"
LATER_STAGE_SENDING = "a later stage change of this issue is being delivered: retry once it is done"
#: writes that move the issue (sending an older one after a newer one went out moves it back)
STAGE_OPS = ("stage", "done")




def _preview(body: str | None, mask: Redactor) -> str | None:
    if body is None:
        return None
    text = mask.text(body)
    limit = schemas.OUTBOX_PREVIEW_CHARS
    return text if len(text) <= limit else text[: limit - 1] + "…"


def item_summary(item: OutboxItem, mask: Redactor) -> dict[str, Any]:
    return {
        "id": item.id,
        "issueKey": item.issue_key,
        "jobId": item.job_id,
        "provider": item.provider,
        "op": item.op,
        "kind": item.kind,
        "stage": item.stage,
        "state": item.state,
        "attempts": item.attempts,
        "lastError": mask.text(item.last_error) if item.last_error else item.last_error,
        "bodyPreview": _preview(item.body, mask),
        "createdAt": iso_z(item.created_at),
        "nextAttemptAt": iso_z(item.next_attempt_at),
        "doneAt": iso_z(item.done_at),
        "requeuedAt": iso_z(item.requeued_at),
    }


def _item_id(item_id: str) -> int:
    # taken as text so that any path answers "outbox item not found" (as GET /api/jobs/<jobId>)
    if not (item_id.isascii() and item_id.isdigit()) or len(item_id) > 10 or int(item_id) > 2**31 - 1:
        raise ApiError(404, ITEM_NOT_FOUND)
    return int(item_id)


def _counts(issue_key: str | None) -> dict[str, int]:
    stmt = select(OutboxItem.state, func.count()).group_by(OutboxItem.state)
    if issue_key is not None:
        stmt = stmt.where(OutboxItem.issue_key == issue_key)
    counts = dict.fromkeys(schemas.OUTBOX_STATES, 0)
    counts.update({state: n for state, n in db.session.execute(stmt)})
    return counts


@bp.get("/api/outbox")
def list_outbox():  # noqa: ANN201
    """List outbox items (by default the dead ones), newest first.
    ---
    get:
      summary: Tracker writes in the outbox (default the dead ones, given up on), newest first
      description: >-
        Each item carries a preview of its comment, never the whole body; `counts` holds how many
        items are in each state.
      tags: [admin]
      parameters:
        - in: query
          schema: OutboxQuerySchema
      responses:
        200:
          description: The items and the counts per state
          content:
            application/json:
              schema: OutboxListSchema
        400:
          description: >-
            A filter is invalid (its message names it), or a filter is given more than once:
            state given more than once (issueKey, limit alike)
          content:
            application/json:
              schema: ErrorSchema
    """
    query = schemas.load_query(schemas.OutboxQuerySchema(), schemas.OUTBOX_QUERY_RULES)
    stmt = select(OutboxItem).where(OutboxItem.state == query["state"])
    issue_key = query.get("issueKey")
    if issue_key is not None:
        stmt = stmt.where(OutboxItem.issue_key == issue_key)
    rows = db.session.scalars(stmt.order_by(OutboxItem.id.desc()).limit(query["limit"])).all()
    mask = redaction.config_redactor()
    return jsonify(items=[item_summary(r, mask) for r in rows], counts=_counts(issue_key))


def _requeue(item_id: int, now: datetime) -> bool:
    """Put a dead item back in the queue, due now, with its attempts reset and a full series of
    them counted from now (``requeued_at``; its ``created_at`` stays the time it was first queued)
    (compare-and-set: of two concurrent tries, one re-queues it). A stage or done item is left dead
    when a later one of its issue went out already. Whether it was re-queued."""
    later = aliased(OutboxItem)
    # (one a sender is sending now counts too: this one, due at once, could go out after it)
    later_delivered = exists().where(
        later.issue_key == OutboxItem.issue_key,
        later.id > OutboxItem.id,
        later.op.in_(STAGE_OPS),
        later.state.in_(("done", "sending")),
    )
    with serialized(writes_first=True):
        row = db.session.execute(
            update(OutboxItem)
            .where(
                OutboxItem.id == item_id,
                OutboxItem.state == "dead",
                not_(and_(OutboxItem.op.in_(STAGE_OPS), later_delivered)),
            )
            .values(state="pending", attempts=0, next_attempt_at=now, requeued_at=now)
            .returning(OutboxItem.id),
            execution_options={"synchronize_session": False},
        ).first()
    return row is not None


def _refusal(item_id: int) -> ApiError:
    """Why an item was not re-queued."""
    item = db.session.get(OutboxItem, item_id)
    if item is None:
        return ApiError(404, ITEM_NOT_FOUND)
    if item.state != "dead":
        return ApiError(409, NOT_DEAD)
    delivered = db.session.scalar(select(func.count()).where(
        OutboxItem.issue_key == item.issue_key, OutboxItem.id > item.id, OutboxItem.op.in_(STAGE_OPS),
        OutboxItem.state == "done",
    ))
    return ApiError(409, LATER_STAGE_DELIVERED if delivered else LATER_STAGE_SENDING)


@bp.post("/api/outbox/<itemId>/retry")
def retry_item(itemId: str):  # noqa: ANN201, N803 - the path's parameter name
    """Re-queue a dead outbox item.
    ---
    post:
      summary: Put a dead tracker write back in the queue (attempts reset, due now)
      description: >-
        The next delivery sends it, after any later comments of the issue that went out meanwhile.
        Its last error is kept until then.
      tags: [admin]
      responses:
        200:
          description: The item, re-queued
          content:
            application/json:
              schema: OutboxItemSchema
        404:
          description: outbox item not found
          content:
            application/json:
              schema: ErrorSchema
        409:
          description: only a dead item can be retried; a later stage change of this issue was
            delivered; a later stage change of this issue is being delivered (retry once it is done)
          content:
            application/json:
              schema: ErrorSchema
    """
    item_id = _item_id(itemId)
    if not _requeue(item_id, utcnow()):
        raise _refusal(item_id)
    item = db.session.get(OutboxItem, item_id)
    if item is None:  # deleted in the meantime
        raise ApiError(404, ITEM_NOT_FOUND)
    log.info("outbox item %s (%s %s) re-queued by an operator", item.id, item.op, item.issue_key)
    return jsonify(item_summary(item, redaction.config_redactor()))
