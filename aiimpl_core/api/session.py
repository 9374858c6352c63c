"""Session endpoints: ``POST /api/token``, ``POST /api/status``, ``POST /api/step-report``.

A session authenticates with its job's one-time nonce (in the body), not the admin session, so
these views are marked public for the admin guard. Errors are the reference's messages.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..auth import public_endpoint
from ..schemas import runner as schemas
from ..services import callbacks

bp = Blueprint("session", __name__)

#: Schema instances are reusable: loading keeps no state in them.
_TOKEN_REQUEST = schemas.TokenRequestSchema()
_STATUS_EVENT = schemas.StatusEventSchema()
_STEP_REPORT = schemas.StepReportSchema()


def _refusal(exc: schemas.BodyError | callbacks.CallbackError) -> tuple[Any, int]:
    if isinstance(exc, schemas.BodyError):
        return jsonify(error=exc.answer), 400
    return jsonify(exc.body()), exc.status


@bp.post("/api/token")
@public_endpoint
def github_token():  # noqa: ANN201
    """Issue a short-lived GitHub token for the job's repository.
    ---
    post:
      summary: Exchange the job nonce for a short-lived GitHub installation token
      description: >-
        The token is limited to the job's repository. Only `nonce`, `owner` and
        `refusedTokenSha256` are read; any other field (`repo`, say) is ignored, whatever its type.
      tags: [session]
      security:
        - nonce: []
      requestBody:
        required: true
        content:
          application/json:
            schema: TokenRequestSchema
      responses:
        200:
          description: The token and its expiry
          content:
            application/json:
              schema: TokenResponseSchema
        400:
          description: >-
            nonce and owner are required; beyond the reference, for a field that is there but no
            string: nonce must be a string, owner must be a string
          content:
            application/json:
              schema: CallbackErrorSchema
        403:
          description: Invalid or expired nonce; Owner mismatch
          content:
            application/json:
              schema: CallbackErrorSchema
        500:
          description: Failed to generate token (also when the body is not valid JSON)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    body = schemas.read_json_body()
    if body is schemas.NOT_JSON:
        # the reference answers an unparsable body as a failed generation
        return jsonify(error=callbacks.TOKEN_FAILED), 500
    try:
        data = schemas.load(_TOKEN_REQUEST, body, not_object="nonce and owner are required")
        refused = schemas.refused_token_digest(data)
        return jsonify(callbacks.github_token(data["nonce"], data["owner"], refused)), 200
    except (schemas.BodyError, callbacks.CallbackError) as exc:
        return _refusal(exc)


@bp.post("/api/status")
@public_endpoint
def status_event():  # noqa: ANN201
    """Post a session lifecycle event; it becomes a progress comment on the issue.
    ---
    post:
      summary: Report a session lifecycle event (posted on the issue as a progress comment)
      description: >-
        Event types: session_created, environment_ready, pr_opened, verification_started,
        verification_passed, verification_failed, session_cleaned_up, session_failed,
        session_timed_out. The comment is delivered before answering; a retried event is never
        posted twice. When posting fails the answer is 500 and the comment stays queued.
      tags: [session]
      security:
        - nonce: []
      requestBody:
        required: true
        content:
          application/json:
            schema: StatusEventSchema
      responses:
        200:
          description: Posted
          content:
            application/json:
              schema: StatusResponseSchema
        400:
          description: >-
            event is required; Invalid JSON body; nonce is required; Unknown event type: {type}
            (quoted whole); beyond the reference, an optional field that is wrongly typed or too
            long:
            prNumber, detail, duration or reason must be a string or a number;
            prUrl must be a string of at most 2000 characters;
            logUrl must be an http(s) URL of at most 2000 characters
          content:
            application/json:
              schema: CallbackErrorSchema
        403:
          description: Invalid or expired nonce (an empty nonce too, which no job has)
          content:
            application/json:
              schema: CallbackErrorSchema
        500:
          description: Internal server error (posting the status comment failed)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    try:
        data = schemas.load(_STATUS_EVENT, _json_or_invalid(), not_object="nonce is required")
        return jsonify(callbacks.status_event(data["nonce"], data)), 200
    except (schemas.BodyError, callbacks.CallbackError) as exc:
        return _refusal(exc)


@bp.post("/api/step-report")
@public_endpoint
def step_report():  # noqa: ANN201
    """Report the status of one pipeline step.
    ---
    post:
      summary: Report a pipeline step of the session (upserted by step id)
      tags: [session]
      security:
        - nonce: []
      requestBody:
        required: true
        content:
          application/json:
            schema: StepReportSchema
      responses:
        200:
          description: Recorded
          content:
            application/json:
              schema: ProgressResponseSchema
        400:
          description: >-
            nonce is required; Invalid JSON body; step is required;
            step.{id|type|status|started_at} is required and must be a string;
            beyond the reference, a field of the right type that is too long:
            step.{id|type} must be a string of at most 255 characters,
            step.{status|started_at|finished_at} must be a string of at most 64 characters
          content:
            application/json:
              schema: CallbackErrorSchema
        403:
          description: Invalid or expired nonce (an empty nonce too, which no job has)
          content:
            application/json:
              schema: CallbackErrorSchema
        409:
          description: >-
            A job keeps at most 1000 steps (beyond the reference): the job has that many, none of
            this `step.id` (a step it has is still updated)
          content:
            application/json:
              schema: CallbackErrorSchema
        500:
          description: Internal server error (persisting the step failed)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    try:
        data = schemas.load(_STEP_REPORT, _json_or_invalid(), not_object="nonce is required")
        return jsonify(callbacks.record_step_report(data["nonce"], data["step"])), 200
    except (schemas.BodyError, callbacks.CallbackError) as exc:
        return _refusal(exc)


def _json_or_invalid() -> Any:
    body = schemas.read_json_body()
    if body is schemas.NOT_JSON:
        raise schemas.BodyError("Invalid JSON body")
    return body
