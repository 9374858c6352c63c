"""Answers match the OpenAPI description the app serves: each body fits the schema of its status, and
an answer's schema lists exactly its fields (``additionalProperties: false``), so a field the
description leaves out is a mismatch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft7Validator

TRIGGER_SECRET = "trigger-secret-for-tests"


@pytest.fixture
def aiimpl_plugins(adm_tracker, adm_fly) -> list[object]:
    from aiimpl_core.testing.fakes import FakeRunner

    runner = FakeRunner(sessions=True, secrets=True, gap_fill=True)
    return [adm_tracker.plugin, runner.plugin, adm_fly.plugin]


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_TRIGGER_SECRET": TRIGGER_SECRET}


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0's schema dialect as JSON Schema: ``nullable`` becomes a null type, and component
    references point into ``definitions``."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": node["$ref"].replace("#/components/schemas/", "#/definitions/")}
    node = copy.deepcopy(node)
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return {key: _json_schema(value) for key, value in node.items()}


def assert_documented(client: Any, method: str, path: str, resp: Any) -> None:
    """``resp`` has a status the operation lists, and its body fits that status's schema."""
    spec = client.get("/api/openapi.json").get_json()
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(resp.status_code) in responses, (method, path, resp.status_code)
    schema = responses[str(resp.status_code)]["content"]["application/json"]["schema"]
    definitions = {name: _json_schema(s) for name, s in spec["components"]["schemas"].items()}
    validator = Draft7Validator({**_json_schema(schema), "definitions": definitions})
    errors = [error.message for error in validator.iter_errors(resp.get_json())]
    assert errors == [], (method, path, resp.get_json())


def test_already_running_fits_the_gap_fill_error_schema(client, adm_mapping) -> None:
    adm_mapping("ENG")
    headers = {"Authorization": f"Bearer {TRIGGER_SECRET}"}
    first = client.post("/trigger/gap-fill", json={"issueKey": "ENG-1", "prNumber": 5}, headers=headers)
    assert first.status_code == 202, first.get_json()
    again = client.post("/trigger/gap-fill", json={"issueKey": "ENG-1", "prNumber": 5}, headers=headers)
    assert again.status_code == 409
    assert again.get_json() == {"error": "already_running", "jobId": first.get_json()["jobId"]}
    assert_documented(client, "POST", "/trigger/gap-fill", again)


@pytest.mark.parametrize(
    "collection,path",
    [
        ("/api/global-secrets", "/api/global-secrets/{name}"),
        ("/api/mappings/ENG/secrets", "/api/mappings/{teamKey}/secrets/{name}"),
    ],
)
def test_a_deleted_secret_fits_the_deleted_schema(
    client, admin_headers, adm_mapping, collection, path
) -> None:
    adm_mapping("ENG")
    saved = client.post(collection, json={"name": "NPM_TOKEN", "value": "v"}, headers=admin_headers)
    assert saved.status_code == 200, saved.get_json()
    resp = client.delete(f"{collection}/NPM_TOKEN", headers=admin_headers)
    assert resp.status_code == 200
    assert resp.get_json() == {"deleted": True, "name": "NPM_TOKEN"}
    assert_documented(client, "DELETE", path, resp)


def test_a_deleted_mapping_fits_the_deleted_schema(client, admin_headers, adm_mapping) -> None:
    adm_mapping("ENG")
    deleted = client.delete("/api/mappings/ENG", headers=admin_headers)
    assert deleted.get_json() == {"deleted": True}
    assert_documented(client, "DELETE", "/api/mappings/{teamKey}", deleted)
    missing = client.delete("/api/mappings/ENG", headers=admin_headers)
    assert missing.status_code == 404 and missing.get_json() == {"deleted": False}
    assert_documented(client, "DELETE", "/api/mappings/{teamKey}", missing)
