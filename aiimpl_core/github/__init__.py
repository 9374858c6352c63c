"""GitHub in the core: App authentication, repository tokens and the REST client.

:func:`repository_token` is what ``POST /api/token`` hands a session: a short-lived installation
token limited to the job's repository (or the personal token in personal-token mode). Runner
backends build a :class:`GitHub` from their provider context's config instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from flask import current_app

from .client import (
    API_VERSION,
    ORCHESTRATOR_PERMISSIONS,
    SESSION_PERMISSIONS,
    DispatchUnanswered,
    GitHub,
    ListingIncomplete,
    Repo,
    RepoFile,
    github_message,
)


def from_app() -> GitHub:
    """A :class:`GitHub` for the current Flask app's configuration."""
    facade = current_app.extensions.get("aiimpl")
    context = getattr(facade, "context", None)
    return GitHub.from_config(current_app.config, http=getattr(context, "http", None))


def repository_token(
    owner: str, repo: str, permissions: Mapping[str, str] | None = None
) -> tuple[str, datetime]:
    """A GitHub token for one repository and when it expires; needs a Flask app context.

    :param permissions: what the token may do (default: what a session needs).
    :raises ProviderError: when GitHub is not configured, refuses, or cannot be reached.
    """
    return from_app().repository_token(owner, repo, permissions)


def forget_refused_token(owner: str, repo: str, digest: str) -> bool:
    """Drop this process's cached session token for ``owner/repo`` if its SHA-256 is ``digest``
    (a session says GitHub refused it: revoked before its expiry); needs a Flask app context."""
    return from_app().forget_refused_token(owner, repo, digest)


__all__ = [
    "API_VERSION",
    "ORCHESTRATOR_PERMISSIONS",
    "SESSION_PERMISSIONS",
    "DispatchUnanswered",
    "GitHub",
    "ListingIncomplete",
    "Repo",
    "RepoFile",
    "forget_refused_token",
    "from_app",
    "github_message",
    "repository_token",
]
