"""Fly's Machines API is published as Swagger 2.0: its fake is checked with the core's checker.

:class:`SwaggerDescription` and :class:`Operation` are the core's
(:mod:`aiimpl_core.testing.swagger2`), used with their defaults: Fly's paths sit under the
description's ``basePath`` (``/v1``) and its booleans are ``true``/``false``. What this module
adds is :class:`SwaggerFakeServer`, which serves the fake and checks every exchange with it.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

from aiimpl_core.testing.serving import QuietRequestHandler, ServerThread, serve_wsgi
from aiimpl_core.testing.swagger2 import Operation, SwaggerDescription


class SwaggerFakeServer:
    """Serve a fake's Flask app on ``127.0.0.1``; validate and record every exchange.

    The counterpart, for Swagger 2.0 descriptions, of the core's ``OpenAPIFakeServer``: each
    request is checked against the description before the fake sees it, each answer after. A
    fake marks a real-world answer its description does not document (Fly's 404 bodies, for one)
    with the core's ``UNDOCUMENTED_HEADER`` and checks that body itself.
    """

    def __init__(self, app: Any, description: SwaggerDescription) -> None:
        self.app = app
        self.description = description
        self.requests: list[Any] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._live: ServerThread | None = None

    @property
    def url(self) -> str:
        """Base URL including the description's ``basePath`` (``http://127.0.0.1:<port>/v1``)."""
        if self._live is None:
            raise RuntimeError("the fake server is not started")
        return self._live.url + self.description.base_path

    def start(self) -> SwaggerFakeServer:
        if self._live is None:  # (quiet: the records say it all)
            live = serve_wsgi(self._wsgi, request_handler=QuietRequestHandler, name="swagger-fake")
            self._live = live.start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> SwaggerFakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def assert_clean(self) -> None:
        """Fail when any request or response broke the description."""
        if self.violations:
            raise AssertionError(
                f"{len(self.violations)} Swagger violation(s):\n" + "\n".join(self.violations)
            )

    def requests_to(self, method: str, path_suffix: str = "") -> list[Any]:
        return [r for r in self.requests if r.method == method.upper() and r.path.endswith(path_suffix)]

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        from aiimpl_core.testing.fakeserver import UNDOCUMENTED_HEADER, RecordedRequest
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        body = request.get_data(cache=True)
        query = {k: request.args.getlist(k) for k in request.args}
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=query,
            headers=dict(request.headers.items()),
            json=_json_or_none(body),
            body=body,
        )
        record.violations += self.description.validate_request(
            request.method, request.path, query, body, request.content_type
        )
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        response = Response.from_app(self.app, environ, buffered=True)
        data = response.get_data()
        record.status = response.status_code
        record.response_json = _json_or_none(data)
        if UNDOCUMENTED_HEADER in response.headers:
            del response.headers[UNDOCUMENTED_HEADER]
            record.undocumented = True
        else:
            record.violations += self.description.validate_response(
                request.method, request.path, response.status_code, data
            )
        with self._lock:
            self.requests.append(record)
            self.violations.extend(record.violations)
        return response(environ, start_response)


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


__all__ = ["Operation", "SwaggerDescription", "SwaggerFakeServer"]
