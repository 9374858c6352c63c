"""``POST /api/linear/webhook``: Linear tells us an issue changed, so a new trigger runs at once.

Linear signs each delivery: the ``Linear-Signature`` header is the hex HMAC-SHA256 of the raw
body with the webhook's signing secret, and the body's ``webhookTimestamp`` (epoch milliseconds)
lets us refuse replays older than :data:`~aiimpl_linear.config.WEBHOOK_WINDOW_SECONDS`.
Issue events whose labels include ``AI-Implement`` run a dispatch cycle for that issue; the
regular poll remains the safety net for anything a webhook misses.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiimpl_core.auth import public_endpoint
from aiimpl_core.errors import AiimplError
from aiimpl_core.webhooks import CHECK_FAILED, CHECK_RUNNING, NOT_JSON, check_issues, parse_json
from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from .config import PROVIDER_ID, TRIGGER_LABEL, WEBHOOK_WINDOW_SECONDS, webhook_secret

if TYPE_CHECKING:
    from aiimpl_core.webhooks import CycleReport

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Linear-Signature"


def signature(secret: str, body: bytes) -> str:
    """The ``Linear-Signature`` value for ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    # compared as bytes: compare_digest refuses str with non-ASCII characters (TypeError), and a
    # header may carry any byte (WSGI decodes headers as latin-1)
    given = header.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(signature(secret, body).encode(), given)


def triggered_identifier(payload: dict[str, Any]) -> str | None:
    """The issue identifier of an Issue event whose labels include the trigger, else ``None``."""
    if payload.get("type") != "Issue" or payload.get("action") not in ("create", "update"):
        return None
    data = payload.get("data")
    if not isinstance(data, dict):
        return None
    labels = data.get("labels")
    names = (
        {str(label.get("name", "")).casefold() for label in labels if isinstance(label, dict)}
        if isinstance(labels, list)
        else set()
    )
    if TRIGGER_LABEL.casefold() not in names:
        return None
    identifier = data.get("identifier")
    return identifier if isinstance(identifier, str) and identifier else None


def _run_cycle(identifiers: Sequence[str]) -> CycleReport:
    return check_issues(PROVIDER_ID, identifiers)


#: What the view calls to dispatch; tests replace it.
run_cycle: Callable[[Sequence[str]], CycleReport] = _run_cycle


