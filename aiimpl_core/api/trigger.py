"""``POST /trigger/gap-fill``: external automation starts a gap-analysis run on an existing PR.

Authenticated by ``Authorization: Bearer <AIIMPL_TRIGGER_SECRET>``; while the secret is unset
the endpoint answers 501. Errors are the reference's slugs.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..auth.admin import shared_secret_refusal
from ..schemas import runner as schemas
from ..services import gapfill
from ..services.callbacks import CallbackError

bp = Blueprint("trigger", __name__)


@bp.post("/trigger/gap-fill")
def gap_fill():  # noqa: ANN201
    """Trigger a gap-fill run on an existing pull request.
    ---
    post:
      summary: Dispatch a gap-analysis run on an existing pull request
      description: >-
        Dispatched through the mapping's runner backend when it supports gap-fill, else the
        first configured backend that does. An issue with a job still in flight answers 409
        `already_running`. The caps (maxInProgressAiIssues, AIIMPL_GLOBAL_CAP,
        AIIMPL_BACKEND_CAPS) do not refuse this explicit request; its job counts toward them.
      tags: [trigger]
      security:
        - triggerSecret: []
      requestBody:
        required: true
        content:
          application/json:
            schema: GapFillSchema
      responses:
        202:
          description: The gap-analysis job was created and dispatched
          content:
            application/json:
              schema: GapFillResponseSchema
        400:
          description: >-
            issueKey and positive integer prNumber required; beyond the reference, prNumber must be
            at most 2147483647
          content:
            application/json:
              schema: CallbackErrorSchema
        401:
          description: unauthorized
          content:
            application/json:
              schema: CallbackErrorSchema
        404:
          description: >-
            mapping_not_found; beyond the reference, issue_not_found when the mapping's tracker
            says it has no such issue (a tracker that cannot say does not hold the trigger up)
          content:
            application/json:
              schema: CallbackErrorSchema
        409:
          description: already_running (beyond the reference)
          content:
            application/json:
              schema: CallbackErrorSchema
        423:
          description: project_paused (with teamKey)
          content:
            application/json:
              schema: CallbackErrorSchema
        501:
          description: Gap fill trigger not configured
          content:
            application/json:
              schema: CallbackErrorSchema
        502:
          description: dispatch_failed (with detail and dispatchStatus)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    refused = shared_secret_refusal("AIIMPL_TRIGGER_SECRET", "Gap fill trigger not configured")
    if refused is not None:
        return refused
    try:
        data = schemas.load(
            schemas.GapFillSchema(), schemas.read_json_body(), not_object=schemas.GAP_FILL_BAD_BODY
        )
        return jsonify(gapfill.trigger_gap_fill(data["issueKey"], data["prNumber"])), 202
    except schemas.BodyError as exc:
        return jsonify(error=exc.answer), 400
    except CallbackError as exc:
        return jsonify(exc.body()), exc.status
