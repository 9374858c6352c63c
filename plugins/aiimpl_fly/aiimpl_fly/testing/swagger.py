"""A small, generic validator of HTTP exchanges against a Swagger 2.0 description.

openapi-core reads OpenAPI 3 only, and Fly publishes its Machines API as Swagger 2.0. This module
checks what the Fly fake receives and answers against that description with ``jsonschema``:

- the operation exists (method and path template, under the description's ``basePath``);
- path and query parameters: required ones present, values of the declared primitive type,
  ``enum`` respected, no undeclared query parameter;
- the ``in: body`` parameter against its schema (and its presence when required);
- the response status is one the operation documents, and its body matches that status's schema.

Schemas are validated with the whole description as the root document, so ``#/definitions/...``
references resolve wherever they appear. Swagger 2.0 schemas are a JSON Schema draft-4 subset;
``x-nullable: true`` is honoured by accepting ``null`` for that schema.
"""

from __future__ import annotations

import copy
import io
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

_PRIMITIVE_CHECKS = {
    "string": lambda v: True,
    "integer": lambda v: re.fullmatch(r"-?\d+", v) is not None,
    "number": lambda v: re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", v) is not None,
    "boolean": lambda v: v in ("true", "false"),
}


@dataclass(frozen=True)
class Operation:
    """One documented operation: its method, path template and definition."""

    method: str
    template: str
    pattern: re.Pattern[str]
    definition: Mapping[str, Any]
    parameters: tuple[Mapping[str, Any], ...]


def _nullable(schema: Any) -> Any:
    """Rewrite ``x-nullable`` schemas to also accept ``null`` (draft 4 has no ``nullable``)."""
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items()}
        if out.get("x-nullable") is True:
            return {"anyOf": [{"type": "null"}, {k: v for k, v in out.items() if k != "x-nullable"}]}
        return out
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


