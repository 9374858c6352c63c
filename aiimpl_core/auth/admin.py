"""Admin sessions: the access code exchanged for a signed, expiring bearer token (itsdangerous)."""
from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

from flask import Response, current_app, jsonify, request
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


def _code_fingerprint() -> str:
    """Ties sessions to the access code in force: changing or unsetting the code ends them.

    Sessions minted in-process by the CLI while no code is set carry the empty fingerprint.
    """
    code = current_app.config.get("AIIMPL_ADMIN_ACCESS_CODE")
    if not code:
        return ""
    key = str(current_app.config["AIIMPL_SECRET_KEY"]).encode()
    return hmac.new(key, b"admin-code:" + str(code).encode(), "sha256").hexdigest()[:32]


def issue_session() -> str:
    return _serializer().dumps({"admin": True, "code": _code_fingerprint()})


def session_valid(token: str | None) -> bool:
    if not token:
        return False
    try:
        data = _serializer().loads(token, max_age=int(current_app.config["AIIMPL_ADMIN_SESSION_SECONDS"]))
    except (BadSignature, SignatureExpired):
        return False
    if not isinstance(data, dict) or data.get("admin") is not True or not isinstance(data.get("code"), str):
        return False
    return hmac.compare_digest(data["code"], _code_fingerprint())


def shared_secret_refusal(setting: str, not_configured: str) -> tuple[Response, int] | None:
    """The answer to a request for an endpoint opened by a shared bearer secret (the setting
    ``setting``): 501 ``not_configured`` while it is unset, 401 ``unauthorized`` when the request's
    bearer is not it (compared in constant time); ``None`` when the request may go on."""
    from .signatures import secret_matches

    secret = current_app.config.get(setting)
    if not secret:
        return jsonify(error=not_configured), 501
    if not secret_matches(str(secret), bearer(request.headers.get("Authorization"))):
        return jsonify(error="unauthorized"), 401
    return None


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


# -- slowing down repeated wrong codes -------------------------------------------------------------
# Counted per client in the database (``orm.AuthFailure``), so every worker and host of one
# installation sees the same count. Every attempt is counted *before* its code is checked, under
# the client's lock, as a wrong code until a right one clears the count: attempts sent at once each
# get a count of their own, so they cannot all slip under the threshold together. Past the
# threshold, an attempt that comes before its time is refused at once without its code being
# checked (a quick answer then tells nothing about the code), and nothing waits on the server: a
# throttled client holds no thread and no database connection.

#: wrong codes tolerated within the window before further attempts are spaced out
THROTTLE_AFTER = 5
#: seconds over which wrong codes are counted
THROTTLE_WINDOW = 600
#: the spacing after the threshold is reached, doubled by each further wrong code, capped
THROTTLE_BASE_DELAY = 0.25
THROTTLE_MAX_DELAY = 4.0


def clock() -> datetime:
    """Now (replaced by tests to step time)."""
    return datetime.now(UTC)


def spacing(failures: int) -> float:
    """Seconds the next attempt must keep from the last one after ``failures`` wrong codes."""
    excess = failures - THROTTLE_AFTER
    if excess < 0:
        return 0.0
    return min(THROTTLE_MAX_DELAY, THROTTLE_BASE_DELAY * 2 ** min(excess, 16))


def admit(client: str, now: datetime | None = None) -> float:
    """Count an attempt of ``client`` (a wrong code until :func:`reset_failures`), or refuse it.

    :returns: ``0`` when the attempt is admitted and counted; otherwise the seconds the client
        must still wait, and the attempt is not counted.
    """
    from ..database import advisory_lock, serialized
    from ..extensions import db
    from ..orm import AuthFailure

    now = now or clock()
    key = client[:128]
    with serialized() as session:
        advisory_lock(f"auth-failure:{key}", session)
        row = session.get(AuthFailure, key, populate_existing=True)
        if row is None:
            row = AuthFailure(client=key, failures=0, window_start=now, last_failure_at=now)
            session.add(row)
        elif (now - row.window_start).total_seconds() > THROTTLE_WINDOW:
            row.failures, row.window_start = 0, now
        wait = spacing(row.failures) - (now - row.last_failure_at).total_seconds()
        if wait > 0:
            return wait
        row.failures += 1
        row.last_failure_at = now
    db.session.expire_all()
    return 0.0


def reset_failures(client: str) -> None:
    """A right code clears the client's count."""
    from sqlalchemy import delete

    from ..extensions import db
    from ..orm import AuthFailure

    db.session.execute(delete(AuthFailure).where(AuthFailure.client == client[:128]))
    db.session.commit()


def session_expiry(now: datetime | None = None) -> datetime:
    """When a session issued now stops being accepted."""
    now = now or datetime.now(UTC)
    return now + timedelta(seconds=int(current_app.config["AIIMPL_ADMIN_SESSION_SECONDS"]))
