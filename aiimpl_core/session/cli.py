"""The ``session`` click group: ``run`` starts the session program.

Defined here, without Flask, so a runner can use ``python -m aiimpl_core.session run`` with only
click, requests and git installed; ``aiimpl session run`` is the same command in the main CLI (and
the ``aiimpl`` script runs this group alone, without loading the main CLI: ``aiimpl_core._entry``).
"""

from __future__ import annotations

import sys

import click

from .. import logs


@click.group("session")
def session_group() -> None:
    """The session program that runs inside every runner."""


@session_group.command("run")
def run_command() -> None:
    """Run one job: clone, setup, agent, push, PR, verification, review, result.

    Configured entirely by AIIMPL_* environment variables the runner backend sets
    (see docs/session.md). Exit code 0: success reported; 1: failure reported;
    2: the configuration is incomplete or the result could not be delivered.
    """
    from . import env as E
    from .runner import main

    logs.configure(logs.from_environ(str(E.LOG_LEVEL.default))[0], stream=sys.stderr)
    sys.exit(main())


@session_group.command("env")
def env_command() -> None:
    """List the environment variables the session program reads."""
    from . import env as E

    for var in (*E.ALL, *E.OPTIONAL):
        default = f" (default: {var.default})" if var.default else ""
        secret = " [secret]" if var.secret else ""
        click.echo(f"{var.name}{secret}: {var.help}{default}")
