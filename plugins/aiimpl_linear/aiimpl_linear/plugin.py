"""Hook implementations of aiimpl-linear."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiimpl_core import hookimpl

from .provider import LinearProvider
from .webhook import make_blueprint

if TYPE_CHECKING:
    import click


@hookimpl
def aiimpl_register_ticketing_providers(register: Callable[[type[LinearProvider]], None]) -> None:
    """Register the ``linear`` ticketing provider."""
    register(LinearProvider)


@hookimpl
def aiimpl_register_blueprints(register: Callable[..., Any]) -> None:
    """Add ``POST /api/linear/webhook``."""
    register(make_blueprint())


@hookimpl
def aiimpl_register_commands(cli: click.Group) -> None:
    """Add ``aiimpl linear check``."""
    from .cli import linear_group

    cli.add_command(linear_group)
