"""Hook implementations of aiimpl-docker: the ``local-docker`` runner backend, and the removal
of a job's container once the job has ended."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiimpl_core import hookimpl

if TYPE_CHECKING:
    from aiimpl_core.types import JobStatus


@hookimpl
def aiimpl_register_runner_backends(register: Callable[..., None]) -> None:
    from .backend import LocalDockerBackend

    register(LocalDockerBackend)


@hookimpl
def aiimpl_job_status_changed(job_id: int, issue_key: str, old: JobStatus | None, new: JobStatus) -> None:
    """A job that ended (by its session's result, usually) no longer needs its container."""
    if not new.terminal:
        return
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
    backend.cleanup_in_background(job_id)
