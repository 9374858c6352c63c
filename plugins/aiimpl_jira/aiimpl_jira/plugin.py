"""Hook implementations of aiimpl-jira: the ``jira`` ticketing provider and the ``/api/jira`` blueprint."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiimpl_core import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def aiimpl_register_ticketing_providers(register: Callable[..., None]) -> None:
    """Register the ``jira`` ticketing provider."""
    from .provider import JiraProvider

    register(JiraProvider)


@hookimpl
def aiimpl_register_blueprints(register: Callable[..., None]) -> None:
    """Mount the ``/api/jira`` blueprint (admin configuration helpers and the webhook)."""
    from .api import bp

    register(bp, url_prefix="/api/jira")


@hookimpl
def aiimpl_register_commands(cli: click.Group) -> None:
    """Add ``aiimpl jira`` (``aiimpl jira check``)."""
    from .cli import jira_group

    cli.add_command(jira_group)
