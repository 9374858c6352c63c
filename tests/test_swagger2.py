"""The Swagger 2.0 checker of the test kit, on the Docker Engine API's description: a body is
checked in the media types its operation consumes, and a raw body (a tar archive) is not parsed as
JSON."""

from __future__ import annotations

import json
import os

import pytest

from aiimpl_core.testing.pytest_plugin import specs_dir
from aiimpl_core.testing.swagger2 import SwaggerDescription, read_document

ARCHIVE = "/v1.56/containers/abc/archive"
CREATE = "/v1.56/containers/create"


@pytest.fixture(scope="module")
def engine() -> SwaggerDescription:
    return SwaggerDescription(read_document(os.path.join(specs_dir(), "docker", "swagger.yaml")))


def test_a_tar_archive_sent_as_the_operation_consumes_passes(engine: SwaggerDescription) -> None:
    tar = b"ustar\x00" + bytes(range(256))  # not JSON, nor text
    for media in ("application/x-tar", "application/octet-stream"):
        assert engine.validate_request("PUT", ARCHIVE, {"path": ["/work"]}, tar, media) == []


def test_a_body_in_a_media_type_the_operation_does_not_consume_is_reported_once(
    engine: SwaggerDescription,
) -> None:
    problems = engine.validate_request("PUT", ARCHIVE, {"path": ["/work"]}, b"\x00tar", "application/json")
    assert problems == [
        f"request PUT {ARCHIVE}: the body must be application/x-tar or application/octet-stream,"
        " not 'application/json'",
        f"request PUT {ARCHIVE}: the body is not JSON",
    ]
    assert engine.validate_request("PUT", ARCHIVE, {"path": ["/work"]}, b"\x00tar", None) == [
        f"request PUT {ARCHIVE}: the body must be application/x-tar or application/octet-stream, not None"
    ]
    assert engine.validate_request("PUT", ARCHIVE, {"path": ["/work"]}, b"", "application/x-tar") == [
        f"request PUT {ARCHIVE}: a body is required"
    ]


def test_a_json_body_is_still_checked_against_its_schema(engine: SwaggerDescription) -> None:
    good = json.dumps({"Image": "alpine", "Cmd": ["true"]}).encode()
    assert engine.validate_request("POST", CREATE, {}, good, "application/json") == []
    assert engine.validate_request("POST", CREATE, {}, good, "application/json; charset=utf-8") == []
    bad = json.dumps({"Image": 7}).encode()
    [problem] = engine.validate_request("POST", CREATE, {}, bad, "application/json")
    assert "body at Image: 7 is not of type 'string'" in problem
    # sent as another type the operation consumes, the body is still read as its schema says
    [problem] = engine.validate_request("POST", CREATE, {}, bad, "application/octet-stream")
    assert "body at Image" in problem
    assert engine.validate_request("POST", CREATE, {}, good, "text/html") == [
        f"request POST {CREATE}: the body must be application/json or application/octet-stream,"
        " not 'text/html'"
    ]


def test_properties_a_schema_does_not_declare_are_reported_when_asked() -> None:
    """A server decoding typed fields ignores a name misspelt: the body passed the schema (no
    additionalProperties) with the setting quietly lost. allOf parts declare together; a map
    (additionalProperties: a schema) and an object that declares nothing are free-form."""
    document = read_document(os.path.join(specs_dir(), "docker", "swagger.yaml"))
    closed = SwaggerDescription(document, closed_request_bodies=True)
    body = {"Image": "alpine", "Labels": {"any.label": "x"}, "Env": ["A=b"],
            "HostConfig": {"NetworkMode": "host", "NanoCpus": 1, "Binds": ["/a:/b"]},
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {"Aliases": ["x"]}}}}
    assert closed.validate_request("POST", CREATE, {}, json.dumps(body).encode(), "application/json") == []
    body["HostConfig"]["NanoCPUs"] = 1
    body["NetworkingConfig"]["host"] = None  # (what the SDK sends given `network` alone)
    body["NetworkingConfig"]["EndpointsConfig"]["mynet"]["Alias"] = "y"
    assert closed.validate_request("POST", CREATE, {}, json.dumps(body).encode(), "application/json") == [
        f"request POST {CREATE}: body at HostConfig/NanoCPUs: 'NanoCPUs' is no property the description "
        "declares",
        f"request POST {CREATE}: body at NetworkingConfig/EndpointsConfig/mynet/Alias: 'Alias' is no "
        "property the description declares",
        f"request POST {CREATE}: body at NetworkingConfig/host: 'host' is no property the description "
        "declares",
    ]
    # not asked: as before
    assert SwaggerDescription(document).validate_request(
        "POST", CREATE, {}, json.dumps(body).encode(), "application/json") == []
