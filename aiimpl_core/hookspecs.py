"""Hook specifications of the ``aiimpl`` project.

Plugins implement these with :data:`aiimpl_core.hookimpl`; ``hookspec`` stays private to this
module. Every registration hook receives a typed ``register`` callable: the core owns ids,
collisions and type checks, and records which plugin registered what. The event hooks are
notifications: their return values are ignored and their exceptions are logged, never raised.

A spec gains keyword arguments over time, never loses them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from .providers import ModelProvider, RunnerBackend, TicketingProvider
    from .types import JobStatus, Stage

PROJECT = "aiimpl"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def aiimpl_register_ticketing_providers(register: Callable[[type[TicketingProvider]], None]) -> None:
    """Register ticketing provider classes (trackers).

    :param register: call with a :class:`~aiimpl_core.providers.TicketingProvider` subclass.
        Registering an id that another plugin registered is a start-up error naming both.
    """


@hookspec
def aiimpl_register_runner_backends(register: Callable[[type[RunnerBackend]], None]) -> None:
    """Register runner backend classes (where sessions run).

    :param register: call with a :class:`~aiimpl_core.providers.RunnerBackend` subclass.
        Its ``runner_mode`` (if any) must be unique too.
    """


@hookspec
def aiimpl_register_model_providers(register: Callable[[type[ModelProvider]], None]) -> None:
    """Register model provider classes (the AI model service a session uses).

    :param register: call with a :class:`~aiimpl_core.providers.ModelProvider` subclass.
    """


@hookspec
def aiimpl_register_blueprints(register: Callable[..., None]) -> None:
    """Add Flask blueprints to the application.

    :param register: ``register(blueprint, *, url_prefix=None)``. Routes under ``/api/`` require
        the admin session unless their view is decorated with
        :func:`aiimpl_core.auth.public_endpoint` (for example a webhook with its own signature).
    """


@hookspec
def aiimpl_register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``aiimpl`` command line.

    :param cli: the root group; call ``cli.add_command(...)``.
    """


@hookspec
def aiimpl_job_status_changed(
    job_id: int, issue_key: str, old: JobStatus | None, new: JobStatus, backend: str | None
) -> None:
    """Observe a job status transition (after it is committed).

    :param job_id: the job.
    :param issue_key: the tracker issue it works on.
    :param old: the previous status, ``None`` when the job was just created.
    :param new: the new status.
    :param backend: the id of the runner backend the job runs on (its ``execution mode``), ``None``
        for a job that never got one. (A plugin's implementation may leave out the parameters it
        does not use.)
    """


@hookspec
def aiimpl_issue_stage_changed(issue_key: str, old: Stage | None, new: Stage) -> None:
    """Observe an issue moving to a lifecycle stage (after it is committed).

    :param issue_key: the tracker issue.
    :param old: the previous stage, ``None`` when unknown.
    :param new: the new stage.
    """
