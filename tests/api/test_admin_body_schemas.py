"""The OpenAPI description of the admin request bodies says what the endpoints take: a mapping update
needs only ``teamKey``, and fields an endpoint does not read are ignored, not refused."""

from __future__ import annotations

from typing import Any

import pytest

BASE: dict[str, Any] = {
    "teamKey": "ENG",
    "owner": "acme",
    "repo": "api",
    "defaultBranch": "main",
    "ticketing": {"provider": "fake-tracker"},
}


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def _components(client: Any) -> dict[str, Any]:
    return client.get("/api/openapi.json").get_json()["components"]["schemas"]


def test_a_mapping_update_needs_only_its_team_key(client, admin_headers) -> None:
    assert client.post("/api/mappings", json=BASE, headers=admin_headers).status_code == 201
    updated = client.post("/api/mappings", json={"teamKey": "ENG", "repo": "web"}, headers=admin_headers)
    assert updated.status_code == 200 and updated.get_json()["owner"] == "acme"

    schemas = _components(client)
    given = schemas["MappingInput"]
    assert given["required"] == ["teamKey"]
    for field in ("owner", "repo", "defaultBranch"):
        assert given["properties"][field]["description"] == "required unless the mapping has one"
    # a stored mapping always has them
    assert set(schemas["Mapping"]["required"]) == {"teamKey", "owner", "repo"}


@pytest.mark.parametrize(
    "method,path,body,status",
    [
        ("POST", "/api/mappings", {**BASE, "createdAt": "2020-01-01T00:00:00Z", "note": 1}, 201),
        ("PATCH", "/api/mappings/ENG", {"paused": True, "repo": "web"}, 200),
        ("POST", "/api/mappings/ENG/secrets", {"name": "TOKEN", "value": "v", "scope": "x"}, 200),
        ("POST", "/api/global-secrets", {"name": "NPM_TOKEN", "value": "v", "team": "ENG"}, 200),
    ],
)
def test_fields_an_endpoint_does_not_read_are_ignored_as_documented(
    client, admin_headers, adm_mapping, method, path, body, status
) -> None:
    if method == "PATCH" or "secrets" in path:
        adm_mapping("ENG")
    resp = client.open(path, method=method, json=body, headers=admin_headers)
    assert resp.status_code == status, resp.get_json()
    schemas = _components(client)
    for name in ("MappingInput", "MappingPatch", "SecretInput"):
        assert schemas[name].get("additionalProperties") is not False, name
    assert schemas["Mapping"]["additionalProperties"] is False  # an answer has exactly its fields
