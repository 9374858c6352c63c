"""The example runner through the whole orchestrator, with the core's test kit."""
from __future__ import annotations

import json
from typing import Any

import pytest
from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import FakeTracker

import aiimpl_example_runner.plugin


@pytest.fixture
def tracker() -> FakeTracker:
    return FakeTracker()


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker) -> list[object]:
    return [tracker.plugin, aiimpl_example_runner.plugin]


@pytest.fixture
def aiimpl_config(tmp_path: Any) -> dict[str, Any]:
    return {"AIIMPL_EXAMPLE_SPOOL_DIR": str(tmp_path)}


def test_a_mapping_runs_its_jobs_on_the_spool(app: Any, client: Any, admin_headers: dict[str, str],
                                              tracker: FakeTracker, tmp_path: Any) -> None:
    body = {"teamKey": "ENG", "owner": "acme", "repo": "api", "defaultBranch": "main",
            "executionMode": "example-spool", "ticketing": {"provider": "fake-tracker"}}
    resp = client.post("/api/mappings", json=body, headers=admin_headers)
    assert resp.status_code in (200, 201), resp.get_json()
    tracker.add("ENG-1")

    orchestrator.poll_once(reconcile=False)

    [job] = orchestrator.jobs("ENG-1")
    assert (job.status, job.backend, job.run_id) == ("dispatched", "example-spool", f"spool-{job.id}")
    assert json.loads((tmp_path / f"{job.id}.json").read_text())["issueKey"] == "ENG-1"

    (tmp_path / f"{job.id}.state").write_text("running")
    orchestrator.reconcile()
    assert orchestrator.jobs("ENG-1")[0].status == "running"

    # the session's result, with the environment the backend was handed (kept in the spool file)
    env = json.loads((tmp_path / f"{job.id}.json").read_text())["env"]
    resp = orchestrator.post_result(client, env, "success", pr_url="https://github.com/acme/api/pull/1")
    assert resp.status_code == 200 and orchestrator.jobs("ENG-1")[0].status == "completed"
    assert tracker.stage_labels("ENG-1") == {"Ready for Review"}
