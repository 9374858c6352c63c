"""The run-token decorator of the ``/runner/*`` endpoints.

A runner calls back with ``Authorization: Bearer <run token>``; :func:`run_token_required` checks
the token for one audience and hands the view its :class:`~aiimpl_core.auth.tokens.RunClaims`.
Refusals are the reference's slugs (``missing_bearer``, ``bad_signature``, ``expired``,
``malformed``, ``wrong_audience``) with status 401.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request

from ..config import secret_keys
from . import bearer_refused, tokens
from .admin import bearer

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute naming the audience a view demands (the OpenAPI generator reads it).
AUDIENCE_ATTR = "_aiimpl_run_token_audience"


def run_token_required(audience: str) -> Callable[[F], F]:
    """Authenticate a run token for ``audience``; call the view with ``claims=RunClaims``."""
    if audience not in tokens.AUDIENCES:
        raise ValueError(f"unknown run-token audience {audience!r}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = bearer(request.headers.get("Authorization"))
            if token is None:
                return bearer_refused("missing_bearer")
            try:
                claims = tokens.verify_run_token(secret_keys(current_app.config), token, audience)
            except tokens.TokenError as exc:
                return bearer_refused(exc.slug)
            return view(*args, claims=claims, **kwargs)

        setattr(wrapper, AUDIENCE_ATTR, audience)
        return wrapper  # type: ignore[return-value]

    return decorate
