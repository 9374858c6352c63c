"""The fakes' request checks cover the security schemes openapi-core leaves unchecked."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import flask
import pytest
import requests

from aiimpl_core.testing.fakeserver import OpenAPIFakeServer

_SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "oauth2 only", "version": "1"},
    "components": {
        "securitySchemes": {
            "OAuth2": {
                "type": "oauth2",
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": "https://auth.example/token",
                        "scopes": {"read": "read"},
                    }
                },
            },
            "OIDC": {"type": "openIdConnect", "openIdConnectUrl": "https://auth.example/.well-known"},
        }
    },
    "paths": {
        "/things": {
            "get": {
                "security": [{"OAuth2": ["read"]}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {}}}}},
            }
        },
        "/people": {
            "get": {
                "security": [{"OIDC": []}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {}}}}},
            }
        },
    },
}


@pytest.fixture
def fake(tmp_path: Path):
    spec = tmp_path / "oauth2.json"
    spec.write_text(json.dumps(_SPEC), encoding="utf-8")
    app = flask.Flask("oauth2-fake")
    app.add_url_rule("/things", "things", lambda: {"ok": True})
    app.add_url_rule("/people", "people", lambda: {"ok": True})
    with OpenAPIFakeServer(app, str(spec)) as server:
        yield server


@pytest.mark.parametrize("path", ["/things", "/people"])
def test_an_oauth2_or_openid_connect_operation_needs_a_bearer_token(fake, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # openapi-core's "Unsupported scheme type" would raise here
        assert requests.get(fake.url + path, headers={"Authorization": "Bearer t0k3n"}, timeout=5).ok
        fake.assert_clean()
        requests.get(fake.url + path, timeout=5)
        requests.get(fake.url + path, headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=5)
        requests.get(fake.url + path, headers={"Authorization": "Bearer "}, timeout=5)
    assert len(fake.violations) == 3, fake.violations
    assert all("Security" in v for v in fake.violations), fake.violations
