"""Logging set-up shared by the server, the CLI and the session program.

Two line formats (``AIIMPL_LOG_FORMAT``): ``text``, a UTC timestamp, the level, the logger and the
message; ``json``, one JSON object per line for log collectors. The production gunicorn
configuration gives its own error and access lines the same format.

Every line passes :data:`SECRETS` first: the values of the sensitive settings, of the stored secrets
this process decrypted and of a session's secrets are masked in the message, its arguments, the
traceback and the stack, whatever logged them (a plugin's exception that quotes its own token, a
library's error that quotes a URL with a password).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .session.redact import Redactor

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
#: the atoms of an access line that carry a client's text (the path above all: a client may put a
#: secret there, such as a webhook's secret in place of its route), masked as any other line is
ACCESS_TEXT = ("U", "m", "H", "r", "q", "f", "a")


class _UtcTime:
    """ISO 8601 UTC times with milliseconds: ``2026-12-02T22:58:41.123Z``."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


#: control characters a terminal acts on (escape sequences, carriage return, C1 controls): shown
#: escaped in a text line; the line breaks and tabs of a traceback are kept
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_BREAK = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def one_line(text: str) -> str:
    """``text`` with every control character shown escaped (``\\x1b``, ``\\r``, ``\\n``), line
    breaks and tabs included: a command's line of stored text a runner or a service wrote (a job's
    error, a step's status) is one line, and no terminal acts on what it holds."""
    return _CONTROL_OR_BREAK.sub(_escaped, text)


class TextFormatter(_UtcTime, logging.Formatter):
    """``TEXT_FORMAT`` lines whose control characters are shown escaped (``\\x1b``): a client's or a
    runner's text in a message must not clear the screen, set the window title or overwrite the
    line of an operator reading the log in a terminal."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return _CONTROL.sub(_escaped, super().format(record))


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


class SecretMask(logging.Filter):
    """A handler filter that masks known secret values in every record it passes (message,
    arguments, traceback, stack), in place, so any handler after it gets the masked record too.

    It keeps the last :attr:`size` values it was given (a process that decrypts many secrets over
    its life does not grow without bound); masking a value that is no longer a secret is harmless,
    so values it dropped are masked on until a quarter of :attr:`size` were, and the redactor is
    built again from the values kept.
    """

    def __init__(self, size: int = 512) -> None:
        super().__init__()
        self.size = size
        self._values: OrderedDict[str, None] = OrderedDict()
        self._redactor: Redactor | None = None
        self._dropped = 0  # values dropped since the redactor was built (it still masks them)
        self._followed: weakref.WeakSet[Redactor] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        """Mask these values from now on (empty ones are ignored; one shorter than ``MIN_LENGTH`` is
        masked in its distinctive base64 forms only, as redaction does: see
        :data:`~aiimpl_core.session.redact.MIN_BASE64_LENGTH`)."""
        for value in values:
            if not isinstance(value, str) or not value.strip():
                continue
            with self._lock:
                if value in self._values:
                    self._values.move_to_end(value)
                    continue
                self._values[value] = None
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
                    self._dropped += 1
                if self._redactor is not None and self._dropped <= self.size // 4:
                    self._redactor.add(value)  # compiled on its own: the others stay as they are
                else:  # built again from the values kept, when next needed
                    self._redactor, self._dropped = None, 0

    def follow(self, redactor: Redactor) -> None:
        """Mask whatever ``redactor`` masks, including the values it learns later (a session's
        redactor learns each repository token it fetches); held weakly."""
        with self._lock:
            self._followed.add(redactor)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._redactor, self._dropped = None, 0
            self._followed = weakref.WeakSet()

    def redactors(self) -> list[Redactor]:
        with self._lock:
            if self._redactor is None and self._values:
                self._redactor, self._dropped = Redactor(self._values), 0
            own = [self._redactor] if self._redactor is not None else []
            return own + [r for r in self._followed if r.masks_any]

    def filter(self, record: logging.LogRecord) -> bool:
        redactors = self.redactors()
        if not redactors:
            return True

        def masked(text: str) -> str:
            for redactor in redactors:
                text = redactor.text(text)
            return text

        if record.name == "gunicorn.access":
            # its atoms stay a mapping (the JSON formatter reads them): only the client's text in them
            if isinstance(record.args, Mapping):
                record.args = {
                    atom: masked(value) if atom in ACCESS_TEXT and isinstance(value, str) else value
                    for atom, value in record.args.items()
                }
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it as it would
            return True

        record.msg, record.args = masked(message), None
        if record.exc_info:
            # formatted once here and kept as the record's text: formatters use it as written
            record.exc_text = masked(_PLAIN.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = masked(record.exc_text)
        if record.stack_info:
            record.stack_info = masked(record.stack_info)
        return True


_PLAIN = logging.Formatter()
#: the process's mask, on every handler :func:`configure` sets up and on gunicorn's
SECRETS = SecretMask()


def mask(*values: str | None) -> None:
    """Mask these values in every log line of this process from now on."""
    SECRETS.add(*values)


def masked(data: Any) -> Any:
    """``data`` (a string, or lists and mappings of them) with every value :data:`SECRETS` knows
    masked, as in this process's log lines: for what an answer or a command's output shows of a
    remote error, which may quote the failed request's credentials (a tracker, GitHub or a proxy in
    between echoing them)."""
    redactors = SECRETS.redactors()
    if not redactors:
        return data

    def mask(value: Any) -> Any:
        if isinstance(value, str):
            for redactor in redactors:
                value = redactor.text(value)
            return value
        if isinstance(value, Mapping):
            return {key: mask(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [mask(item) for item in value]
        return value

    return mask(data)


def guard(handler: logging.Handler) -> logging.Handler:
    """``handler`` with :data:`SECRETS` among its filters (once)."""
    if SECRETS not in handler.filters:
        handler.addFilter(SECRETS)
    return handler


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``fmt`` (``text`` or ``json``)."""
    return json_formatter() if fmt == "json" else TextFormatter()


def configure(level: str, fmt: str = "text", **kwargs: Any) -> None:
    """``logging.basicConfig`` at ``level`` (a name such as ``INFO``) with lines in ``fmt``
    (``text`` or ``json``), with :data:`QUIET_AT_INFO` held to warnings unless the level is
    ``DEBUG``. Like ``basicConfig``, it leaves a root logger that has handlers alone, but for
    :data:`SECRETS`, which every root handler gets."""
    handler = logging.StreamHandler(kwargs.pop("stream", None))
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[guard(handler)], **kwargs)
    for existing in logging.getLogger().handlers:  # a root set up before (by a host program, say)
        guard(existing)
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


def logged_path(path_info: str) -> str:
    """A request's path as a log line shows it (access and error lines alike): percent-encoded as
    on the wire. ``PATH_INFO`` is decoded (a ``%0A`` in it would end the line and start one the
    client wrote) and its bytes are Latin-1 characters (a UTF-8 name would show garbled)."""
    try:
        raw = path_info.encode("latin-1")  # PEP 3333: the bytes received, one character each
    except UnicodeEncodeError:
        raw = path_info.encode()
    return quote(raw, safe="/:@!$&'()*+,;=")
