"""Admin sessions: the access code exchanged for a signed, expiring bearer token (itsdangerous)."""
from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, current_app, jsonify, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from . import bearer_refused
from .tokens import CLOCK_SKEW_SECONDS

SALT = "aiimpl-admin-session"
#: a session's id as :func:`issue_session` makes it (32 hex digits), or as close
_SESSION_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")


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


def issue_session(now: datetime | None = None) -> str:
    """A new session's bearer token: signed, stamped with its own id (to end it by signing out)
    and with its expiry (a lifetime raised later does not revive it)."""
    expires = session_expiry(now)
    payload = {"admin": True, "code": _code_fingerprint(), "sid": secrets.token_hex(16)}
    return _serializer().dumps({**payload, "exp": int(expires.timestamp())})


def _session(token: str | None) -> dict[str, Any] | None:
    """The payload of a token that is signed, unexpired and of the access code in force (not yet
    checked against the ended sessions), or ``None``."""
    if not token:
        return None
    try:
        data, signed_at = _serializer().loads(token, return_timestamp=True)
    except BadSignature:
        return None
    # the age in whole seconds, as itsdangerous's max_age counts it; but a session signed a moment
    # "in the future", by another host whose clock is a little ahead of this one's, is no forgery
    # (itsdangerous's max_age would refuse it until this clock caught up)
    age = int(time.time()) - int(signed_at.timestamp())
    if not -CLOCK_SKEW_SECONDS <= age <= int(current_app.config["AIIMPL_ADMIN_SESSION_SECONDS"]):
        return None
    if not isinstance(data, dict) or data.get("admin") is not True:
        return None
    code, sid, exp = data.get("code"), data.get("sid"), data.get("exp")
    # (a session id as issued, hex: one a database column cannot hold, a NUL, never reaches a query)
    if not isinstance(code, str) or not isinstance(sid, str) or not _SESSION_ID.fullmatch(sid):
        return None
    if not isinstance(exp, int) or isinstance(exp, bool) or exp <= time.time():
        return None
    try:  # (an expiry a datetime cannot hold could not be kept with its sign-out)
        datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return data if hmac.compare_digest(code, _code_fingerprint()) else None


def session_valid(token: str | None) -> bool:
    """Whether ``token`` opens the admin API: signed, unexpired, of the access code in force, and
    not signed out."""
    from ..extensions import db
    from ..orm import EndedAdminSession

    data = _session(token)
    if data is None:
        return False
    ended = select(EndedAdminSession.session_id).where(EndedAdminSession.session_id == data["sid"])
    valid = db.session.scalar(ended) is None
    # the check's read ends here: the view begins a transaction of its own (on SQLite, a view that
    # went on to write in this one could not take the write lock once another writer had committed)
    db.session.commit()
    return valid


def end_session(token: str | None) -> bool:
    """Sign the session of ``token`` out for every worker and host; whether it was open."""
    from ..database import serialized, upsert
    from ..orm import EndedAdminSession

    data = _session(token)
    if data is None:
        return False
    expires = datetime.fromtimestamp(data["exp"], UTC)
    # (a sign-out sent twice at once ends the session once: the second changes nothing)
    with serialized(writes_first=True) as session:
        ended = session.execute(
            upsert(EndedAdminSession.__table__).on_conflict_do_nothing(index_elements=["session_id"]),
            {"session_id": data["sid"], "expires_at": expires},
        ).rowcount
    return bool(ended)


def shared_secret_refusal(setting: str, not_configured: str) -> tuple[Response, int] | None:
    """The answer to a request for an endpoint opened by a shared bearer secret (the setting
    ``setting``): 501 ``not_configured`` while it is unset, 401 ``unauthorized`` when the request's
    bearer is not it (compared in constant time); ``None`` when the request may go on."""
    from .signatures import secret_matches

    secret = current_app.config.get(setting)
    if not secret:
        return jsonify(error=not_configured), 501
    if not secret_matches(str(secret), bearer(request.headers.get("Authorization"))):
        return bearer_refused("unauthorized")
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
# Counted per client (:func:`client_key`) in the database (``orm.AuthFailure``), so every worker
# and host of one installation sees the same count. Every attempt is counted *before* its code is
# checked, under the client's lock, as a wrong code until a right one clears the count: attempts
# sent at once each get a count of their own, so they cannot all slip under the threshold
# together. Past the threshold, an attempt that comes before its time is refused at once without
# its code being checked (a quick answer then tells nothing about the code), and nothing waits on
# the server: a throttled client holds no thread and no database connection.

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


#: an IPv6 client is counted by its /64: a single host is usually given a whole /64, and would
#: otherwise pick a fresh address for every guess
IPV6_CLIENT_PREFIX = 64


def client_key(client: str) -> str:
    """The key under which ``client``'s wrong codes are counted: an IPv4 address as written, an
    IPv6 address as its /64 network (an IPv4-mapped one as its IPv4 address), anything else as given
    (cut to the column's size)."""
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return client[:128]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def admit(client: str, now: datetime | None = None) -> float:
    """Count an attempt of ``client`` (a wrong code until :func:`reset_failures`), or refuse it.

    :returns: ``0`` when the attempt is admitted and counted; otherwise the seconds the client
        must still wait, and the attempt is not counted.
    """
    from ..database import advisory_lock, serialized
    from ..extensions import db
    from ..orm import AuthFailure

    now = now or clock()
    key = client_key(client)
    with serialized() as session:
        advisory_lock(f"auth-failure:{key}", session)
        row = session.get(AuthFailure, key, populate_existing=True)
        if row is None:
            row = AuthFailure(client=key, failures=0, window_start=now, last_failure_at=now)
            session.add(row)
        elif (now - row.window_start).total_seconds() > THROTTLE_WINDOW:
            row.failures, row.window_start = 0, now
        # (``now`` was read before the lock: an attempt that got it first may have counted a later
        # moment, which is no time at all since it, not a negative one that adds to the spacing)
        since = max(0.0, (now - row.last_failure_at).total_seconds())
        wait = spacing(row.failures) - since
        if wait > 0:
            return wait
        row.failures += 1
        row.last_failure_at = max(now, row.last_failure_at)
    db.session.expire_all()
    return 0.0


def reset_failures(client: str) -> None:
    """A right code clears the client's count."""
    from sqlalchemy import delete

    from ..database import advisory_lock, serialized
    from ..orm import AuthFailure

    key = client_key(client)
    # under admit's lock: an admit of the same client waiting on it has read the row, and would
    # update one that is gone (a 500), leaving its count behind
    with serialized(writes_first=True) as session:
        advisory_lock(f"auth-failure:{key}", session)
        session.execute(delete(AuthFailure).where(AuthFailure.client == key))


def session_expiry(now: datetime | None = None) -> datetime:
    """When a session issued now stops being accepted."""
    now = now or datetime.now(UTC)
    return now + timedelta(seconds=int(current_app.config["AIIMPL_ADMIN_SESSION_SECONDS"]))
