"""``GET``/``POST /api/runner-mode``: the global runner mode, saved in the database.

A ``RUNNER_MODE`` environment variable overrides the saved mode at runtime: a change is still
saved, and answered with the reference's 409 so the operator knows it has no effect yet.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from ..schemas import admin as schemas
from ..schemas.common import ApiError, read_json
from ..services import blockers, settings, shadow

bp = Blueprint("admin_runner_mode", __name__)


def _warnings(effective: str, saved: str) -> list[str]:
    """What a forced mode (``gha``, ``fly``, ``local``) without an installed backend means: in
    force, it holds every issue, blocked, until its plugin is installed or the mode changed; saved
    while ``RUNNER_MODE`` forces another, it will once that is unset."""
    installed = current_app.extensions["aiimpl"].runner_modes()

    def missing(mode: str) -> bool:
        return mode not in ("default", "shadow") and mode not in installed

    out = []
    if missing(effective):
        out.append(f"{blockers.no_backend(effective, None).message} Until then every issue waits, blocked "
                   f"({blockers.BACKEND_UNAVAILABLE}).")
    if saved != effective and missing(saved):
        out.append(f"{blockers.no_backend(saved, None).message} It is saved, not in force (RUNNER_MODE "
                   f"forces {effective}): once it is, every issue will wait, blocked "
                   f"({blockers.BACKEND_UNAVAILABLE}).")
    return out


def _state() -> dict[str, Any]:
    saved = settings.persisted_runner_mode()  # read once: the mode in force follows from it
    effective = settings.effective_runner_mode(saved)
    return {"mode": saved, "effective": effective, "envOverride": settings.env_runner_mode(),
            "warnings": _warnings(effective, saved)}


@bp.get("/api/runner-mode")
def get_runner_mode():  # noqa: ANN201
    """The saved and the effective runner mode.
    ---
    get:
      summary: The saved runner mode, the one in force, and the RUNNER_MODE override
      tags: [runner-mode]
      responses:
        200:
          description: The modes
          content:
            application/json:
              schema: RunnerModeSchema
    """
    return jsonify(_state())


@bp.post("/api/runner-mode")
def set_runner_mode():  # noqa: ANN201
    """Save the global runner mode.
    ---
    post:
      summary: Save the global runner mode (default, gha, fly, local, shadow)
      description: >-
        Outside shadow mode, what shadow jobs held is given back: shadow jobs still in flight end
        timed_out / run_not_found, and the issues shadow mode dispatched that still carry their
        trigger are dispatched for real by the next cycle.
      tags: [runner-mode]
      requestBody:
        required: true
        content:
          application/json:
            schema: RunnerModeRequestSchema
      responses:
        200:
          description: Saved and in force
          content:
            application/json:
              schema: RunnerModeSchema
        400:
          description: "Invalid request body; mode must be one of: default, gha, fly, local, shadow"
          content:
            application/json:
              schema: ErrorSchema
        409:
          description: >-
            RUNNER_MODE env var is set; persisted to DB but has no effect at runtime until the env
            var is unset
          content:
            application/json:
              schema: ErrorSchema
    """
    data = schemas.load(schemas.RunnerModeRequestSchema(), read_json(), schemas.RUNNER_MODE_INVALID)
    settings.put(settings.RUNNER_MODE_KEY, data["mode"])
    shadow.leave()  # (out of shadow mode: the issues it dispatched are dispatched for real)
    if settings.env_runner_mode() is not None:
        raise ApiError(409, schemas.RUNNER_MODE_ENV_SET)
    return jsonify(_state())
