"""The OpenAPI description: valid, complete (every rule of the URL map), served publicly and printed
by ``aiimpl openapi``; generated from the same schemas the views use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from openapi_spec_validator import validate

from aiimpl_core.auth import is_public
from aiimpl_core.openapi import build_spec, described_rules, openapi_path
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

#: Every endpoint of the reference (issue 3), with its methods.
REFERENCE_OPERATIONS = {
    ("post", "/runner/result"),
    ("post", "/runner/progress"),
    ("get", "/runner/planning-context"),
    ("post", "/trigger/gap-fill"),
    ("post", "/api/token"),
    ("post", "/api/status"),
    ("post", "/api/step-report"),
    ("post", "/api/github/webhook"),
    ("post", "/api/auth"),
    ("get", "/api/jobs/{jobId}/steps"),
    ("get", "/api/issues"),
    ("get", "/api/blockers"),
    ("post", "/api/mappings"),
    ("get", "/api/mappings"),
    ("get", "/api/mappings/{teamKey}"),
    ("patch", "/api/mappings/{teamKey}"),
    ("delete", "/api/mappings/{teamKey}"),
    ("post", "/api/mappings/{teamKey}/sync-workflows"),
    ("get", "/api/runner-mode"),
    ("post", "/api/runner-mode"),
    ("get", "/api/sessions"),
    ("delete", "/api/sessions/{machineId}"),
    ("get", "/api/mappings/{teamKey}/secrets"),
    ("post", "/api/mappings/{teamKey}/secrets"),
    ("delete", "/api/mappings/{teamKey}/secrets/{name}"),
    ("get", "/api/global-secrets"),
    ("post", "/api/global-secrets"),
    ("delete", "/api/global-secrets/{name}"),
}


@pytest.fixture
def full_app(adm_full_app) -> Any:
    return adm_full_app


@pytest.fixture
def spec(full_app) -> dict[str, Any]:
    resp = full_app.test_client().get("/api/openapi.json")  # public: no session
    assert resp.status_code == 200
    return resp.get_json()


def test_the_document_is_valid_openapi_3(spec) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_every_rule_of_the_url_map_is_described(full_app, spec) -> None:
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    expected = set()
    for rule in described_rules(full_app):
        path, _ = openapi_path(rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            expected.add((method.lower(), path))
    assert expected == described
    assert REFERENCE_OPERATIONS <= described
    ui_and_static = [r.rule for r in full_app.url_map.iter_rules() if r.rule.startswith(("/ui", "/static"))]
    assert ui_and_static and not any(p.startswith(("/ui", "/static")) for p in spec["paths"])


def test_plugin_blueprints_are_described(full_app, spec) -> None:
    plugin_rules = [r for r in described_rules(full_app) if r.endpoint.split(".")[0] in ("jira", "linear")]
    for rule in plugin_rules:
        assert openapi_path(rule.rule)[0] in spec["paths"], rule.rule


def test_security_schemes_and_requirements(full_app, spec) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert {"adminSession", "runToken", "triggerSecret", "githubSignature", "nonce"} <= set(schemes)
    assert schemes["runToken"] == {
        **schemes["runToken"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert schemes["githubSignature"]["name"] == "X-Hub-Signature-256"
    ops = spec["paths"]
    assert ops["/runner/result"]["post"]["security"] == [{"runToken": []}]
    assert ops["/trigger/gap-fill"]["post"]["security"] == [{"triggerSecret": []}]
    assert ops["/api/github/webhook"]["post"]["security"] == [{"githubSignature": []}]
    assert ops["/api/token"]["post"]["security"] == [{"nonce": []}]
    assert ops["/api/auth"]["post"]["security"] == []
    for rule in described_rules(full_app):
        if not rule.rule.startswith("/api/") or is_public(full_app.view_functions[rule.endpoint]):
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = ops[openapi_path(rule.rule)[0]][method.lower()]
            assert op["security"] == [{"adminSession": []}], rule.rule
            assert "Unauthorized" in op["responses"]["401"]["description"], rule.rule


def _ref(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_error_responses_use_the_one_error_schema(spec) -> None:
    expectations = {
        ("/api/auth", "post"): {"400", "403"},
        ("/api/jobs/{jobId}/steps", "get"): {"401", "404"},
        ("/api/issues", "get"): {"401", "502"},
        ("/api/mappings", "post"): {"400", "401"},
        ("/api/mappings/{teamKey}", "patch"): {"400", "401", "404"},
        ("/api/mappings/{teamKey}", "delete"): {"401", "404"},
        ("/api/mappings/{teamKey}/sync-workflows", "post"): {"401", "404", "500"},
        ("/api/runner-mode", "post"): {"400", "401", "409"},
        ("/api/sessions", "get"): {"401", "500"},
        ("/api/sessions/{machineId}", "delete"): {"401", "404", "500", "503"},
        ("/api/mappings/{teamKey}/secrets", "post"): {"400", "401", "404", "500", "503"},
        ("/api/global-secrets/{name}", "delete"): {"401", "404", "500", "503"},
    }
    for (path, method), codes in expectations.items():
        responses = spec["paths"][path][method]["responses"]
        assert codes <= set(responses), (path, method)
        for code in codes:
            if (path, method, code) == ("/api/mappings/{teamKey}", "delete", "404"):
                continue  # {"deleted": false}, no error field
            schema = _ref(spec, responses[code]["content"]["application/json"]["schema"])
            assert schema["properties"]["error"]["type"] == "string", (path, method, code)
    deleted = _ref(
        spec,
        spec["paths"]["/api/mappings/{teamKey}"]["delete"]["responses"]["404"]["content"]["application/json"][
            "schema"
        ],
    )
    # no error field; the secrets' DELETE adds the optional name
    assert deleted["required"] == ["deleted"] and "error" not in deleted["properties"]


def test_request_bodies_come_from_the_views_schemas(spec) -> None:
    body = spec["paths"]["/api/mappings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    props = _ref(spec, body)["properties"]
    assert {
        "teamKey",
        "owner",
        "repo",
        "defaultBranch",
        "provider",
        "executionMode",
        "maxInProgressAiIssues",
        "ticketing",
        "extraEnv",
        "branchPrefix",
    } <= set(props)
    mode = spec["paths"]["/api/runner-mode"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert _ref(spec, mode)["properties"]["mode"]["enum"] == ["default", "gha", "fly", "local", "shadow"]


def test_aiimpl_openapi_prints_the_same_document(full_app, database_url, monkeypatch) -> None:
    from aiimpl_core.cli import _add_subcommands, cli

    _add_subcommands()
    monkeypatch.setenv("AIIMPL_DATABASE_URL", database_url)
    monkeypatch.setenv("AIIMPL_SECRET_KEY", TEST_SECRET_KEY)
    result = CliRunner().invoke(cli, ["openapi"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    validate(printed)
    with full_app.app_context():
        assert printed["paths"].keys() == build_spec(full_app)["paths"].keys()
