"""A local server run from a background thread for as long as a test needs it.

:func:`serve_wsgi` serves a WSGI app (a Flask app, a fake service) with werkzeug; :class:`ServerThread`
runs any ``socketserver`` server (a stdlib ``http.server`` handler, a raw TCP one) the same way::

    with serve_wsgi(app) as live:
        requests.get(live.url + "/health")

or, for an object that starts and stops its own server, ``self.live = serve_wsgi(app).start()`` and
later ``self.live.stop()``. Stopping always shuts the loop down, closes the listening socket and joins
the thread, so the port is free again once the block ends.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import WSGIRequestHandler

#: how often the serving loop looks for a stop: short, since tests start and stop many servers
POLL_INTERVAL = 0.05


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler without its access lines (a fake that records its requests, or a
    request answered after its test, says nothing in the test's output)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ServerThread:
    """``server`` (already bound) served from a daemon thread between :meth:`start` and :meth:`stop`.

    :param server: a ``socketserver.BaseServer`` bound to its address.
    :param scheme: the scheme of :attr:`url` (``https`` for a server that speaks TLS).
    :param name: the thread's name, shown in a hung test's thread dump.
    """

    def __init__(
        self, server: socketserver.BaseServer, *, scheme: str = "http", name: str | None = None
    ) -> None:
        self.server = server
        self.scheme = scheme
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, name=name, daemon=True
        )
        self._stopped = False

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """``scheme://host:port``, with no trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, free the port and wait for the thread; a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        # shutdown() waits for a serving loop to end: on a server never started it would wait forever
        running = self._thread.is_alive()
        if running:
            self.server.shutdown()
        self.server.server_close()
        if running:
            self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_wsgi(
    app: Callable[..., Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    threaded: bool = True,
    request_handler: type[Any] | None = None,
    ssl_context: ssl.SSLContext | tuple[str, str] | None = None,
    name: str | None = None,
) -> ServerThread:
    """``app`` on werkzeug's server at ``host``:``port`` (0: a free port), not yet started.

    The socket is bound at once, so :attr:`ServerThread.url` is known before :meth:`ServerThread.start`.

    :param threaded: a thread per request (werkzeug's ``threaded``); off, requests are served one by one.
    :param request_handler: a ``WSGIRequestHandler`` subclass (one that logs no access lines, say).
    :param ssl_context: serve HTTPS with this context, or with a ``(certificate, key)`` pair of files.
    :param name: the serving thread's name.
    """
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=threaded, request_handler=request_handler,
                         ssl_context=ssl_context)
    return ServerThread(server, scheme="https" if ssl_context is not None else "http", name=name)


__all__ = ["POLL_INTERVAL", "QuietRequestHandler", "ServerThread", "serve_wsgi"]


def raw_exchange(port: int, request: bytes, host: str = "127.0.0.1") -> tuple[str, dict[str, str], bytes]:
    """``request`` sent as it is to a server's own port (bytes no HTTP client would send: a request
    line or header the server cannot read); the answer's status line, headers (names in lower case)
    and body, read until the server closes the connection."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    return status, headers, body
