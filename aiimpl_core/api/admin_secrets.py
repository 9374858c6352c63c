"""Team and global secrets: ``/api/mappings/<teamKey>/secrets[/<name>]`` and ``/api/global-secrets[/<name>]``.

Secrets are passed privately into sessions, so these endpoints need a configured runner backend
that supports secrets (else the reference's ``503 Fly sessions config not set``). Answers carry
names and times only, never a value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy.exc import IntegrityError

from ..errors import ConfigError, NotFound, ProviderError, ValidationError
from ..extensions import db
from ..schemas.common import INVALID_BODY, NOT_JSON, ApiError, read_json
from ..services import mappings as mapping_service
from ..services import secrets as service
from ..services import sessions as sessions_service

bp = Blueprint("admin_secrets", __name__)
log = logging.getLogger(__name__)

TEAM_NOT_FOUND = "Team not found"
MAX_NAME = 255


def _scope(team_key: str | None) -> str:
    """Check the preconditions in the reference's order and return the secrets' scope."""
    if not sessions_service.secrets_available():
        raise ApiError(503, sessions_service.NOT_CONFIGURED)
    if team_key is None:
        return service.GLOBAL
    if mapping_service.get_row(team_key) is None:
        raise ApiError(404, TEAM_NOT_FOUND)
    return team_key


def _run(operation: Callable[[], Any]) -> Any:
    """Run a secret operation; its failures are the reference's 500 row, without the value."""
    try:
        return operation()
    except (ValidationError, NotFound, ApiError):
        raise
    except (ProviderError, ConfigError) as exc:
        db.session.rollback()
        raise ApiError(500, exc.message) from None
    except Exception as exc:  # noqa: BLE001 - a database message could quote the value: name the type only
        db.session.rollback()
        log.error("secret operation failed: %s", type(exc).__name__)
        raise ApiError(500, f"Secret operation failed ({type(exc).__name__})") from None


def _store(scope: str, name: str, value: str) -> Any:
    # two requests creating one name at once: the unique (scope, name) refuses the second insert,
    # which then replaces the value the first one stored
    try:
        return service.set_secret(scope, name, value)
    except IntegrityError:
        db.session.rollback()
        return service.set_secret(scope, name, value)


def _list(team_key: str | None) -> Any:
    scope = _scope(team_key)
    return jsonify(_run(lambda: service.list_secrets(scope)))


def _set(team_key: str | None) -> Any:
    scope = _scope(team_key)
    data = read_json()
    if data is NOT_JSON or not isinstance(data, dict):
        raise ApiError(400, INVALID_BODY)
    try:
        name, value = service.validate(data.get("name"), data.get("value"), scope=scope)
    except ValidationError as exc:
        raise ApiError(400, exc.message) from None
    if len(name) > MAX_NAME:
        raise ApiError(400, f"name must be at most {MAX_NAME} characters")
    try:
        return jsonify(_run(lambda: _store(scope, name, value)))
    except NotFound as exc:  # the team's mapping was deleted since the request began
        raise ApiError(404, exc.message) from None


def _delete(team_key: str | None, name: str) -> Any:
    scope = _scope(team_key)
    try:
        _run(lambda: service.delete_secret(scope, name))
    except NotFound as exc:
        raise ApiError(404, exc.message) from None
    return jsonify(deleted=True, name=name)


@bp.get("/api/mappings/<teamKey>/secrets")
def list_team_secrets(teamKey: str):  # noqa: ANN201, N803 - the reference's parameter name
    """List a team's secrets.
    ---
    get:
      summary: A team's secrets (names and times, never values)
      tags: [secrets]
      responses:
        200:
          description: The secrets
          content:
            application/json:
              schema:
                type: array
                items: SecretSchema
        404:
          description: Team not found
          content:
            application/json:
              schema: ErrorSchema
        500:
          description: (underlying error message) The secret operation failed
          content:
            application/json:
              schema: ErrorSchema
        503:
          description: Fly sessions config not set
          content:
            application/json:
              schema: ErrorSchema
    """
    return _list(teamKey)


