"""Authentication: run tokens (JWT), job nonces, admin sessions, shared-secret signatures."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

PUBLIC_ATTR = "_aiimpl_public"


def public_endpoint(view: F) -> F:
    """Mark a view under ``/api/`` as not needing the admin session (it authenticates itself)."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def is_public(view: object) -> bool:
    return bool(getattr(view, PUBLIC_ATTR, False))


def needs_admin_session(path: str, view: object) -> bool:
    """Whether a route needs the admin session: every ``/api/`` view not marked public."""
    return path.startswith("/api/") and not is_public(view)
