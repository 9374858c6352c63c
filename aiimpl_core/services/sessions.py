"""Active sessions (machines, containers) across every runner backend that manages them.

A backend takes part when it declares ``supports_sessions`` and :meth:`is_configured`; secrets
need a configured backend with ``supports_secrets``. With none, the reference's answers apply:
an empty list for ``GET /api/sessions`` and ``503 Fly sessions config not set`` elsewhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app

from ..errors import AiimplError, NotFound, ProviderError
from ..providers import RunnerBackend
from ..types import SessionInfo

NOT_CONFIGURED = "Fly sessions config not set"
SESSION_NOT_FOUND = "Session not found"


class SessionsNotConfigured(AiimplError):
    """No configured runner backend manages sessions (or secrets)."""

    def __init__(self) -> None:
        super().__init__(NOT_CONFIGURED)


def _backends() -> list[RunnerBackend]:
    return current_app.extensions["aiimpl"].runners()


def session_backends() -> list[RunnerBackend]:
    """Configured backends that list and destroy sessions."""
    return [b for b in _backends() if b.supports_sessions and b.is_configured()]


def secrets_available() -> bool:
    """Whether a configured backend passes secrets into sessions (enables the secrets API)."""
    return any(b.supports_secrets and b.is_configured() for b in _backends())


def require_secrets() -> None:
    if not secrets_available():
        raise SessionsNotConfigured()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def to_api(info: SessionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "backend": info.backend,
        "state": info.state,
        "jobId": info.job_id,
        "issueKey": info.issue_key,
        "createdAt": _iso(info.created_at),
        "image": info.image,
        "region": info.region,
        "logUrl": info.log_url,
    }


def _wrap(backend: RunnerBackend, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    # a plugin bug: say where, without echoing data that could hold a secret
    return ProviderError(f"{backend.display_name}: {type(exc).__name__}", provider=backend.id)


def list_sessions() -> list[dict[str, Any]]:
    """Every active session of every configured session backend (empty when there is none).

    :raises ProviderError: when a backend fails to list (the API answers 500 with its message).
    """
    out: list[dict[str, Any]] = []
    for backend in session_backends():
        try:
            sessions = backend.list_sessions()
        except Exception as exc:  # noqa: BLE001 - every failure is the 500 row of the reference
            raise _wrap(backend, exc) from None
        out.extend(to_api(s) for s in sessions)
    return out


def destroy(session_id: str) -> dict[str, Any]:
    """Destroy one session, asking each configured backend in turn whose it is.

    :raises SessionsNotConfigured: no configured backend manages sessions.
    :raises NotFound: no backend knows the id.
    :raises ProviderError: the backend failed.
    """
    backends = session_backends()
    if not backends:
        raise SessionsNotConfigured()
    for backend in backends:
        try:
            destroyed = backend.destroy_session(session_id)
        except Exception as exc:  # noqa: BLE001
            raise _wrap(backend, exc) from None
        if destroyed:
            return {"id": session_id, "backend": backend.id, "destroyed": True}
    raise NotFound(SESSION_NOT_FOUND)