@bp.post("/api/mappings/<teamKey>/secrets")
def set_team_secret(teamKey: str):  # noqa: ANN201, N803
    """Set a team secret.
    ---
    post:
      summary: Set a team secret (created or replaced)
      tags: [secrets]
      requestBody:
        required: true
        content:
          application/json:
            schema: SecretInputSchema
      responses:
        200:
          description: The secret's name and times
          content:
            application/json:
              schema: SecretSchema
        400:
          description: >-
            Invalid request body; name and value are required (missing, null, empty or blank);
            name must be a string, value must be a string; name must contain only letters,
            digits, and underscores; name must be at most 255 characters; value must be at most
            65,536 characters
          content:
            application/json:
              schema: ErrorSchema
        404:
          description: Team not found
          content:
            application/json:
              schema: ErrorSchema
        500:
          description: (underlying error message) The secret operation failed
          content:
            application/json:
              schema: ErrorSchema
        503:
          description: Fly sessions config not set
          content:
            application/json:
              schema: ErrorSchema
    """
    return _set(teamKey)


@bp.delete("/api/mappings/<teamKey>/secrets/<name>")
def delete_team_secret(teamKey: str, name: str):  # noqa: ANN201, N803
    """Delete a team secret.
    ---
    delete:
      summary: Delete a team secret
      tags: [secrets]
      responses:
        200:
          description: Deleted
          content:
            application/json:
              schema: DeletedSchema
        404:
          description: Team not found; Secret not found
          content:
            application/json:
              schema: ErrorSchema
        500:
          description: (underlying error message) The secret operation failed
          content:
            application/json:
              schema: ErrorSchema
        503:
          description: Fly sessions config not set
          content:
            application/json:
              schema: ErrorSchema
    """
    return _delete(teamKey, name)


@bp.get("/api/global-secrets")
def list_global_secrets():  # noqa: ANN201
    """List global secrets.
    ---
    get:
      summary: Global secrets (names and times, never values)
      tags: [secrets]
      responses:
        200:
          description: The secrets
          content:
            application/json:
              schema:
                type: array
                items: SecretSchema
        500:
          description: (underlying error message) The secret operation failed
          content:
            application/json:
              schema: ErrorSchema
        503:
          description: Fly sessions config not set
          content:
            application/json:
              schema: ErrorSchema
    """
    return _list(None)


@bp.post("/api/global-secrets")
def set_global_secret():  # noqa: ANN201
    """Set a global secret.
    ---
    post:
      summary: Set a global secret (created or replaced)
      tags: [secrets]
      requestBody:
        required: true
        content:
          application/json:
            schema: SecretInputSchema
      responses:
        200:
          description: The secret's name and times
          content:
            application/json:
              schema: SecretSchema
        400:
          description: >-
            Invalid request body; name and value are required (missing, null, empty or blank);
            name must be a string, value must be a string; name must contain only letters,
            digits, and underscores; Secret name must not start with a team key prefix (...); name
            must be at most 255 characters; value must be at most 65,536 characters
          content:
            application/json:
              schema: ErrorSchema
        500:
          description: (underlying error message) The secret operation failed
          content:
            application/json:
              schema: ErrorSchema
        503:
          description: Fly sessions config not set
          content:
            application/json:
              schema: ErrorSchema
    """
    return _set(None)


@bp.delete("/api/global-secrets/<name>")
def delete_global_secret(name: str):  # noqa: ANN201
    """Delete a global secret.
    ---
    delete:
      summary: Delete a global secret
      tags: [secrets]
      responses:
        200:
          description: Deleted
          content:
            application/json:
              schema: DeletedSchema
        404:
          description: Secret not found
          content:
            application/json:
              schema: ErrorSchema
        500:
          description: (underlying error message) The secret operation failed
          content:
            application/json:
              schema: ErrorSchema
        503:
          description: Fly sessions config not set
          content:
            application/json:
              schema: ErrorSchema
    """
    return _delete(None, name)
