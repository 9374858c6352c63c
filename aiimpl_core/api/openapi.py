"""``GET /api/openapi.json``: the OpenAPI 3 description of this orchestrator's HTTP API (public)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from ..auth import public_endpoint
from ..openapi import get_spec

bp = Blueprint("openapi", __name__)


@bp.get("/api/openapi.json")
@public_endpoint
def openapi_json():  # noqa: ANN201
    """The OpenAPI description of the HTTP API.
    ---
    get:
      summary: This document (OpenAPI 3, generated from the views and their schemas)
      tags: [meta]
      security: []
      responses:
        200:
          description: The OpenAPI document
          content:
            application/json:
              schema:
                type: object
    """
    return jsonify(get_spec(current_app._get_current_object()))  # type: ignore[attr-defined]
