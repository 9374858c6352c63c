"""Active sessions (machines, containers) across every runner backend that manages them.

A backend takes part when it declares ``supports_sessions`` and :meth:`is_configured`; secrets
need a configured backend with ``supports_secrets``. With none, the reference's answers apply:
an empty list for ``GET /api/sessions`` and ``503 Fly sessions config not set`` elsewhere.

"Configured" can be a guess: local Docker counts as configured whenever ``DOCKER_HOST`` is set or
the default socket exists, used or not. So a backend whose listing fails answers the reference's
500 only while it is *in use* (:func:`in_use`); otherwise it is left out of the list with a
warning, as if it were not configured, and one idle backend's unreachable engine does not turn
the list of the backend in use (or the empty list) into a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from sqlalchemy import select

from ..errors import AiimplError, NotFound, PluginContractError, ProviderError
from ..extensions import db
from ..orm import Job, iso_z
from ..providers import RunnerBackend
from ..types import ACTIVE_STATUSES, SessionInfo
from . import settings

log = logging.getLogger(__name__)

NOT_CONFIGURED = "Fly sessions config not set"
SESSION_NOT_FOUND = "Session not found"


class SessionsNotConfigured(AiimplError):
    """No configured runner backend manages sessions (or secrets)."""

    def __init__(self) -> None:
        super().__init__(NOT_CONFIGURED)


def _configured(backend: RunnerBackend) -> bool:
    try:
        return bool(backend.is_configured())
    except Exception:  # noqa: BLE001 - a plugin's bug: taken as not configured, and logged
        log.warning("asking whether %s is configured failed", backend.id, exc_info=True)
        return False


def _backends() -> list[RunnerBackend]:
    """The installed backends that could be set up and say they are configured (one whose
    constructor fails is logged and left out: ``aiimpl check`` reports it)."""
    return [b for b in current_app.extensions["aiimpl"].runners() if _configured(b)]


def session_backends() -> list[RunnerBackend]:
    """Configured backends that list and destroy sessions."""
    return [b for b in _backends() if b.supports_sessions]


def secrets_available() -> bool:
    """Whether a configured backend passes secrets into sessions (enables the secrets API)."""
    return any(b.supports_secrets for b in _backends())


def require_secrets() -> None:
    if not secrets_available():
        raise SessionsNotConfigured()




def to_api(info: SessionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "backend": info.backend,
        "state": info.state,
        "jobId": info.job_id,
        "issueKey": info.issue_key,
        "createdAt": iso_z(info.created_at),
        "image": info.image,
        "region": info.region,
        "logUrl": info.log_url,
    }


def _session_list(backend: RunnerBackend, answer: Any) -> list[SessionInfo]:
    """``list_sessions``'s answer, a list of :class:`SessionInfo`; any other answer is the
    backend's broken contract (its listing's failure)."""
    if answer is None or isinstance(answer, (str, bytes, dict)):
        raise PluginContractError(
            f"list_sessions of {backend.id!r} answered {type(answer).__name__}, not a list of SessionInfo")
    sessions = list(answer)
    for session in sessions:
        if not isinstance(session, SessionInfo):
            raise PluginContractError(
                f"list_sessions of {backend.id!r} answered a {type(session).__name__}, not a SessionInfo")
    return sessions


def _wrap(backend: RunnerBackend, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, PluginContractError):
        return ProviderError(exc.message, provider=backend.id)
    # a plugin bug: say where, without echoing data that could hold a secret
    name = getattr(backend, "display_name", None) or backend.id
    return ProviderError(f"{name}: {type(exc).__name__}", provider=backend.id)


def in_use(backend: RunnerBackend) -> bool:
    """Whether ``backend`` runs, or may run, this orchestrator's sessions.

    It does when the runner mode in force selects it (``local`` → local Docker), when under the
    ``default`` or ``shadow`` mode a mapping may name it in ``executionMode``, or while a job it
    started is in flight. Local Docker, which only the ``local`` mode selects, is otherwise idle.
    """
    mode = settings.effective_runner_mode()
    if backend.runner_mode is not None and backend.runner_mode == mode:
        return True
    if mode in ("default", "shadow") and backend.mapping_selectable:
        return True
    in_flight = select(Job.id).where(
        Job.backend == backend.id,
        Job.shadow.is_(False),
        Job.status.in_([s.value for s in ACTIVE_STATUSES]),
    )
    return db.session.scalar(in_flight.limit(1)) is not None


def list_sessions() -> list[dict[str, Any]]:
    """Every active session of every configured session backend (empty when there is none).

    A backend that fails while it is not :func:`in_use` is left out, with a warning.

    :raises ProviderError: when a backend in use fails to list (the API answers 500 with its
        message).
    """
    out: list[dict[str, Any]] = []
    for backend in session_backends():
        try:
            sessions = _session_list(backend, backend.list_sessions())
        except Exception as exc:  # noqa: BLE001 - the 500 row while the backend is in use
            error = _wrap(backend, exc)
            if in_use(backend):
                raise error from None
            log.warning("sessions of %s left out (the backend is not in use): %s", backend.id, error.message)
            continue
        out.extend(to_api(s) for s in sessions)
    return out


def destroy(session_id: str) -> dict[str, Any]:
    """Destroy one session, asking each configured backend in turn whose it is.

    A backend that fails does not keep the others from being asked; when none of them has the
    session, the first failure is the answer (the session may be that backend's), never a 404.

    :raises SessionsNotConfigured: no configured backend manages sessions.
    :raises NotFound: no backend knows the id.
    :raises ProviderError: a backend failed and no other one had the session.
    """
    backends = session_backends()
    if not backends:
        raise SessionsNotConfigured()
    failures: list[tuple[str, ProviderError]] = []
    for backend in backends:
        try:
            destroyed = backend.destroy_session(session_id)
        except NotFound:  # a backend's own "no such session": not its, as False says (500 before)
            continue
        except Exception as exc:  # noqa: BLE001
            failures.append((backend.id, _wrap(backend, exc)))
            continue
        if destroyed:
            _log_failures(session_id, failures)
            return {"id": session_id, "backend": backend.id, "destroyed": True}
    if failures:
        # the first is the answer's error (said by the API or the CLI): the others are logged
        _log_failures(session_id, failures[1:])
        raise failures[0][1]
    raise NotFound(SESSION_NOT_FOUND)


def _log_failures(session_id: str, failures: list[tuple[str, ProviderError]]) -> None:
    for backend_id, error in failures:
        log.warning("destroying session %r: %s failed: %s", session_id, backend_id, error.message)
