"""``POST /api/auth``: the admin access code exchanged for a session token.

Public (it is how a session starts). Wrong codes from one client are counted in the database and
space that client's further attempts out (see :mod:`aiimpl_core.auth.admin`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from flask import Blueprint, jsonify, request

from ..auth import admin, public_endpoint
from ..orm import iso_z
from ..schemas import admin as schemas
from ..schemas.common import ApiError, read_json

bp = Blueprint("admin_auth", __name__)

INVALID_CODE = "Invalid access code"
#: a body that parsed but holds no code the form could send: named, not the reference's "Invalid
#: request body" (whose condition is a body that is not JSON)
_CODE_RULES = (("code", "code must be a string of at most 1024 characters"),)


def _client() -> str:
    # behind reverse proxies, AIIMPL_PROXY_HOPS makes this the real client (werkzeug's ProxyFix)
    return request.remote_addr or "unknown"


@bp.post("/api/auth")
@public_endpoint
def auth():  # noqa: ANN201
    """Exchange the admin access code for a session token.
    ---
    post:
      summary: Sign in with the admin access code
      description: >-
        Returns a signed session token to send as `Authorization: Bearer <token>` to every other
        admin endpoint. After 5 wrong codes within 10 minutes, the same client's attempts (an IPv6
        client counts as its /64, as one host is given one) must be
        spaced progressively further apart (0.25 s, doubled by each further wrong code, up to 4 s);
        one that comes sooner is refused with 403 and a `Retry-After` header without its code being
        checked. A right code resets the count. While `AIIMPL_ADMIN_ACCESS_CODE` is unset every
        code is refused.
      tags: [admin]
      security: []
      requestBody:
        required: true
        content:
          application/json:
            schema: AuthRequestSchema
      responses:
        200:
          description: The session token and its expiry
          content:
            application/json:
              schema: AuthResponseSchema
        400:
          description: >-
            Invalid request body (not JSON, or not an object); beyond the reference, `code must be a
            string of at most 1024 characters` (also when it is missing or null)
          content:
            application/json:
              schema: ErrorSchema
        403:
          description: Invalid access code (or an attempt too soon after wrong codes, with `Retry-After`)
          headers:
            Retry-After:
              description: Seconds to wait, when the attempt came too soon after wrong codes
              schema:
                type: integer
          content:
            application/json:
              schema: ErrorSchema
    """
    data = schemas.load_ordered(schemas.AuthRequestSchema(), read_json(), _CODE_RULES)
    client = _client()
    wait = admin.admit(client)  # counted as a wrong code until it proves right
    if wait:
        refused = jsonify(error=INVALID_CODE)
        refused.headers["Retry-After"] = str(math.ceil(wait))
        return refused, 403
    if not admin.code_matches(data["code"]):
        raise ApiError(403, INVALID_CODE)
    admin.reset_failures(client)
    now = datetime.now(UTC)
    expires, token = admin.session_expiry(now), admin.issue_session(now)
    return jsonify(token=token, expiresAt=iso_z(expires))


@bp.delete("/api/auth")
def sign_out():  # noqa: ANN201
    """End the session whose token the request carries.
    ---
    delete:
      summary: Sign out
      description: >-
        Ends the session of the bearer token sent: from then on every worker and host of the
        installation answers it 401 Unauthorized, as it would once expired. Other sessions go on;
        changing `AIIMPL_ADMIN_ACCESS_CODE` ends them all.
      tags: [admin]
      responses:
        200:
          description: The session is ended
          content:
            application/json:
              schema: SignOutResponseSchema
    """
    admin.end_session(admin.bearer(request.headers.get("Authorization")))
    return jsonify(ok=True)
