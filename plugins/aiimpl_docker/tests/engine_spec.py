"""The Docker Engine API description, to check what the fake engine receives and answers.

``docker/swagger.yaml`` of the shared API descriptions is moby's ``api/swagger.yaml`` (Swagger 2.0).
Each exchange with :class:`~.fake_engine.FakeEngine` is checked against it:

- the operation exists (method and path template, with or without the ``/v1.xx`` prefix the SDK
  puts before every path);
- path and query parameters: required ones present, values of the declared primitive type (the
  engine reads booleans as Go's ``strconv.ParseBool`` does, so the SDK's ``1``/``0`` and
  ``True``/``False`` are booleans), no undeclared query parameter;
- a JSON body only where the operation takes one, matching its schema;
- the answer's status is one the operation documents, and a JSON answer matches that status's schema.

Schemas are checked with ``jsonschema`` against the whole description, so ``#/definitions/...``
references resolve; ``x-nullable: true`` is read as "``null`` is accepted too" (Swagger 2.0 has
no ``nullable``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
import yaml

#: what the engine's ``strconv.ParseBool`` accepts
_BOOLEANS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
_PRIMITIVES = {
    "integer": lambda v: re.fullmatch(r"-?\d+", v) is not None,
    "number": lambda v: re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", v) is not None,
    "boolean": lambda v: v in _BOOLEANS,
}
#: query parameters the docker SDK sends that the description no longer lists (engines ignore
#: them): ``GET /containers/json`` still gets the long-gone ``trunc_cmd``
_SDK_EXTRAS = {("GET", "/containers/json"): frozenset({"trunc_cmd"})}
_VERSION_PREFIX = re.compile(r"^/v\d+(\.\d+)?(?=/)")


def spec_path() -> str:
    """``docker/swagger.yaml`` of the shared API descriptions."""
    from aiimpl_core.testing.pytest_plugin import specs_dir

    return os.path.join(specs_dir(), "docker", "swagger.yaml")


@dataclass(frozen=True)
class Operation:
    """One documented operation."""

    method: str
    template: str
    pattern: re.Pattern[str]
    definition: Mapping[str, Any]
    parameters: tuple[Mapping[str, Any], ...]


def _nullable(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items()}
        if out.get("x-nullable") is True:
            return {"anyOf": [{"type": "null"}, {k: v for k, v in out.items() if k != "x-nullable"}]}
        return out
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


def _path_pattern(template: str) -> re.Pattern[str]:
    # image and distribution names carry slashes (``localhost/aiimpl-session:test``): the
    # engine's router reads ``{name:.*}`` there
    slashed = template.startswith(("/images/", "/distribution/"))
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join(
        f"(?P<{re.sub(r'[^0-9A-Za-z_]', '_', p[1:-1])}>{'.+' if slashed else '[^/]+'})"
        if p.startswith("{")
        else re.escape(p)
        for p in parts
    )
    return re.compile(regex)


class EngineDescription:
    """The parsed description; checks one request or one answer at a time."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        if document.get("swagger") != "2.0":
            raise ValueError("not a Swagger 2.0 description")
        self.document = _nullable(dict(document))
        self.operations = self._operations()

    def _operations(self) -> list[Operation]:
        ops = []
        for template, item in (self.document.get("paths") or {}).items():
            shared = list(item.get("parameters") or [])
            for method, definition in item.items():
                if method == "parameters" or not isinstance(definition, dict):
                    continue
                own = list(definition.get("parameters") or [])
                params = {(p.get("in"), p.get("name")): p for p in shared + own}
                pattern = _path_pattern(template)
                ops.append(Operation(method.upper(), template, pattern, definition, tuple(params.values())))
        # literal paths first (``/containers/json`` is not ``/containers/{id}``), then the longest
        ops.sort(key=lambda op: (op.template.count("{"), -len(op.template)))
        return ops

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation serving ``method path`` and its path parameters' values."""
        path = _VERSION_PREFIX.sub("", path)
        for op in self.operations:
            if op.method == method.upper():
                match = op.pattern.fullmatch(path)
                if match:
                    names = re.findall(r"\{([^}]+)\}", op.template)
                    return op, {n: match.group(re.sub(r"[^0-9A-Za-z_]", "_", n)) for n in names}
        return None

    def schema_errors(self, schema: Mapping[str, Any], instance: Any) -> list[str]:
        root = {k: self.document[k] for k in ("definitions", "parameters", "responses") if k in self.document}
        root["allOf"] = [schema]
        errors = jsonschema.Draft4Validator(root).iter_errors(instance)
        return [
            f"at {'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message[:300]}"
            for e in sorted(errors, key=lambda e: list(e.absolute_path))
        ]

    def check_request(
        self, method: str, path: str, query: Mapping[str, list[str]], body: bytes, content_type: str | None
    ) -> list[str]:
        """What is wrong with one request (nothing when it is as the description says)."""
        found = self.find(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in the Engine API description"]
        op, values = found
        problems: list[str] = []
        declared: set[str] = set(_SDK_EXTRAS.get((op.method, op.template), ()))
        body_param = None
        for param in op.parameters:
            where, name = param.get("in"), str(param.get("name"))
            if where == "path":
                problems += _primitive(param, values.get(name), f"path parameter {name}")
            elif where == "query":
                declared.add(name)
                given = query.get(name) or []
                if not given and param.get("required"):
                    problems.append(f"query parameter {name} is required")
                for value in given:
                    problems += _primitive(param, value, f"query parameter {name}")
            elif where == "body":
                body_param = param
        problems += [f"query parameter {name} is not documented" for name in query if name not in declared]
        if body_param is None:
            if body:
                problems.append("the operation takes no body")
        elif not body:
            if body_param.get("required"):
                problems.append("a JSON body is required")
        elif content_type is None or "json" not in content_type:
            problems.append(f"the body must be application/json, not {content_type!r}")
        else:
            try:
                payload = json.loads(body)
            except ValueError:
                problems.append("the body is not JSON")
            else:
                problems += [f"body {m}" for m in self.schema_errors(body_param.get("schema") or {}, payload)]
        return [f"request {op.method} {path}: {p}" for p in problems]

    def check_response(
        self, method: str, path: str, status: int, body: bytes, content_type: str | None
    ) -> list[str]:
        """What is wrong with one answer (nothing when it is as the description says)."""
        found = self.find(method, path)
        if found is None:
            return []  # the request was already reported
        op = found[0]
        responses = {str(k): v for k, v in (op.definition.get("responses") or {}).items()}
        where = f"response {status} to {op.method} {path}"
        spec = responses.get(str(status)) or responses.get("default")
        if spec is None:
            return [f"{where}: status not documented (documented: {', '.join(sorted(responses))})"]
        schema = spec.get("schema")
        if schema is None or not body or content_type is None or "json" not in content_type:
            return []  # no schema, or a stream (logs) or plain text (``_ping``)
        try:
            payload = json.loads(body)
        except ValueError:
            return [f"{where}: the body is not JSON"]
        return [f"{where}: {m}" for m in self.schema_errors(schema, payload)]


def _primitive(param: Mapping[str, Any], value: str | None, label: str) -> list[str]:
    if value is None:
        return [f"{label} is required"] if param.get("required") else []
    kind = str(param.get("type") or "string")
    check = _PRIMITIVES.get(kind)
    if check is not None and not check(value):
        return [f"{label} must be {kind}, got {value!r}"]
    enum = param.get("enum")
    if enum is not None and value not in [str(e) for e in enum]:
        return [f"{label} must be one of {enum}, got {value!r}"]
    return []


@lru_cache(maxsize=1)
def engine_description() -> EngineDescription:
    with open(spec_path(), encoding="utf-8") as fh:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return EngineDescription(yaml.load(fh, Loader=loader))  # noqa: S506 - a safe loader
