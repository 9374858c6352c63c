"""The development server behind ``aiimpl serve`` (production runs gunicorn with
``aiimpl_core.gunicorn_conf``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


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


def make_dev_server(host: str, port: int, app: Any) -> BaseWSGIServer:
    """A threaded werkzeug server for ``app`` that keeps query strings out of its log."""
    return make_server(host, port, app, threaded=True, request_handler=PathOnlyRequestHandler)