class SwaggerDescription:
    """A parsed Swagger 2.0 description that validates requests and responses."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        if document.get("swagger") != "2.0":
            raise ValueError("not a Swagger 2.0 description")
        self.document = _nullable(copy.deepcopy(dict(document)))
        self.base_path = str(self.document.get("basePath") or "").rstrip("/")
        self.operations = self._operations()

    @classmethod
    def from_file(cls, path: str) -> SwaggerDescription:
        return _load(path)

    def _operations(self) -> list[Operation]:
        ops: list[Operation] = []
        for template, item in (self.document.get("paths") or {}).items():
            shared = list(item.get("parameters") or [])
            regex = "".join(
                f"(?P<{_group(part[1:-1])}>[^/]+)" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[^}]+\})", template)
            )
            for method, definition in item.items():
                if method == "parameters" or not isinstance(definition, dict):
                    continue
                params = {
                    (p.get("in"), p.get("name")): p for p in shared + list(definition.get("parameters") or [])
                }
                ops.append(
                    Operation(
                        method.upper(),
                        template,
                        re.compile(regex),
                        definition,
                        tuple(self._deref(p) for p in params.values()),
                    )
                )
        # literal paths before templated ones, so ``/machines/{id}`` never shadows ``/machines/x/stop``
        ops.sort(key=lambda op: (op.template.count("{"), -len(op.template)))
        return ops

    def _deref(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        target: Any = self.document
        for part in ref.lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target

    # -- lookup --

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation serving ``method path`` (a path under ``basePath``) and its path values."""
        if self.base_path and path.startswith(self.base_path):
            path = path[len(self.base_path) :] or "/"
        for op in self.operations:
            if op.method != method.upper():
                continue
            match = op.pattern.fullmatch(path)
            if match:
                names = re.findall(r"\{([^}]+)\}", op.template)
                return op, {n: match.group(_group(n)) for n in names}
        return None

    # -- validation --

    def schema_errors(self, schema: Mapping[str, Any], instance: Any) -> list[str]:
        """Messages of every way ``instance`` breaks ``schema`` (``$ref`` resolved in the description)."""
        # the schema sits in a root that carries the description's definitions, so every
        # ``#/definitions/...`` reference resolves wherever it appears
        root = {
            key: self.document[key]
            for key in ("definitions", "parameters", "responses")
            if key in self.document
        }
        root["allOf"] = [schema]
        validator = jsonschema.Draft4Validator(root)
        out = []
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path) or "<root>"
            out.append(f"at {where}: {error.message[:300]}")
        return out

    def validate_request(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        body: bytes,
        content_type: str | None,
    ) -> list[str]:
        """Violations of one request (empty when it is valid)."""
        found = self.find(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in the description"]
        op, path_values = found
        problems: list[str] = []
        declared_query = set()
        body_param = None
        for param in op.parameters:
            where, name = param.get("in"), str(param.get("name"))
            if where == "path":
                problems += _check_primitive(param, path_values.get(name), f"path parameter {name}")
            elif where == "query":
                declared_query.add(name)
                values = query.get(name)
                if not values:
                    if param.get("required"):
                        problems.append(f"query parameter {name} is required")
                    continue
                for value in values:
                    problems += _check_primitive(param, value, f"query parameter {name}")
            elif where == "body":
                body_param = param
        for name in query:
            if name not in declared_query:
                problems.append(f"query parameter {name} is not documented")
        if body_param is not None:
            if not body:
                if body_param.get("required"):
                    problems.append("a JSON body is required")
            else:
                if content_type is None or "json" not in content_type:
                    problems.append(f"the body must be application/json, not {content_type!r}")
                try:
                    payload = json.loads(body)
                except ValueError:
                    problems.append("the body is not JSON")
                else:
                    problems += [
                        f"body {m}" for m in self.schema_errors(body_param.get("schema") or {}, payload)
                    ]
        elif body:
            problems.append("the operation takes no body")
        return [f"request {op.method} {path}: {p}" for p in problems]

    def validate_response(self, method: str, path: str, status: int, body: bytes) -> list[str]:
        """Violations of one response (empty when it is valid)."""
        found = self.find(method, path)
        if found is None:
            return []  # the request was already reported
        op, _ = found
        responses = op.definition.get("responses") or {}
        spec = responses.get(str(status)) or responses.get("default")
        where = f"response {status} to {op.method} {path}"
        if spec is None:
            return [f"{where}: status not documented (documented: {', '.join(sorted(responses))})"]
        spec = self._deref(spec)
        schema = spec.get("schema")
        if schema is None:
            return []
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            return [f"{where}: the body is not JSON"]
        return [f"{where}: {m}" for m in self.schema_errors(schema, payload)]


def _group(name: str) -> str:
    """A regex group name for a path parameter (``app_name`` stays, ``machine-id`` → ``machine_id``)."""
    return re.sub(r"\W", "_", name)


def _check_primitive(param: Mapping[str, Any], value: str | None, label: str) -> list[str]:
    if value is None:
        return [f"{label} is required"] if param.get("required") else []
    kind = str(param.get("type") or "string")
    check = _PRIMITIVE_CHECKS.get(kind)
    if check is not None and not check(value):
        return [f"{label} must be {kind}, got {value!r}"]
    enum = param.get("enum")
    if enum is not None and value not in [str(e).lower() if isinstance(e, bool) else str(e) for e in enum]:
        return [f"{label} must be one of {enum}, got {value!r}"]
    return []


@lru_cache(maxsize=8)
def _load(path: str) -> SwaggerDescription:
    with open(path, encoding="utf-8") as fh:
        return SwaggerDescription(json.load(fh))


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
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL including the description's ``basePath`` (``http://127.0.0.1:<port>/v1``)."""
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        return f"http://127.0.0.1:{self._server.server_port}{self.description.base_path}"

    def start(self) -> SwaggerFakeServer:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class _Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # the records say it all
                pass

        if self._server is None:
            self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
            server = self._server
            self._thread = threading.Thread(
                target=lambda: server.serve_forever(poll_interval=0.05), name="swagger-fake", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

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
