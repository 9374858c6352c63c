"""Authentication: run tokens (JWT), job nonces, admin sessions, shared-secret signatures."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., object])

PUBLIC_ATTR = "_aiimpl_public"
#: the challenge a 401 carries on the endpoints a bearer token opens (RFC 9110 wants one on every
#: 401; RFC 6750 names the scheme). The webhooks' 401 (a signature that does not verify) has none:
#: no HTTP authentication scheme answers it.
BEARER_CHALLENGE = 'Bearer realm="aiimpl"'


def bearer_refused(error: str) -> tuple[Any, int]:
    """The 401 ``{"error": error}`` of an endpoint opened by a bearer token, with its challenge."""
    from flask import jsonify

    resp = jsonify(error=error)
    resp.headers["WWW-Authenticate"] = BEARER_CHALLENGE
    return resp, 401


def public_endpoint(view: F) -> F:
    """Mark a view under ``/api/`` as not needing the admin session (it authenticates itself)."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def is_public(view: object) -> bool:
    return bool(getattr(view, PUBLIC_ATTR, False))


def needs_admin_session(path: str, view: object) -> bool:
    """Whether a route needs the admin session: every ``/api/`` view not marked public."""
    return path.startswith("/api/") and not is_public(view)
