"""The Swagger 2.0 validator finds what Fly's description forbids (so a clean fake means something)."""

from __future__ import annotations

import json

import pytest

from aiimpl_fly.testing import SwaggerDescription, fly_spec_path
from aiimpl_fly.testing.fake_fly import fly_description


@pytest.fixture(scope="module")
def fly() -> SwaggerDescription:
    return SwaggerDescription.from_file(fly_spec_path())


def test_finds_operations_under_the_base_path(fly: SwaggerDescription) -> None:
    op, values = fly.find("POST", "/v1/apps/sessions/machines/abc123/stop") or (None, None)
    assert op is not None and op.template == "/apps/{app_name}/machines/{machine_id}/stop"
    assert values == {"app_name": "sessions", "machine_id": "abc123"}
    assert fly.find("PATCH", "/v1/apps/sessions/machines") is None


def test_valid_create_request_passes(fly: SwaggerDescription) -> None:
    body = {
        "region": "ams",
        "config": {
            "image": "img:1",
            "env": {"A": "b"},
            "guest": {"cpus": 2, "memory_mb": 512},
            "restart": {"policy": "no"},
            "auto_destroy": True,
            "metadata": {"aiimpl_job": "1"},
        },
    }
    assert (
        fly.validate_request("POST", "/v1/apps/a/machines", {}, json.dumps(body).encode(), "application/json")
        == []
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"config": {"guest": {"cpus": "2"}}}, "config/guest/cpus"),
        ({"config": {"restart": {"policy": "sometimes"}}}, "config/restart/policy"),
        ({"config": {"env": {"A": 1}}}, "config/env/A"),
        ({"config": {"metadata": {"job": 7}}}, "config/metadata/job"),
        ({"config": {"auto_destroy": "yes"}}, "config/auto_destroy"),
    ],
)
def test_bad_create_bodies_are_reported(fly: SwaggerDescription, body: dict, needle: str) -> None:
    problems = fly.validate_request(
        "POST", "/v1/apps/a/machines", {}, json.dumps(body).encode(), "application/json"
    )
    assert any(needle in p for p in problems), problems


def test_bad_parameters_and_paths_are_reported(fly: SwaggerDescription) -> None:
    assert fly.validate_request("GET", "/v1/apps/a/machines", {"include_deleted": ["yes"]}, b"", None)
    assert fly.validate_request("GET", "/v1/apps/a/machines", {"limit": ["5"]}, b"", None)
    assert fly.validate_request("GET", "/v1/apps/a/gadgets", {}, b"", None)
    assert fly.validate_request("POST", "/v1/apps/a/machines", {}, b"", None)  # body required
    assert fly.validate_request("POST", "/v1/apps/a/machines", {}, b"{", "application/json")
    assert fly.validate_request("GET", "/v1/apps/a/machines", {"include_deleted": ["true"]}, b"", None) == []


def test_responses_are_checked(fly: SwaggerDescription) -> None:
    good = json.dumps([{"id": "m1", "state": "started", "config": {"image": "i"}}]).encode()
    assert fly.validate_response("GET", "/v1/apps/a/machines", 200, good) == []
    bad = json.dumps([{"id": 1}]).encode()
    assert any("0/id" in p for p in fly.validate_response("GET", "/v1/apps/a/machines", 200, bad))
    assert fly.validate_response("GET", "/v1/apps/a/machines", 200, b'{"machines": []}')
    assert fly.validate_response("GET", "/v1/apps/a/machines", 201, b"[]")  # undocumented status


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"auto_destory": True}, "at config/auto_destory: 'auto_destory' is no property the description"),
        ({"restart": {"polciy": "no"}}, "at config/restart/polciy: 'polciy' is no property"),
        ({"guest": {"memroy_mb": 512}}, "at config/guest/memroy_mb: 'memroy_mb' is no property"),
        ({"stop_config": {"timeout": "forever"}}, "at config/stop_config/timeout: 'forever' does not match"),
    ],
)
def test_the_fakes_description_refuses_a_misspelt_field_and_a_duration_fly_cannot_read(
    config: dict, said: str
) -> None:
    """Fly's decoder ignores a property it does not know: auto_destory would quietly leave machines
    behind, and the fake took it (the description declares no additionalProperties)."""
    body = json.dumps({"config": {"image": "img:1", **config}}).encode()
    problems = fly_description().validate_request("POST", "/v1/apps/a/machines", {}, body, "application/json")
    assert any(said in p for p in problems), problems
    # what the backend sends, maps (env, metadata) free-form, passes
    good = {"config": {"image": "i", "env": {"ANY_NAME": "x"}, "metadata": {"aiimpl_job": "1"},
                       "stop_config": {"signal": "SIGTERM", "timeout": "2m30s"}, "auto_destroy": True}}
    assert fly_description().validate_request(
        "POST", "/v1/apps/a/machines", {}, json.dumps(good).encode(), "application/json") == []
