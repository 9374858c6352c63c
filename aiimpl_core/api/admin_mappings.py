"""Project mappings: ``/api/mappings`` (create or update, list, read, patch, delete, sync workflows).

Validation and storage live in :mod:`aiimpl_core.services.mappings` (shared with the CLI).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify

from ..errors import NotFound, ProviderError, ValidationError
from ..schemas.common import INVALID_BODY, NOT_JSON, ApiError, read_json
from ..services import mappings as service
from ..types import SyncResult

bp = Blueprint("admin_mappings", __name__)
log = logging.getLogger(__name__)

TEAM_NOT_FOUND = "Team not found"


def _body() -> Any:
    data = read_json()
    if data is NOT_JSON or not isinstance(data, dict):
        raise ApiError(400, INVALID_BODY)
    return data


@bp.get("/api/mappings")
def list_mappings():  # noqa: ANN201
    """List mappings.
    ---
    get:
      summary: Every project mapping, by team key
      tags: [mappings]
      responses:
        200:
          description: The mappings
          content:
            application/json:
              schema:
                type: array
                items: MappingSchema
    """
    return jsonify(service.list_mappings())


@bp.post("/api/mappings")
def save_mapping():  # noqa: ANN201
    """Create or update a mapping.
    ---
    post:
      summary: Create a mapping, or update the one of `teamKey` (omitted fields keep their values)
      description: >-
        Validation answers the first failing rule, in this order: `Invalid request body`;
        `teamKey, owner, and repo are required`; `defaultBranch is required` (for a field that is
        there but no string: `owner must be a string`, and so on); the model provider
        (`provider must be …` with the installed ids, then the provider's own rules such as
        `awsRegion is required when provider is 'bedrock'` and `provider 'bedrock' is not supported
        with executionMode 'fly-machines'`); `executionMode must be …`, `machineCpus must be a
        positive integer`, `machineMemoryMb must be an integer >= 256`, `sessionMode must be
        'autonomous', 'interactive', or 'hybrid'`; `branchPrefix invalid: {detail}`, `extraEnv must
        be a plain object`, `extraEnv values must all be strings`, `extraEnv keys must be
        environment variable names (letters, digits, '_')`, `extraEnv {NAME} is too long: a
        variable takes at most 131,071 bytes with its name` (Linux's limit for one variable a
        process is given), `extraEnv {NAME} holds the value of {the setting NAME, the global
        secret NAME, the team secret NAME}: …` (extraEnv is no secret: shown in plain text and
        passed as a public GitHub Actions workflow input), `maxInProgressAiIssues must be a
        positive integer`,
        `planningWorkflowFile is required when planningEnabled is true`; then the runner backend's
        and the ticketing provider's own validation messages.
      tags: [mappings]
      requestBody:
        required: true
        content:
          application/json:
            schema: MappingInputSchema
      responses:
        200:
          description: Updated
          content:
            application/json:
              schema: MappingSchema
        201:
          description: Created
          content:
            application/json:
              schema: MappingSchema
        400:
          description: The first failing validation rule's message
          content:
            application/json:
              schema: ErrorSchema
    """
    body = _body()
    try:
        mapping, created = service.save(body)
    except ValidationError as exc:
        raise ApiError(400, exc.message) from None
    return jsonify(mapping), 201 if created else 200


@bp.get("/api/mappings/<teamKey>")
def get_mapping(teamKey: str):  # noqa: ANN201, N803 - the reference's parameter name
    """Read one mapping.
    ---
    get:
      summary: One mapping
      tags: [mappings]
      responses:
        200:
          description: The mapping
          content:
            application/json:
              schema: MappingSchema
        404:
          description: Team not found
          content:
            application/json:
              schema: ErrorSchema
    """
    try:
        return jsonify(service.get(teamKey))
    except NotFound:
        raise ApiError(404, TEAM_NOT_FOUND) from None


@bp.patch("/api/mappings/<teamKey>")
def patch_mapping(teamKey: str):  # noqa: ANN201, N803
    """Pause or resume a mapping, or set its concurrency cap.
    ---
    patch:
      summary: Set `paused` or `maxInProgressAiIssues` (one per request; null removes the cap)
      tags: [mappings]
      requestBody:
        required: true
        content:
          application/json:
            schema: MappingPatchSchema
      responses:
        200:
          description: The mapping after the change
          content:
            application/json:
              schema: MappingSchema
        400:
          description: >-
            Invalid request body; maxInProgressAiIssues must be a positive integer; Specify either
            paused or maxInProgressAiIssues, not both; Specify either paused or
            maxInProgressAiIssues: PATCH changes only these (POST /api/mappings saves the other
            fields), when neither is given; paused must be true or false
          content:
            application/json:
              schema: ErrorSchema
        404:
          description: Team not found
          content:
            application/json:
              schema: ErrorSchema
    """
    body = _body()
    try:
        return jsonify(service.patch(teamKey, body))
    except ValidationError as exc:
        raise ApiError(400, exc.message) from None
    except NotFound:
        raise ApiError(404, TEAM_NOT_FOUND) from None


@bp.delete("/api/mappings/<teamKey>")
def delete_mapping(teamKey: str):  # noqa: ANN201, N803
    """Delete a mapping (and its team secrets).
    ---
    delete:
      summary: Delete a mapping and its team secrets
      tags: [mappings]
      responses:
        200:
          description: Deleted
          content:
            application/json:
              schema: DeletedSchema
        404:
          description: 'No mapping with that team key: `{"deleted": false}`, no error field'
          content:
            application/json:
              schema: DeletedSchema
    """
    if not service.delete_mapping(teamKey):
        raise ApiError(404, None, deleted=False)
    return jsonify(deleted=True)


@bp.post("/api/mappings/<teamKey>/sync-workflows")
def sync_workflows(teamKey: str):  # noqa: ANN201, N803
    """Re-sync the workflow templates into the mapping's repository.
    ---
    post:
      summary: Create or update the runner backend's workflow files in the mapping's repository
      tags: [mappings]
      responses:
        200:
          description: What the sync changed, and `warnings`, what the runs of the files written will fail
            at (e.g. an AIIMPL_PUBLIC_URL only the orchestrator's host reaches)
          content:
            application/json:
              schema: SyncWorkflowsSchema
        400:
          description: The mapping's runner backend is not installed or uses no workflow files
          content:
            application/json:
              schema: ErrorSchema
        404:
          description: Team not found
          content:
            application/json:
              schema: ErrorSchema
        500:
          description: (underlying error message) The sync to GitHub failed
          content:
            application/json:
              schema: ErrorSchema
    """
    try:
        row = service.require(teamKey)
    except NotFound:
        raise ApiError(404, TEAM_NOT_FOUND) from None
    facade = current_app.extensions["aiimpl"]
    if row.execution_mode not in facade.ids("runner"):
        raise ApiError(400, f"executionMode '{row.execution_mode}' is not an installed runner backend")
    backend = facade.runner(row.execution_mode)
    if not backend.supports_workflow_sync:
        raise ApiError(400, f"executionMode '{backend.id}' does not use workflow files; nothing to sync")
    try:
        result = backend.sync_workflows(row.view())
    except ProviderError as exc:
        raise ApiError(500, exc.message) from None
    except Exception as exc:  # noqa: BLE001 - the reference's 500 row, without a traceback
        log.exception("sync-workflows of %s failed", teamKey)
        raise ApiError(500, f"{backend.display_name}: {type(exc).__name__}") from None
    problem = _sync_answer_problem(result)
    if problem is not None:
        # the plugin's broken contract, said as its failure is (read outside the call, it was a 500
        # with a traceback in the log)
        log.error("sync-workflows of %s: %s answered %s", teamKey, backend.id, problem)
        raise ApiError(500, f"{backend.display_name}: sync_workflows answered {problem}") from None
    return jsonify(
        teamKey=row.team_key,
        backend=backend.id,
        created=list(result.created),
        updated=list(result.updated),
        unchanged=list(result.unchanged),
        warnings=list(result.warnings),
    )


def _sync_answer_problem(result: object) -> str | None:
    """What is wrong with a ``sync_workflows`` answer (the rest of "answered …"), or ``None``."""
    if not isinstance(result, SyncResult):
        return f"{type(result).__name__}, not a SyncResult"
    for name in ("created", "updated", "unchanged", "warnings"):
        value = getattr(result, name)
        if not isinstance(value, (tuple, list)) or not all(isinstance(item, str) for item in value):
            return f"a SyncResult whose {name} is not a tuple of strings"
    return None
