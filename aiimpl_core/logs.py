"""Logging set-up shared by the server, the CLI and the session program."""
from __future__ import annotations

import logging
from typing import Any

#: loggers whose INFO lines tell an operator nothing (alembic names each of its autogenerate plugins
#: whenever it is imported); they still show at DEBUG
QUIET_AT_INFO = ("alembic.runtime.plugins",)


def configure(level: str, **kwargs: Any) -> None:
    """``logging.basicConfig`` at ``level`` (a name such as ``INFO``), with :data:`QUIET_AT_INFO`
    held to warnings unless the level is ``DEBUG``."""
    logging.basicConfig(level=level.upper(), **kwargs)
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for name in QUIET_AT_INFO:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
