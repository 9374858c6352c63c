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
def aiimpl_job_status_changed(job_id: int, new: JobStatus, backend: str | None) -> None:
    """A job of this backend that ended (by its session's result, usually) no longer needs its
    container. (A job of another backend has none: the engine is not asked.)"""
    if not new.terminal:
        return
    from flask import current_app, has_app_context

    from .backend import LocalDockerBackend

    if backend not in (None, LocalDockerBackend.id) or not has_app_context():
        return
    facade = current_app.extensions["aiimpl"]
    if LocalDockerBackend.id not in facade.ids("runner"):
        return
    runner = facade.runner(LocalDockerBackend.id)
    if not isinstance(runner, LocalDockerBackend) or not runner.is_configured():
        return
    runner.cleanup_in_background(job_id)
