"""Runner callbacks: ``POST /runner/result``, ``POST /runner/progress``, ``GET /runner/planning-context``.

Each is opened by a run token (JWT) whose audience names it; errors are the reference's slugs.
Views parse and authenticate; :mod:`aiimpl_core.services.callbacks` does the work.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..auth import bearer_refused, tokens
from ..auth.run import run_token_required
from ..auth.tokens import RunClaims
from ..schemas import runner as schemas
from ..services import callbacks

bp = Blueprint("runner", __name__)

#: Schema instances are reusable: loading keeps no state in them.
_RUNNER_RESULT = schemas.RunnerResultSchema()
_RUNNER_PROGRESS = schemas.RunnerProgressSchema()


def _refusal(exc: schemas.BodyError | callbacks.CallbackError) -> tuple[Any, int]:
    if isinstance(exc, schemas.BodyError):
        body: dict[str, Any] = {"error": exc.answer}
        if exc.answer == "invalid_field" and exc.field:
            body["field"] = exc.field
        return jsonify(body), 400
    if exc.status == 401:
        return bearer_refused(exc.body()["error"])
    return jsonify(exc.body()), exc.status


@bp.post("/runner/result")
@run_token_required(tokens.AUD_RESULT)
def runner_result(claims: RunClaims):  # noqa: ANN201
    """Report the final outcome of a run.
    ---
    post:
      summary: Report the final outcome of a run (success with a PR, or failure with error context)
      description: >-
        Ends the job: `success` → `completed` (or `review_failed` when the post-push review did
        not approve), `failure` → `failed`. The result token is single-use. A result for a job
        that already ended (for example timed out) consumes the token and answers 200 with the
        job's unchanged status. Validation answers the first failing rule in the order of the
        table below; a wrongly typed optional field gives `invalid_field` with `field`.
      tags: [runner]
      security:
        - runToken: []
      requestBody:
        required: true
        content:
          application/json:
            schema: RunnerResultSchema
      responses:
        200:
          description: The job's status after the result
          content:
            application/json:
              schema: RunnerResultResponseSchema
        400:
          description: >-
            invalid_body, invalid_comment_shape, invalid_comments, invalid_outcome, invalid_phase,
            missing_prUrl, phase_mismatch, invalid_field
          content:
            application/json:
              schema: CallbackErrorSchema
        401:
          description: bad_signature, expired, malformed, wrong_audience, missing_bearer
          content:
            application/json:
              schema: CallbackErrorSchema
        404:
          description: job_not_found (the token's job does not exist)
          content:
            application/json:
              schema: CallbackErrorSchema
        409:
          description: already_consumed
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    try:
        data = schemas.load(_RUNNER_RESULT, schemas.read_json_body(), not_object="invalid_body")
        return jsonify(callbacks.record_result(claims, data)), 200
    except (schemas.BodyError, callbacks.CallbackError) as exc:
        return _refusal(exc)


@bp.post("/runner/progress")
@run_token_required(tokens.AUD_PROGRESS)
def runner_progress(claims: RunClaims):  # noqa: ANN201
    """Stream one pipeline step of a run.
    ---
    post:
      summary: Report a step of a run (upserted by step id)
      description: >-
        The first report moves the job to `running`. Reports after the job ended are recorded
        but never change its status. Validation answers the first failing rule in the order of
        the table below; an empty `step.id` counts as a missing one (`invalid_step_id`); a wrongly
        typed or too long optional step field (`finished_at`) gives `invalid_field` with `field`
        (`step.finished_at`).
      tags: [runner]
      security:
        - runToken: []
      requestBody:
        required: true
        content:
          application/json:
            schema: RunnerProgressSchema
      responses:
        200:
          description: Recorded
          content:
            application/json:
              schema: ProgressResponseSchema
        400:
          description: >-
            invalid_body, invalid_step_id, invalid_step_started_at, invalid_step_status,
            invalid_step_type, step_required, invalid_field
          content:
            application/json:
              schema: CallbackErrorSchema
        401:
          description: bad_signature, expired, malformed, wrong_audience, missing_bearer
          content:
            application/json:
              schema: CallbackErrorSchema
        404:
          description: job_not_found
          content:
            application/json:
              schema: CallbackErrorSchema
        409:
          description: >-
            too_many_steps (beyond the reference): the job has 1000 steps, none of this `step.id`
            (a step it has is still updated)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    try:
        data = schemas.load(
            _RUNNER_PROGRESS, schemas.read_json_body(), not_object="invalid_body"
        )
        return jsonify(callbacks.record_progress(claims.job_id, data["step"])), 200
    except (schemas.BodyError, callbacks.CallbackError) as exc:
        return _refusal(exc)


@bp.get("/runner/planning-context")
@run_token_required(tokens.AUD_PLANNING_CONTEXT)
def planning_context(claims: RunClaims):  # noqa: ANN201
    """Fetch the planning context of a run.
    ---
    get:
      summary: The issue, repository, branches and (for implementation) the approved plan
      description: >-
        The issue is read live from the tracker; when the tracker fails, what the orchestrator
        knows is returned with `issueSource: cache` and `trackerError`. The token reads it only
        while its job runs: once the job has ended it is `expired`.
      tags: [runner]
      security:
        - runToken: []
      responses:
        200:
          description: The context
          content:
            application/json:
              schema: PlanningContextSchema
        401:
          description: >-
            bad_signature, expired (also once the job has ended), malformed, wrong_audience,
            missing_bearer
          content:
            application/json:
              schema: CallbackErrorSchema
        404:
          description: job_not_found
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    try:
        return jsonify(callbacks.planning_context(claims.job_id)), 200
    except callbacks.CallbackError as exc:
        return _refusal(exc)
