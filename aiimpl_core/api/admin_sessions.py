"""``GET /api/sessions`` and ``DELETE /api/sessions/<machineId>``: active session machines and
containers of every configured runner backend that manages sessions."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..errors import NotFound, ProviderError
from ..http import path_segment_problem
from ..schemas.common import ApiError
from ..services import sessions as service

bp = Blueprint("admin_sessions", __name__)


@bp.get("/api/sessions")
def list_sessions():  # noqa: ANN201
    """List active sessions.
    ---
    get:
      summary: Active sessions (an empty list when no backend manages sessions)
      description: >-
        A backend that fails to list while it is not in use (the runner mode in force does not
        select it, no mapping may name it, none of its jobs is in flight: local Docker with an
        unreachable engine, say) is left out, and the failure logged.
      tags: [sessions]
      responses:
        200:
          description: The sessions
          content:
            application/json:
              schema:
                type: array
                items: SessionSchema
        500:
          description: (underlying error message) Listing the sessions of a backend in use failed
          content:
            application/json:
              schema: ErrorSchema
    """
    try:
        return jsonify(service.list_sessions())
    except ProviderError as exc:
        raise ApiError(500, exc.message) from None


@bp.delete("/api/sessions/<machineId>")
def destroy_session(machineId: str):  # noqa: ANN201, N803 - the reference's parameter name
    """Destroy a session.
    ---
    delete:
      summary: Destroy one session machine or container
      tags: [sessions]
      responses:
        200:
          description: Destroyed
          content:
            application/json:
              schema: SessionDestroyedSchema
        400:
          description: >-
            machineId must be an id that fits one segment of a URL path (…): it is empty, '.' or
            '..', or holds '/', '\\', '?', '#' or '%' (a backend puts it in the path of its own API,
            where it would name another resource)
          content:
            application/json:
              schema: ErrorSchema
        404:
          description: Session not found
          content:
            application/json:
              schema: ErrorSchema
        500:
          description: >-
            (underlying error message) Destroying the session failed, or a backend failed and no
            other one had the session
          content:
            application/json:
              schema: ErrorSchema
        503:
          description: Fly sessions config not set
          content:
            application/json:
              schema: ErrorSchema
    """
    if problem := path_segment_problem(machineId):
        raise ApiError(400, f"machineId {problem}")
    try:
        return jsonify(service.destroy(machineId))
    except service.SessionsNotConfigured as exc:
        raise ApiError(503, exc.message) from None
    except NotFound as exc:
        raise ApiError(404, exc.message) from None
    except ProviderError as exc:
        raise ApiError(500, exc.message) from None
