"""CLI: the ``aiimpl session`` group (the session program that runs inside runners)."""

from __future__ import annotations

from ..session.cli import session_group
from . import cli

cli.add_command(session_group)
