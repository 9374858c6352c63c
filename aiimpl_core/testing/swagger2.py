"""Check HTTP exchanges against a Swagger 2.0 description, for fakes of APIs published that way.

openapi-core (behind :class:`~aiimpl_core.testing.fakeserver.OpenAPIFakeServer`) reads OpenAPI 3
only; Fly's Machines API and the Docker Engine API are published as Swagger 2.0. A fake checks
what it receives and answers with one :class:`SwaggerDescription`::

    from aiimpl_core.testing.swagger2 import SwaggerDescription, read_document

    description = SwaggerDescription(read_document(path), title="the Example API description")
    violations += description.validate_request(method, path, query, body, content_type)
    violations += description.validate_response(method, path, status, answer, answer_content_type)

Each call returns the violations of one request or one answer as messages (empty when it is as the
description says):

- the operation exists (method and path template, after the path prefix is removed);
- path and query parameters: required ones present, values of the declared primitive type,
  ``enum`` respected, no undeclared query parameter;
- the ``in: body`` parameter: present when required, sent as a media type the operation
  ``consumes`` (its own, else the description's, else JSON), matching its schema; a body where
  the operation takes none. A body whose schema is a ``string`` sent as other than JSON (a tar
  archive, say) is raw bytes: its media type is checked, its content is not;
- the answer's status is one the operation documents, and its body matches that status's schema.

Schemas are validated with ``jsonschema`` (draft 4, which Swagger 2.0 schemas are a subset of)
inside a root carrying the description's ``definitions``, so ``#/definitions/...`` references
resolve wherever they appear; ``x-nullable: true`` is read as "``null`` is accepted too".

Public API:

* :class:`SwaggerDescription` — ``find``, ``schema_errors``, ``undeclared``, ``validate_request``,
  ``validate_response``, ``from_file`` (cached per path, default options), ``base_path``,
  ``operations``, ``document``. What differs between APIs is given to its constructor:

  - ``title``: how messages name the description (``"the description"``);
  - ``path_prefix``: a regex removed from the start of request paths (default: ``basePath``);
  - ``booleans``: the spellings a boolean parameter accepts (default ``true``/``false``);
  - ``extra_query``: undocumented query parameters allowed per ``(METHOD, template)``;
  - ``slashed_prefixes``: path templates under these prefixes take parameters spanning ``/``;
  - ``json_answers_only``: check only answer bodies sent as JSON (streams and text pass);
  - ``closed_request_bodies``: a request body's properties its schema does not declare are
    violations (:meth:`SwaggerDescription.undeclared`).

* :class:`Operation` — one documented operation (method, template, pattern, definition,
  parameters with ``$ref`` resolved).
* :func:`read_document` — a description file, JSON or YAML, as a dict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

_NUMBERS = {
    "integer": re.compile(r"-?\d+"),
    "number": re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?"),
}


@dataclass(frozen=True)
class Operation:
    """One documented operation: its method, path template and definition."""

    method: str
    template: str
    pattern: re.Pattern[str]
    definition: Mapping[str, Any]
    parameters: tuple[Mapping[str, Any], ...]


def read_document(path: str) -> dict[str, Any]:
    """The description at ``path`` (YAML when it ends in ``.yaml``/``.yml``, JSON otherwise)."""
    with open(path, encoding="utf-8") as fh:
        if path.endswith((".yaml", ".yml")):
            import yaml

            # the C loader when built: the Docker description takes seconds with the pure one
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            return yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
        return json.load(fh)


class SwaggerDescription:
    """A parsed Swagger 2.0 description that validates requests and responses.

    :param document: the description (not modified).
    :param title: how messages name the description.
    :param path_prefix: a regex removed from the start of request paths; by default the
        description's ``basePath``.
    :param booleans: the values a ``boolean`` path or query parameter may take.
    :param extra_query: query parameters accepted although undocumented, per
        ``(METHOD, path template)`` (what a client sends and the server ignores).
    :param slashed_prefixes: path templates starting with one of these take parameter values
        containing ``/`` (image names, for the Docker engine).
    :param json_answers_only: check an answer's body only when there is one and it is sent as
        JSON (a stream or plain text passes); otherwise every body is checked as JSON.
    :param closed_request_bodies: report the properties of a request body its schema does not
        declare (a name misspelt), where its objects declare theirs.
    """

    def __init__(
        self,
        document: Mapping[str, Any],
        *,
        title: str = "the description",
        path_prefix: str | None = None,
        booleans: Collection[str] = ("true", "false"),
        extra_query: Mapping[tuple[str, str], Collection[str]] | None = None,
        slashed_prefixes: tuple[str, ...] = (),
        json_answers_only: bool = False,
        closed_request_bodies: bool = False,
    ) -> None:
        if document.get("swagger") != "2.0":
            raise ValueError("not a Swagger 2.0 description")
        # ``_nullable`` rebuilds every dict and list, so the caller's document stays as it was
        self.document = _nullable(dict(document))
        self.base_path = str(self.document.get("basePath") or "").rstrip("/")
        self.title = title
        if path_prefix is None:
            path_prefix = re.escape(self.base_path) if self.base_path else None
        self._prefix = re.compile(f"^(?:{path_prefix})") if path_prefix else None
        self._booleans = frozenset(booleans)
        self._extra_query = {key: frozenset(names) for key, names in (extra_query or {}).items()}
        self._slashed_prefixes = slashed_prefixes
        self._json_answers_only = json_answers_only
        self._closed_request_bodies = closed_request_bodies
        self.operations = self._operations()

    @classmethod
    def from_file(cls, path: str) -> SwaggerDescription:
        """The description at ``path`` with the default options, parsed once per path."""
        return _load(path)

    def _operations(self) -> list[Operation]:
        ops: list[Operation] = []
        for template, item in (self.document.get("paths") or {}).items():
            shared = list(item.get("parameters") or [])
            pattern = self._path_pattern(template)
            for method, definition in item.items():
                if method == "parameters" or not isinstance(definition, dict):
                    continue
                own = list(definition.get("parameters") or [])
                params = {(p.get("in"), p.get("name")): p for p in shared + own}
                parameters = tuple(self._deref(p) for p in params.values())
                ops.append(Operation(method.upper(), template, pattern, definition, parameters))
        # literal paths before templated ones, so ``/containers/{id}`` never shadows
        # ``/containers/json``; then the longest
        ops.sort(key=lambda op: (op.template.count("{"), -len(op.template)))
        return ops

    def _path_pattern(self, template: str) -> re.Pattern[str]:
        value = ".+" if template.startswith(self._slashed_prefixes) else "[^/]+"
        return re.compile(
            "".join(
                f"(?P<{_group(part[1:-1])}>{value})" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[^}]+\})", template)
            )
        )

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
        """The operation serving ``method path`` (prefix included) and its path parameters' values."""
        if self._prefix is not None:
            path = self._prefix.sub("", path, count=1) or "/"
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
        root = {k: self.document[k] for k in ("definitions", "parameters", "responses") if k in self.document}
        root["allOf"] = [schema]
        errors = jsonschema.Draft4Validator(root).iter_errors(instance)
        return [
            f"at {'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message[:300]}"
            for e in sorted(errors, key=lambda e: list(e.absolute_path))
        ]

    def undeclared(self, schema: Mapping[str, Any], instance: Any, at: str = "") -> list[str]:
        """The properties of ``instance`` that ``schema`` does not declare, wherever its objects
        declare theirs (``properties``, those of every ``allOf`` part together) and take no others
        (no ``additionalProperties``): what a server reading it as typed fields ignores, a name
        misspelt (``auto_destory``) quietly left out. An object a schema declares no properties
        of is free-form."""
        schema = self._deref(schema)
        if isinstance(instance, list):
            items = schema.get("items")
            if not isinstance(items, Mapping):
                return []
            return [m for i, item in enumerate(instance) for m in self.undeclared(items, item, f"{at}/{i}")]
        if not isinstance(instance, dict):
            return []
        declared: dict[str, Any] = {}
        extra: Any = None
        parts = [schema]
        while parts:
            part = self._deref(parts.pop())
            declared.update(part.get("properties") or {})
            if part.get("additionalProperties") not in (None, False):
                extra = part["additionalProperties"]
            parts += list(part.get("allOf") or [])
        problems: list[str] = []
        for key, value in instance.items():
            where = f"{at}/{key}"
            if key in declared:
                problems += self.undeclared(declared[key], value, where)
            elif isinstance(extra, Mapping):
                problems += self.undeclared(extra, value, where)
            elif declared and extra is None:
                problems.append(f"at {where.lstrip('/')}: {key!r} is no property the description declares")
        return problems

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
            return [f"{method} {path}: no such operation in {self.title}"]
        op, path_values = found
        problems: list[str] = []
        declared = set(self._extra_query.get((op.method, op.template), ()))
        body_param = None
        for param in op.parameters:
            where, name = param.get("in"), str(param.get("name"))
            if where == "path":
                problems += self._primitive(param, path_values.get(name), f"path parameter {name}")
            elif where == "query":
                declared.add(name)
                given = query.get(name) or []
                if not given and param.get("required"):
                    problems.append(f"query parameter {name} is required")
                for value in given:
                    problems += self._primitive(param, value, f"query parameter {name}")
            elif where == "body":
                body_param = param
        problems += [f"query parameter {name} is not documented" for name in query if name not in declared]
        if body_param is None:
            if body:
                problems.append("the operation takes no body")
        elif not body:
            if body_param.get("required"):
                problems.append("a body is required")
        else:
            # a wrong content type does not stop the check: the body's own faults are reported too
            consumes = self._consumes(op)
            media = (content_type or "").split(";", 1)[0].strip().lower()
            is_json = "json" in media
            if media not in consumes and not (is_json and any("json" in c for c in consumes)):
                problems.append(f"the body must be {' or '.join(consumes)}, not {content_type!r}")
            schema = body_param.get("schema") or {}
            # a body the schema only calls a string, sent as other than JSON, is raw bytes (a tar
            # archive, a stream): there is nothing in it to parse
            if is_json or self._deref(schema).get("type") != "string":
                try:
                    payload = json.loads(body)
                except ValueError:
                    problems.append("the body is not JSON")
                else:
                    problems += [f"body {m}" for m in self.schema_errors(schema, payload)]
                    if self._closed_request_bodies:
                        problems += [f"body {m}" for m in self.undeclared(schema, payload)]
        return [f"request {op.method} {path}: {p}" for p in problems]

    def _consumes(self, op: Operation) -> list[str]:
        """The media types ``op`` takes a body in: its own ``consumes``, else the description's,
        else JSON."""
        declared = op.definition.get("consumes") or self.document.get("consumes") or ["application/json"]
        return [str(media).lower() for media in declared]

    def validate_response(
        self, method: str, path: str, status: int, body: bytes, content_type: str | None = None
    ) -> list[str]:
        """Violations of one response (empty when it is valid)."""
        found = self.find(method, path)
        if found is None:
            return []  # the request was already reported
        op = found[0]
        # YAML reads status keys as numbers, JSON as strings
        responses = {str(k): v for k, v in (op.definition.get("responses") or {}).items()}
        where = f"response {status} to {op.method} {path}"
        spec = responses.get(str(status)) or responses.get("default")
        if spec is None:
            return [f"{where}: status not documented (documented: {', '.join(sorted(responses))})"]
        schema = self._deref(spec).get("schema")
        if schema is None:
            return []
        if self._json_answers_only and (not body or content_type is None or "json" not in content_type):
            return []
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            return [f"{where}: the body is not JSON"]
        return [f"{where}: {m}" for m in self.schema_errors(schema, payload)]

    def _primitive(self, param: Mapping[str, Any], value: str | None, label: str) -> list[str]:
        if value is None:
            return [f"{label} is required"] if param.get("required") else []
        kind = str(param.get("type") or "string")
        number = _NUMBERS.get(kind)
        if (number is not None and number.fullmatch(value) is None) or (
            kind == "boolean" and value not in self._booleans
        ):
            return [f"{label} must be {kind}, got {value!r}"]
        enum = param.get("enum")
        # a boolean in an enum travels as JSON spells it (``true``), not as Python does
        if enum is not None and value not in [json.dumps(e) if isinstance(e, bool) else str(e) for e in enum]:
            return [f"{label} must be one of {enum}, got {value!r}"]
        return []


def _group(name: str) -> str:
    """A regex group name for a path parameter (``app_name`` stays, ``machine-id`` → ``machine_id``)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


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


@lru_cache(maxsize=8)
def _load(path: str) -> SwaggerDescription:
    return SwaggerDescription(read_document(path))


__all__ = ["Operation", "SwaggerDescription", "read_document"]
