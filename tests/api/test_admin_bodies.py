"""No request body of any shape gives an admin endpoint a 500: not JSON, the wrong JSON type, too
deeply nested, or larger than the server accepts — each answers ``400 Invalid request body``."""

from __future__ import annotations

from typing import Any

import pytest

ENDPOINTS = [
    ("POST", "/api/mappings"),
    ("PATCH", "/api/mappings/ENG"),
    ("POST", "/api/runner-mode"),
    ("POST", "/api/mappings/ENG/secrets"),
    ("POST", "/api/global-secrets"),
    ("POST", "/api/auth"),
]

BODIES = {
    "empty": b"",
    "not JSON": b"{'teamKey': 'ENG'}",
    "not UTF-8": b"\xff\xfe{}",
    "array": b"[]",
    "string": b'"ENG"',
    "number": b"42",
    "null": b"null",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "too large": b'{"teamKey": "' + b"x" * (3 * 1024 * 1024) + b'"}',
}


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


@pytest.mark.parametrize("method,path", ENDPOINTS)
@pytest.mark.parametrize("kind", list(BODIES))
def test_any_body_shape_is_a_400(client, admin_headers, adm_mapping, method, path, kind) -> None:
    adm_mapping("ENG")
    resp: Any = client.open(
        path, method=method, data=BODIES[kind], headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert (resp.status_code, resp.get_json()) == (400, {"error": "Invalid request body"}), kind
