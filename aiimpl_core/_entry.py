"""The ``aiimpl`` script's entry point, kept apart from :mod:`aiimpl_core.cli` so that an interrupt
while the command line's modules load (Flask, click, SQLAlchemy: most of a second) ends as one
during a command does, with ``Aborted.`` and exit status 130, not a traceback of the import.

``aiimpl session …``, which every runner starts, runs the session program's own click group
(:mod:`aiimpl_core.session.cli`) without loading the orchestrator's CLI: the session reads none of
the orchestrator's settings (but the level of its own log) and needs none of its plugins, and
Flask, SQLAlchemy, Alembic and the plugins took nearly a second of CPU to load before each session
started. The group is the same one the main CLI shows as ``session``: the same commands, help and
exit codes."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable


def main() -> None:
    run: Callable[[], object]
    try:
        if sys.argv[1:2] == ["session"]:
            from .session.cli import session_group

            run = functools.partial(session_group, args=sys.argv[2:], prog_name="aiimpl session")
        else:
            _closed_stdout_fails()
            from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    run()


def _closed_stdout_fails() -> None:
    """Started with standard output closed (``>&-``), Python has no ``sys.stdout``: click's output
    went nowhere (a command exited 0 with its answer lost) and Alembic's was a traceback. Standard
    output is then a descriptor no write succeeds on, so a command that writes is said to fail as
    on a full disk, in one line and with exit status 1. Done before the command line's modules load:
    Alembic keeps the ``sys.stdout`` of its import."""
    if sys.stdout is not None:
        return
    with contextlib.suppress(OSError):
        fd = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor, 1: a write to it fails
        if fd != 1:
            os.dup2(fd, 1)
            os.close(fd)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
