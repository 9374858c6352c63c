"""Admin sessions: the access code exchanged for a signed, expiring bearer token (itsdangerous)."""
from __future__ import annotations

import hmac

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "aiimpl-admin-session"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["AIIMPL_SECRET_KEY"], salt=SALT)


def code_matches(code: str) -> bool:
    """Constant-time comparison with ``AIIMPL_ADMIN_ACCESS_CODE`` (never matches while unset)."""
    expected = current_app.config.get("AIIMPL_ADMIN_ACCESS_CODE")
    if not expected:
        return False
    return hmac.compare_digest(code.encode(), str(expected).encode())


def issue_session() -> str:
    return _serializer().dumps({"admin": True})


def session_valid(token: str | None) -> bool:
    if not token:
        return False
    try:
        data = _serializer().loads(token, max_age=int(current_app.config["AIIMPL_ADMIN_SESSION_SECONDS"]))
    except (BadSignature, SignatureExpired):
        return False
    return isinstance(data, dict) and data.get("admin") is True


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token
