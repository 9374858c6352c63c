"""Logging set-up shared by the server, the CLI and the session program.

Two line formats (``AIIMPL_LOG_FORMAT``): ``text``, a UTC timestamp, the level, the logger and the
message; ``json``, one JSON object per line for log collectors. The production gunicorn
configuration gives its own error and access lines the same format.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

#: loggers whose INFO lines tell an operator nothing (alembic names each of its autogenerate plugins
#: whenever it is imported); they still show at DEBUG
QUIET_AT_INFO = ("alembic.runtime.plugins",)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the fields of a JSON line, before renaming (:data:`JSON_NAMES`)
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
#: gunicorn's access-line atoms a JSON line carries as fields (never the query string or a header:
#: a webhook's secret may ride in the one, a bearer token in the other)
ACCESS_FIELDS = {"h": "remote", "m": "method", "U": "path", "s": "status", "b": "bytes", "M": "duration_ms"}


class _UtcTime:
    """ISO 8601 UTC times with milliseconds: ``2026-12-02T22:58:41.123Z``."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class TextFormatter(_UtcTime, logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)


def json_formatter() -> logging.Formatter:
    """A formatter of one JSON object per record (see :data:`JSON_FIELDS`); a record's ``extra``
    fields are added, and gunicorn's access records carry :data:`ACCESS_FIELDS`."""
    from pythonjsonlogger.json import JsonFormatter

    class Formatter(_UtcTime, JsonFormatter):
        def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord,
                       message_dict: dict[str, Any]) -> None:
            super().add_fields(log_record, record, message_dict)
            if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
                for atom, field in ACCESS_FIELDS.items():
                    value = record.args.get(atom)
                    if value not in (None, "-"):
                        log_record[field] = int(value) if str(value).isdigit() else value

    return Formatter(JSON_FIELDS, rename_fields=JSON_NAMES)


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``fmt`` (``text`` or ``json``)."""
    return json_formatter() if fmt == "json" else TextFormatter()


def configure(level: str, fmt: str = "text", **kwargs: Any) -> None:
    """``logging.basicConfig`` at ``level`` (a name such as ``INFO``) with lines in ``fmt``
    (``text`` or ``json``), with :data:`QUIET_AT_INFO` held to warnings unless the level is
    ``DEBUG``. Like ``basicConfig``, it leaves a root logger that has handlers alone."""
    handler = logging.StreamHandler(kwargs.pop("stream", None))
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler], **kwargs)
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for name in QUIET_AT_INFO:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


def from_environ(default_level: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``AIIMPL_LOG_LEVEL`` and ``AIIMPL_LOG_FORMAT`` of the environment, each replaced by its
    default when unset or not valid (the configuration check reports a value that is not valid;
    logging must be set up before it can say so)."""
    from .config import SETTINGS_BY_NAME

    env = os.environ if environ is None else environ

    def read(name: str, default: str) -> str:
        raw = env.get(name)
        try:
            return SETTINGS_BY_NAME[name].parse(raw) if raw else default
        except ValueError:
            return default

    return read("AIIMPL_LOG_LEVEL", default_level), read("AIIMPL_LOG_FORMAT", "text")
