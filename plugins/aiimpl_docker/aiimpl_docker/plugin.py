"""Hook implementations of aiimpl-docker: the ``local-docker`` runner backend, and the removal
of a job's container once the job has ended."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiimpl_core import hookimpl

if TYPE_CHECKING:
    from aiimpl_core.types import JobStatus

    from .backend import LocalDockerBackend

#: the clean-ups under way in this process, waited for when it exits (``aiimpl poll --once``, a
#: worker recycled): a daemon thread cut by the exit left the container, with the job's secrets in
#: its environment, to a later poll's sweep
_cleanups: list[tuple[threading.Thread, LocalDockerBackend]] = []
_cleanups_lock = threading.Lock()


@atexit.register
def _wait_for_cleanups() -> None:
    """At exit: the clean-ups under way, for as long as two engine calls take (a listing and a
    removal; one still waiting for a container that holds, in the interactive session modes, is
    left to the sweep then), and the stops they started (one started now is not in the backend's
    own wait at exit, which was registered, or not, before)."""
    import time

    with _cleanups_lock:
        pending = [(t, b) for t, b in _cleanups if t.is_alive()]
    if not pending:
        return
    try:
        budget = 2 * pending[0][1].timeout_seconds
    except Exception:  # noqa: BLE001 - a setting that is not valid: the default's
        budget = 60.0
    deadline = time.monotonic() + budget
    for thread, backend in pending:
        thread.join(max(0.0, deadline - time.monotonic()))
        backend.wait_for_stops()


@hookimpl
def aiimpl_register_runner_backends(register: Callable[..., None]) -> None:
    from .backend import LocalDockerBackend

    register(LocalDockerBackend)


@hookimpl
def aiimpl_job_status_changed(job_id: int, issue_key: str, old: JobStatus | None, new: JobStatus) -> None:
    """A job that ended (by its session's result, usually) no longer needs its container."""
    if not new.terminal:
        return
    from aiimpl_core.errors import ProviderError
    from flask import current_app, has_app_context

    from .backend import LocalDockerBackend

    if not has_app_context():
        return
    facade = current_app.extensions["aiimpl"]
    if LocalDockerBackend.id not in facade.ids("runner"):
        return
    backend = facade.runner(LocalDockerBackend.id)
    if not isinstance(backend, LocalDockerBackend) or not backend.is_configured():
        return

    def clean() -> None:
        try:
            backend.cleanup_job(job_id)
        except ProviderError as exc:  # the poll's sweep removes it later
            backend.log.warning("job %s: removing its container failed: %s", job_id, exc)

    # never in the caller's way: the job's end is often a runner's /runner/result request, and
    # the container may still be finishing (or holding, in the interactive session modes)
    thread = threading.Thread(target=clean, name=f"aiimpl-docker-cleanup-{job_id}", daemon=True)
    with _cleanups_lock:
        _cleanups[:] = [(t, b) for t, b in _cleanups if t.is_alive()]
        _cleanups.append((thread, backend))
    thread.start()