def make_blueprint() -> Blueprint:
    """A fresh blueprint (one per application)."""
    bp = Blueprint("linear", __name__)

    @bp.post("/api/linear/webhook")
    @public_endpoint
    def linear_webhook() -> ResponseReturnValue:
        """Linear webhook: an issue that gets the AI-Implement label is dispatched at once.
        ---
        post:
          summary: Linear webhook
          description: Verified with `AIIMPL_LINEAR_WEBHOOK_SECRET`, the webhook's signing secret -
            the `Linear-Signature` header is the hex HMAC-SHA256 of the raw body - and the body's
            `webhookTimestamp` (epoch milliseconds) must be within 60 seconds of the server's clock.
            `Issue` create/update events whose labels include `AI-Implement` run a dispatch check
            for that issue; every other event is acknowledged and ignored. The answer says what the
            check did. `dispatched` is true when this delivery's check dispatched the issue (with
            its `jobId`, and its `status` after the launch - `failed` if the backend refused it,
            `unknown` with `deferredUntil` if it rate-limited it and the job waits to be tried
            again), else `reason` says why not - the blocker's message (and its slug in
            `blocker`), why the issue needs nothing (another check dispatched it, say), or that
            the check failed; the next poll cycle retries what a failed check missed. The answer
            comes within `AIIMPL_WEBHOOK_ANSWER_SECONDS` (4 s; Linear counts a delivery not
            answered in 5 s as failed); a check still running then goes on in the background and
            the answer has `running` true, with what the check had done by then - the job it
            claimed (its `status` `unknown` while the launch goes on), or no outcome yet.
          tags: [Linear]
          security: []
          parameters:
            - in: header
              name: Linear-Signature
              required: true
              schema: {type: string, pattern: '^[0-9a-f]{64}$'}
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [action, type, data, webhookTimestamp]
                  properties:
                    action: {type: string, example: update}
                    type: {type: string, example: Issue}
                    webhookTimestamp: {type: number}
                    data:
                      type: object
                      properties:
                        identifier: {type: string, example: ENG-12}
                        labels:
                          type: array
                          items: {type: object, properties: {name: {type: string}}}
          responses:
            200:
              description: Handled (a dispatch check ran for the issue; the answer says what it
                did) or ignored.
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      ok: {type: boolean}
                      issue: {type: string}
                      dispatched: {type: boolean}
                      jobId: {type: integer}
                      status: {type: string, example: dispatched}
                      blocker: {type: string, example: concurrency}
                      reason: {type: string, example: trigger already dispatched}
                      ignored: {type: boolean}
                      running: {type: boolean}
            400:
              description: "`Invalid JSON payload` or `Missing webhookTimestamp`"
              content: {application/json: {schema: ErrorSchema}}
            401:
              description: "`Invalid signature` or `Webhook timestamp outside the allowed window`"
              content: {application/json: {schema: ErrorSchema}}
            501:
              description: "`Linear webhook not configured`: no signing secret is set"
              content: {application/json: {schema: ErrorSchema}}
        """
        # (the secret alone: a listing setting out of range answered every delivery, unsigned ones
        # too, with its own 400, before the signature was looked at)
        secret = webhook_secret(current_app.config)
        if not secret:
            return jsonify(error="Linear webhook not configured"), 501
        raw = request.get_data(cache=True)
        if not signature_valid(secret, raw, request.headers.get(SIGNATURE_HEADER)):
            return jsonify(error="Invalid signature"), 401
        payload = parse_json(raw, replace_unstorable=True)
        if payload is NOT_JSON or not isinstance(payload, dict):
            return jsonify(error="Invalid JSON payload"), 400
        stamp = payload.get("webhookTimestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
            return jsonify(error="Missing webhookTimestamp"), 400
        try:
            seconds = float(stamp) / 1000.0
        except OverflowError:  # an integer too large for a float is no timestamp
            seconds = math.inf
        if not math.isfinite(seconds) or abs(time.time() - seconds) > WEBHOOK_WINDOW_SECONDS:
            return jsonify(error="Webhook timestamp outside the allowed window"), 401
        identifier = triggered_identifier(payload)
        if identifier is None:
            return jsonify(ok=True, ignored=True), 200
        try:
            report = run_cycle([identifier])
        except AiimplError as exc:
            # Linear retries failed deliveries; the next poll picks the issue up anyway, so a
            # failure here is logged and acknowledged rather than bounced back.
            log.warning("Linear webhook: dispatch cycle for %s failed: %s", identifier, exc.message)
            return jsonify(ok=True, issue=identifier, dispatched=False, reason=CHECK_FAILED), 200
        current = reported_as(report, identifier)
        return jsonify(ok=True, issue=current, **outcome(report, current)), 200

    return bp


def reported_as(report: CycleReport, identifier: str) -> str:
    """The identifier the check reported the issue under.

    Usually the one the delivery named. An issue moved to another team since the delivery was sent
    is read through its previous identifier and reported under its new one: the check was asked
    about this one issue only, so the single key the report names is it.
    """
    keys = {entry.issue_key for entry in report.dispatched} | set(report.blocked) | set(report.skipped)
    if identifier in keys or len(keys) != 1:
        return identifier
    return next(iter(keys))


def outcome(report: CycleReport, identifier: str) -> dict[str, Any]:
    """What the check of ``check_issues`` did with the issue, for the webhook's answer:
    ``dispatched`` and the job, or why not (a blocker, a reason it needs nothing, a failure).

    Reasons are the report's own words: the blockers' messages and the skip reasons, never a
    remote error's text (that goes to the log).
    """
    dispatched = report.dispatched_of(identifier)
    running = {"running": True} if report.running else {}
    if dispatched is not None:
        # the job's status after its launch: "failed" when the backend refused it (the failure is
        # commented on the issue, as for a poll cycle's dispatch); "unknown" while a launch that
        # outlasted the answer's time goes on, or (with the time) when the backend rate-limited it
        until = dispatched.as_dict()["deferredUntil"]
        deferred = {"deferredUntil": until} if until else {}
        return {"dispatched": True, "jobId": dispatched.job_id, "status": dispatched.status, **deferred,
                **running}
    if identifier in report.blocked:
        held = report.blocked[identifier]
        return {"dispatched": False, "blocker": held["reason"], "reason": held["message"], **running}
    if identifier in report.skipped:
        return {"dispatched": False, "reason": report.skipped[identifier], **running}
    if report.running:
        return {"dispatched": False, "reason": CHECK_RUNNING, "running": True}
    if report.providers_skipped or report.errors:
        log.warning("Linear webhook: dispatch check for %s did not run to its end: %s", identifier,
                    "; ".join([*report.providers_skipped.values(), *report.errors]))
    return {"dispatched": False, "reason": CHECK_FAILED}
