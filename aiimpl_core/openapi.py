"""The OpenAPI 3 description of the HTTP API, generated from the application itself.

Every rule of the URL map (except static files and the UI pages) becomes an operation. A view
describes itself in its docstring: a summary line, then YAML after ``---`` keyed by HTTP method
(as apispec reads it), naming the marshmallow schemas it parses and answers with — the same
classes the views use, so the description cannot drift from the code. Path parameters, the admin
security requirement (and its 401) and operation ids are added here, so a plugin blueprint without
YAML is still described.
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
import re
from typing import Any

import yaml
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from flask import Flask

from .auth import needs_admin_session

log = logging.getLogger(__name__)

OPENAPI_VERSION = "3.0.3"
_METHODS = ("get", "post", "put", "patch", "delete")
_RULE_VAR = re.compile(
    r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>"
)
_CONVERTER_TYPES = {"int": "integer", "float": "number", "uuid": "string", "path": "string"}

#: Modules whose schemas the views name in their YAML (imported so the names resolve).
SCHEMA_MODULES = ("aiimpl_core.schemas.common", "aiimpl_core.schemas.admin", "aiimpl_core.schemas.runner")

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "adminSession": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin session token returned by `POST /api/auth`.",
    },
    "runToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A run token (HS256 JWT) whose audience names the endpoint: `runner:result`, "
        "`runner:progress` or `runner:planning-context`.",
    },
    "triggerSecret": {
        "type": "http",
        "scheme": "bearer",
        "description": "The shared trigger secret (`AIIMPL_TRIGGER_SECRET`).",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The metrics scrape token (`AIIMPL_METRICS_TOKEN`).",
    },
    "githubSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Hub-Signature-256",
        "description": "`sha256=` and the HMAC-SHA256 of the raw body with `AIIMPL_GITHUB_WEBHOOK_SECRET`.",
    },
    "nonce": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Aiimpl-Job-Nonce",
        "description": "The job's one-time nonce. It is sent as `nonce` in the JSON body (OpenAPI has "
        "no body-borne scheme); the header named here is not read.",
    },
}

UNAUTHORIZED_RESPONSE = {
    "description": "Unauthorized: no valid admin session",
    "headers": {"WWW-Authenticate": {"description": 'The challenge: `Bearer realm="aiimpl"`',
                                     "schema": {"type": "string"}}},
    "content": {"application/json": {"schema": "ErrorSchema"}},
}
GENERIC_ERROR_RESPONSE = {
    "description": "An error (`error` holds the message)",
    "content": {"application/json": {"schema": "ErrorSchema"}},
}


def described_rules(app: Flask) -> list[Any]:
    """The URL rules the document describes: all but static files and the UI pages."""
    out = []
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint == "static" or endpoint.endswith(".static") or endpoint.split(".")[0] == "ui":
            continue
        out.append(rule)
    return sorted(out, key=lambda r: (r.rule, r.endpoint))


def openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """``/api/jobs/<int:id>`` → ``/api/jobs/{id}`` and its path parameters."""
    params: list[dict[str, Any]] = []

    def repl(match: re.Match[str]) -> str:
        name = match.group("name")
        kind = _CONVERTER_TYPES.get(match.group("converter") or "", "string")
        params.append({"in": "path", "name": name, "required": True, "schema": {"type": kind}})
        return "{" + name + "}"

    return _RULE_VAR.sub(repl, rule), params


def _summary(doc: str | None, fallback: str) -> str:
    for line in (doc or "").strip().splitlines():
        line = line.strip()
        if line and line != "---":
            return line.rstrip(".")
        break
    return fallback


def _operation(
    app: Flask, rule: Any, method: str, documented: dict[str, Any], path_params: list[dict[str, Any]]
) -> dict[str, Any]:
    view = app.view_functions[rule.endpoint]
    op = copy.deepcopy(documented.get(method) or {})
    op.setdefault("summary", _summary(view.__doc__, rule.endpoint))
    op.setdefault("operationId", f"{rule.endpoint.replace('.', '_')}_{method}")
    blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else "core"
    op.setdefault("tags", [blueprint])
    # YAML reads `200:` as an integer; the document's keys are strings
    responses = op["responses"] = {str(code): value for code, value in (op.get("responses") or {}).items()}
    if not responses:
        responses["200"] = {"description": "OK"}
    # what the admin guard protects (aiimpl_core.api)
    guarded = needs_admin_session(rule.rule, view)
    if guarded:
        op.setdefault("security", [{"adminSession": []}])
        responses.setdefault("401", copy.deepcopy(UNAUTHORIZED_RESPONSE))
    elif "security" not in op:
        op["security"] = []
    if not any(code.startswith(("4", "5")) or code == "default" for code in responses):
        responses["default"] = copy.deepcopy(GENERIC_ERROR_RESPONSE)
    declared = {(p.get("in"), p.get("name")) for p in op.get("parameters", []) if isinstance(p, dict)}
    missing = [p for p in path_params if ("path", p["name"]) not in declared]
    if missing:
        op["parameters"] = copy.deepcopy(missing) + list(op.get("parameters", []))
    return op


@functools.lru_cache(maxsize=1024)
def _documented(doc: str) -> dict[str, Any]:
    """The operations a view's docstring describes (its YAML after ``---``), read once per text:
    reading YAML took most of the time of building the document, for each app a process builds
    (the tests build hundreds). Not to be changed: :func:`_operation` copies what it takes."""
    return load_operations_from_docstring(doc) or {}


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (its own and its plugins' endpoints) as a dict."""
    from . import __version__

    for module in SCHEMA_MODULES:
        importlib.import_module(module)
    spec = APISpec(
        title="AI-Implement",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": "The orchestrator's HTTP API: runner callbacks, session endpoints, the "
            "gap-fill trigger, webhooks, and the admin API behind the admin UI. Admin endpoints need "
            '`Authorization: Bearer <token>` from `POST /api/auth`; errors are `{"error": ...}`.'
        },
    )
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    from .schemas.common import ErrorSchema

    spec.components.schema("ErrorSchema", schema=ErrorSchema)
    for rule in described_rules(app):
        view = app.view_functions[rule.endpoint]
        try:
            documented = _documented(view.__doc__ or "")
        except yaml.YAMLError as exc:  # one plugin's bad docstring must not hide the others
            log.warning("OpenAPI: the docstring of %s is not valid YAML: %s", rule.endpoint, exc)
            documented = {}
        path, params = openapi_path(rule.rule)
        methods = [m.lower() for m in sorted(rule.methods or ()) if m.lower() in _METHODS]
        operations = {m: _operation(app, rule, m, documented, params) for m in methods}
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def get_spec(app: Flask) -> dict[str, Any]:
    """The document, built once per application."""
    cached = app.extensions.get("aiimpl_openapi")
    if cached is None:
        cached = app.extensions["aiimpl_openapi"] = build_spec(app)
    return cached
