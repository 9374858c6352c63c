"""``check`` of the fly-machines backend: the app exists and the token reads it; the image is set.

Read-only against the fake Machines API (its ``GET /apps/{app_name}`` is checked against Fly's
description like every other exchange): one call per check, never a machine created or stopped.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiimpl_core.services.checks import FAILED, OK, run_checks
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.testing.fakes import add_mapping
from aiimpl_core.types import CheckResult

from aiimpl_fly.backend import FlyMachinesBackend
from aiimpl_fly.testing import FakeFly

from .conftest import APP, TOKEN

IMAGE = "registry.fly.io/aiimpl-session:v1"


def calls(fly: FakeFly) -> list[str]:
    return [f"{r.method} {r.path}" for r in fly.server.requests]


def no_secret(results: list[CheckResult]) -> None:
    for result in results:
        assert TOKEN not in result.detail and TOKEN not in result.name, result


def make(fly_config: dict[str, Any], **overrides: str | None) -> FlyMachinesBackend:
    cfg = {**fly_config, **overrides}
    return FlyMachinesBackend(make_context({k: v for k, v in cfg.items() if v is not None}))


def test_check_all_ok(fake_fly: FakeFly, backend: FlyMachinesBackend) -> None:
    results = list(backend.check([sample_mapping(execution_mode="fly-machines")]))
    assert results == [
        CheckResult(f"app {APP}", True, "the token reads the app (organization acme, status deployed)"),
        CheckResult(
            f"image {IMAGE}", True, "set by AIIMPL_FLY_IMAGE; Fly pulls it when a machine is created"
        ),
    ]
    assert calls(fake_fly) == [f"GET /v1/apps/{APP}"]  # one call, nothing started or created
    assert fake_fly.machines == {}
    no_secret(results)


def test_check_without_mappings_still_checks_the_app(fake_fly: FakeFly, backend: FlyMachinesBackend) -> None:
    assert [r.ok for r in backend.check([])] == [True, True]
    assert len(fake_fly.server.requests) == 1


def test_check_unknown_app(fake_fly: FakeFly, fly_config: dict[str, Any]) -> None:
    results = list(make(fly_config, AIIMPL_FLY_APP="no-such-app").check([]))
    assert results[0] == CheckResult(
        "app no-such-app",
        False,
        "Fly knows no app no-such-app for this token: create it (fly apps create) or check AIIMPL_FLY_APP",
    )
    assert calls(fake_fly) == ["GET /v1/apps/no-such-app"]
    no_secret(results)


def test_check_refused_token(fake_fly: FakeFly, fly_config: dict[str, Any]) -> None:
    results = list(make(fly_config, AIIMPL_FLY_API_TOKEN="wrong-token-77").check([]))
    assert results[0] == CheckResult(
        f"app {APP}", False, "Fly refused the token (HTTP 401): You must be authenticated to view this."
    )
    assert results[1].ok  # the image setting does not depend on Fly's answer
    assert len(fake_fly.server.requests) == 1
    assert all("wrong-token-77" not in r.detail for r in results)


def test_check_forbidden(fake_fly: FakeFly, backend: FlyMachinesBackend) -> None:
    fake_fly.fail_next("GET", f"/apps/{APP}", 403, "token lacks access to this app")
    [app, _] = backend.check([])
    assert app == CheckResult(
        f"app {APP}", False, "Fly refused the token (HTTP 403): token lacks access to this app"
    )
    assert len(fake_fly.server.requests) == 1


def test_check_other_remote_error_is_a_failed_line(fake_fly: FakeFly, backend: FlyMachinesBackend) -> None:
    fake_fly.fail_next("GET", f"/apps/{APP}", 400, "bad request")
    [app, _] = backend.check([])
    assert not app.ok and "HTTP 400" in app.detail and "bad request" in app.detail
    no_secret([app])


def test_check_unreachable_api(fly_config: dict[str, Any]) -> None:
    results = list(make(fly_config, AIIMPL_FLY_API_URL="http://127.0.0.1:1/v1").check([]))
    assert not results[0].ok and "ConnectionError" in results[0].detail
    no_secret(results)


@pytest.mark.parametrize(("value", "said"), [
    (None, "is not set"),
    # as the orchestrator gives the variable unset: its default (the line passed, "set by
    # AIIMPL_FLY_IMAGE", and the first machine failed to pull it)
    ("registry.fly.io/aiimpl-session:latest", "is its default, the registry of app aiimpl-session"),
], ids=["none", "default"])
def test_check_image_not_set(
    fake_fly: FakeFly, fly_config: dict[str, Any], value: str | None, said: str
) -> None:
    [app, image] = make(fly_config, AIIMPL_FLY_IMAGE=value).check([])
    assert app.ok
    assert image == CheckResult(
        "image registry.fly.io/aiimpl-session:latest",
        False,
        f"AIIMPL_FLY_IMAGE {said}: push the session image to the app's registry "
        f"(registry.fly.io/{APP}:session) and set AIIMPL_FLY_IMAGE (docs/session-image.md)",
    )


def test_check_the_default_image_is_the_registry_of_an_app_of_that_name(
    fake_fly: FakeFly, fly_config: dict[str, Any]
) -> None:
    backend = make(fly_config, AIIMPL_FLY_IMAGE="registry.fly.io/aiimpl-session:latest",
                   AIIMPL_FLY_APP="aiimpl-session")
    [image] = [r for r in backend.check([]) if r.name.startswith("image ")]
    assert image.ok


@pytest.mark.parametrize("value", ["Registry.fly.io/My App:v1", "https://registry.fly.io/x:v1", "x:"])
def test_check_image_not_a_reference(fake_fly: FakeFly, fly_config: dict[str, Any], value: str) -> None:
    [_, image] = make(fly_config, AIIMPL_FLY_IMAGE=value).check([])
    assert image == CheckResult(
        f"image {value}", False, "AIIMPL_FLY_IMAGE is not an image reference ([registry/]name[:tag])"
    )


@pytest.mark.parametrize(
    "value", ["registry.fly.io/aiimpl-sessions:session", "localhost:5000/a/b_c:1.0", f"x/y@sha256:{'a' * 64}"]
)
def test_check_image_references_accepted(fake_fly: FakeFly, fly_config: dict[str, Any], value: str) -> None:
    [_, image] = make(fly_config, AIIMPL_FLY_IMAGE=value).check([])
    assert image.ok


# -- through ``aiimpl check`` --------------------------------------------------------------------


@pytest.fixture
def aiimpl_config(app_fly: FakeFly) -> dict[str, Any]:
    return {
        "AIIMPL_FLY_API_TOKEN": TOKEN,
        "AIIMPL_FLY_APP": APP,
        "AIIMPL_FLY_API_URL": app_fly.url,
        "AIIMPL_FLY_IMAGE": IMAGE,
    }


def test_check_rows_in_the_report(app: Any, app_fly: FakeFly) -> None:
    add_mapping(repo="api", execution_mode="fly-machines")
    rows = [r for r in run_checks() if r.provider == "fly-machines"]
    assert [(r.name, r.status) for r in rows] == [(f"app {APP}", OK), (f"image {IMAGE}", OK)]
    app_fly.token = "rotated"
    rows = [r for r in run_checks() if r.provider == "fly-machines"]
    assert [(r.name, r.status) for r in rows] == [(f"app {APP}", FAILED), (f"image {IMAGE}", OK)]
    assert all(TOKEN not in r.detail for r in rows)


@pytest.mark.parametrize(
    ("url", "failed"),
    [("http://127.0.0.1:8000", "127.0.0.1"), ("http://localhost", "localhost"),
     ("http://0.0.0.0:8000", "0.0.0.0"), ("https://ai.example.com", None), (None, None)],
)
def test_check_says_when_the_machines_cannot_reach_the_orchestrator(
    fake_fly: FakeFly, fly_config: dict[str, Any], url: str | None, failed: str | None
) -> None:
    backend = make(fly_config, AIIMPL_PUBLIC_URL=url)
    assert all(r.ok for r in backend.check([]))  # no mapping runs on Fly: nothing to reach
    results = list(backend.check([sample_mapping(execution_mode="fly-machines")]))
    rows = [r for r in results if r.name == "orchestrator URL"]
    if failed is None:
        assert rows == [] and all(r.ok for r in results)
    else:
        assert rows == [CheckResult(
            "orchestrator URL", False,
            f"AIIMPL_PUBLIC_URL names {failed}, this host alone: Fly machines cannot reach it to report "
            "or to fetch their tokens; set it to the orchestrator's address they can reach",
        )]
