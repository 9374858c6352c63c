"""The ``aiimpl`` script's entry point, kept apart from :mod:`aiimpl_core.cli` so that an interrupt
while the command line's modules load (Flask, click, SQLAlchemy: most of a second) ends as one
during a command does, with ``Aborted.`` and exit status 130, not a traceback of the import."""
from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    run()
