"""The development server behind ``aiimpl serve`` and ``aiimpl demo`` (production runs gunicorn with
``aiimpl_core.gunicorn_conf``)."""

from __future__ import annotations

import errno
from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from ..errors import AiimplError


class PathOnlyRequestHandler(WSGIRequestHandler):
    """Logs each request's path without its query string, as the gunicorn configuration does: the
    Jira webhook may carry its secret as ``?secret=``."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        full = self.path
        self.path = urlsplit(full).path
        try:
            super().log_request(code, size)
        finally:
            self.path = full


class _CannotListen(Exception):
    """The socket could not be bound: carried out of werkzeug's constructor, which would print the
    error itself and exit."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _DevServer(ThreadedWSGIServer):
    def server_bind(self) -> None:
        try:
            super().server_bind()
        except OSError as exc:
            raise _CannotListen(exc) from None

    def server_activate(self) -> None:
        try:
            super().server_activate()
        except OSError as exc:
            raise _CannotListen(exc) from None


def listen_error(host: str, port: int, exc: OSError, *, port_option: str = "--port",
                 host_option: str | None = "--host") -> AiimplError:
    """One line for an operator about an address nothing can listen on: a port in use, or an
    interface this machine does not have (or a name it cannot resolve)."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE or host_option is None:
        return AiimplError(f"port {port} is not free ({reason}): pick another with {port_option}")
    return AiimplError(f"cannot listen on {host}:{port} ({reason}): pick another with {host_option}")


def make_dev_server(host: str, port: int, app: Any, *, port_option: str = "--port",
                    host_option: str | None = "--host") -> BaseWSGIServer:
    """A threaded werkzeug server for ``app`` that keeps query strings out of its log. An address it
    cannot listen on raises :class:`AiimplError` naming the option that picks another."""
    try:
        return _DevServer(host, port, app, handler=PathOnlyRequestHandler)
    except _CannotListen as failed:
        raise listen_error(host, port, failed.error, port_option=port_option,
                           host_option=host_option) from None
    except OSError as exc:  # (the name of the host did not resolve)
        raise listen_error(host, port, exc, port_option=port_option, host_option=host_option) from None
