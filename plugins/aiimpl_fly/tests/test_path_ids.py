"""A machine id or app name is one segment of the Machines API's paths: ``..`` (or an encoded form)
never reaches another resource (``/apps/{app}/machines/..`` is the app itself)."""

from __future__ import annotations

from typing import Any

import pytest
from aiimpl_core.errors import ProviderError

from aiimpl_fly.backend import FlyMachinesBackend
from aiimpl_fly.testing import FakeFly

from .conftest import APP
from .test_app import aiimpl_config, configured  # noqa: F401 - the orchestrator on the fake Fly

DOT_IDS = ["..", ".", "%2e%2e", "%2E.", "%252e%252e"]


@pytest.mark.parametrize("machine_id", DOT_IDS)
def test_a_dot_machine_id_is_refused_before_any_request(
    backend: FlyMachinesBackend, fake_fly: FakeFly, machine_id: str
) -> None:
    client = backend.client()
    for call in (client.get_machine, client.stop_machine, client.destroy_machine, backend.destroy_session):
        with pytest.raises(ProviderError, match="machine id .* cannot be put in a URL path"):
            call(machine_id)
    assert fake_fly.server.requests == []  # (GET /apps/{app} answered the app to ``..`` before)


def test_a_machine_id_with_a_query_or_a_fragment_stays_one_segment(
    backend: FlyMachinesBackend, fake_fly: FakeFly
) -> None:
    client = backend.client()
    for machine_id in ("x?force=true", "x#y"):
        assert client.get_machine(machine_id) is None
    assert [(r.path, r.query) for r in fake_fly.server.requests] == [
        (f"/v1/apps/{APP}/machines/x?force=true", {}), (f"/v1/apps/{APP}/machines/x#y", {})
    ]


@pytest.mark.parametrize(
    "machine_id", ["..", ".", "%2e%2e", "%252E%252E", "x%3Fy", "x%23y", "x%5Cy", "x%25y"]
)
def test_destroying_a_session_named_by_a_dot_or_a_path_is_a_400_naming_machine_id(
    client: Any, admin_headers: dict[str, str], app_fly: FakeFly, machine_id: str
) -> None:
    resp = client.delete(f"/api/sessions/{machine_id}", headers=admin_headers)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"].startswith("machineId must be an id that fits one segment of a URL path")
    assert app_fly.server.requests == []


@pytest.mark.parametrize("app", ["..", ".", "%2e%2e", "team/app", "app?x"])
def test_an_app_name_that_is_no_path_segment_is_a_settings_problem(app: str) -> None:
    problem = FlyMachinesBackend.settings_problem({"AIIMPL_FLY_APP": app})
    assert problem is not None and problem.startswith("AIIMPL_FLY_APP must be an id that fits one segment")
    assert FlyMachinesBackend.settings_problem({"AIIMPL_FLY_APP": "aiimpl-sessions"}) is None
