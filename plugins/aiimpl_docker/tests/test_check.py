"""``check`` of the local-docker backend: the engine answers, and the session image is on it.

Against the real engine when ``DOCKER_HOST`` names one (skipped otherwise, like the other engine
tests), against the fake engine for exact answers and call counts, and against an engine that is not
there (always run): a failed line with the reason, never a traceback. Read-only: nothing is pulled,
created or started.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiimpl_core.services.checks import FAILED, run_checks
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.types import CheckResult

import aiimpl_docker.plugin
from aiimpl_docker.backend import LocalDockerBackend

from .conftest import BUSYBOX, ours
from .fake_engine import FakeEngine

SESSION_IMAGE = "localhost/aiimpl-session:test"
SECRET = "team-secret-value-9d1e"
NOT_CHECKED = CheckResult(f"image {SESSION_IMAGE}", False, "not checked: the Docker engine does not answer")


def missing_detail(image: str) -> str:
    return (
        f"not on the engine: build it (docker build -f docker/session.Dockerfile -t {image} .) or pull it, "
        "or set AIIMPL_DOCKER_IMAGE; see docs/session-image.md"
    )


# -- the real engine ------------------------------------------------------------------------------


def test_check_real_engine_all_ok(engine: Any, make_backend: Any) -> None:
    results = list(make_backend().check([sample_mapping()]))
    version = engine.version()
    assert [r.name for r in results] == ["engine", f"image {BUSYBOX}"]
    assert all(r.ok for r in results), results
    assert f" {version['Version']}, API {version['ApiVersion']}" in results[0].detail
    assert results[1].detail == f"present ({engine.images.get(BUSYBOX).short_id})"
    assert ours(engine) == []  # nothing started


def test_check_real_engine_image_missing(engine: Any, make_backend: Any) -> None:
    absent = f"localhost/aiimpl-absent-{uuid.uuid4().hex[:8]}:none"
    [eng, image] = make_backend(AIIMPL_DOCKER_IMAGE=absent).check([])
    assert eng.ok
    assert image == CheckResult(f"image {absent}", False, missing_detail(absent))
    assert absent not in {t for i in engine.images.list() for t in i.tags}  # not pulled


# -- no engine there (always runs) ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"])
def test_check_unreachable_engine_is_a_failed_line(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", host)
    backend = LocalDockerBackend(make_context({"AIIMPL_DOCKER_IMAGE": SESSION_IMAGE}))
    assert backend.is_configured()
    [eng, image] = backend.check([sample_mapping()])
    assert eng.name == "engine" and not eng.ok
    assert eng.detail.startswith("local-docker: cannot reach the Docker engine: ")
    assert eng.detail.endswith(f"(DOCKER_HOST={host})")
    assert "Traceback" not in eng.detail
    assert image == NOT_CHECKED


# -- the fake engine: exact answers, call counts ----------------------------------------------------


@pytest.fixture
def backend(fake_engine: FakeEngine) -> LocalDockerBackend:
    return LocalDockerBackend(
        make_context(
            {"AIIMPL_DOCKER_IMAGE": SESSION_IMAGE, "AIIMPL_DOCKER_NETWORK": "host"},
            secret=lambda name, scope=None: SECRET,
        )
    )


def test_check_fake_engine_all_ok_in_bounded_calls(
    fake_engine: FakeEngine, backend: LocalDockerBackend
) -> None:
    fake_engine.images[SESSION_IMAGE] = "sha256:" + "ab12" * 16
    results = list(backend.check([sample_mapping(), sample_mapping(team_key="OPS")]))
    assert results == [
        CheckResult("engine", True, "Docker Engine 26.0.0, API 1.45"),
        CheckResult(f"image {SESSION_IMAGE}", True, "present (sha256:ab12ab12ab12)"),
    ]
    # the SDK's API-version probe, the version read, one image read; nothing else, whatever the mappings
    assert fake_engine.requests == [
        ("GET", "/version"),
        ("GET", "/v1.45/version"),
        ("GET", f"/v1.45/images/{SESSION_IMAGE}/json"),
    ]


def test_check_fake_engine_image_missing(fake_engine: FakeEngine, backend: LocalDockerBackend) -> None:
    [eng, image] = backend.check([])
    assert eng.ok
    assert image == CheckResult(f"image {SESSION_IMAGE}", False, missing_detail(SESSION_IMAGE))
    assert [m for m, _ in fake_engine.requests] == ["GET", "GET", "GET"]


def test_check_fake_engine_image_read_fails(fake_engine: FakeEngine, backend: LocalDockerBackend) -> None:
    fake_engine.fail_next("GET", "/json", 500, "storage is locked")
    [_, image] = backend.check([])
    assert not image.ok
    assert image.detail.startswith(f"local-docker: reading image {SESSION_IMAGE} failed: ")
    assert "storage is locked" in image.detail


def test_check_fake_engine_version_refused(fake_engine: FakeEngine, backend: LocalDockerBackend) -> None:
    backend.docker()  # connected; the version read itself fails
    fake_engine.fail_next("GET", "/v1.45/version", 500, "engine is shutting down")
    [eng, image] = backend.check([])
    assert not eng.ok and "reading the engine's version failed" in eng.detail
    assert "engine is shutting down" in eng.detail
    assert image == NOT_CHECKED


def test_check_details_carry_no_secret(fake_engine: FakeEngine, backend: LocalDockerBackend) -> None:
    fake_engine.images[SESSION_IMAGE] = "sha256:" + "0" * 64
    for result in backend.check([sample_mapping(extra_env={"TOKEN": SECRET})]):
        assert SECRET not in result.detail


# -- through ``aiimpl check`` (no engine there) ---------------------------------------------------


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    return [aiimpl_docker.plugin]


@pytest.fixture
def aiimpl_config(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    return {"AIIMPL_DOCKER_IMAGE": SESSION_IMAGE}


def test_check_rows_in_the_report_without_an_engine(app: Any) -> None:
    rows = [r for r in run_checks() if r.provider == "local-docker"]
    assert [(r.name, r.status) for r in rows] == [("engine", FAILED), (f"image {SESSION_IMAGE}", FAILED)]


@pytest.mark.parametrize(
    ("url", "network", "failed"),
    [
        ("http://127.0.0.1:8000", None, "127.0.0.1"),
        ("http://localhost:8000", "bridge", "localhost"),
        ("http://[::1]:8000", "", "::1"),
        ("http://127.0.0.1:8000", "host", None),  # the containers share the host's network
        ("https://ai.example.com", None, None),
        ("http://10.0.2.2:8000", None, None),
    ],
)
def test_check_says_when_the_containers_cannot_reach_the_orchestrator(
    fake_engine: FakeEngine, url: str, network: str | None, failed: str | None
) -> None:
    fake_engine.images[SESSION_IMAGE] = "sha256:" + "ab12" * 16
    cfg = {"AIIMPL_DOCKER_IMAGE": SESSION_IMAGE, "AIIMPL_PUBLIC_URL": url, "AIIMPL_DOCKER_NETWORK": network}
    backend = LocalDockerBackend(make_context({k: v for k, v in cfg.items() if v is not None}))
    assert [r.name for r in backend.check([])] == ["engine", f"image {SESSION_IMAGE}"]  # no mapping runs here
    rows = [r for r in backend.check([sample_mapping()]) if r.name == "orchestrator URL"]
    if failed is None:
        assert rows == []
    else:
        assert rows == [CheckResult(
            "orchestrator URL", False,
            f"AIIMPL_PUBLIC_URL names {failed}, which inside a container is the container itself: set "
            "AIIMPL_DOCKER_NETWORK=host, or AIIMPL_PUBLIC_URL to an address of this host the containers "
            "reach",
        )]
