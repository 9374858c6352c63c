"""The development server behind ``aiimpl serve`` and ``aiimpl demo`` (production runs gunicorn with
``aiimpl_core.gunicorn_conf``)."""

from __future__ import annotations

import errno
import json
from http import HTTPStatus
from typing import Any

from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from ..errors import AiimplError


class PathOnlyRequestHandler(WSGIRequestHandler):
    """Logs each request's path without its query string, as the gunicorn configuration does: the
    Jira webhook may carry its secret as ``?secret=``.

    The line is werkzeug's without its colours: they are terminal escape codes, which a log file or
    a JSON log line (``AIIMPL_LOG_FORMAT=json``) would carry as text. The path is the one sent,
    percent-encoded, as gunicorn's access lines show it; other control characters are escaped as
    werkzeug does."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.command:
            # a request line too bad to be parsed (or too long to be read): it may carry a query
            # string, which is not shown (the path of an earlier request on the connection is stale)
            line = "(request line not shown)"
        else:
            # (not urlsplit: it would take the first segment of `//a/b` for a host)
            line = f"{self.command} {self.path.partition('?')[0]} {self.request_version}"
        self.log("info", '"%s" %s %s', line.translate(self._control_char_table), code, size)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The server's own answer to a request it could not read (a request line or header it
        cannot parse, 400/414/431/505): a JSON body of the status's phrase, as the API's errors and
        gunicorn's are answered in production, in place of ``http.server``'s HTML page. Neither the
        answer nor the log quotes the request (``http.server``'s message may quote its request line
        and with it a query string's secret)."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self.log("error", "code %d, %s: the request could not be read (not quoted)", code, phrase)
        body = json.dumps({"error": phrase}).encode()
        if self.request_version == "HTTP/0.9":  # (a request line not read: its version is not known)
            self.request_version = "HTTP/1.0"  # a status line and headers, which HTTP/0.9 has not
        self.send_response(code, phrase)
        self.send_header("Connection", "close")
        self.close_connection = True
        if self.command == "HEAD":  # (every code sent here is an error: each has a body but to HEAD)
            self.end_headers()
            return
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


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
