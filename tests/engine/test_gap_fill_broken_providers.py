"""``POST /trigger/gap-fill`` while a provider cannot be set up (its settings broke): answered with
the reference's table, never a message of another shape."""

from __future__ import annotations

from typing import Any

import pytest

from aiimpl_core.testing.fakes import FakeRunner

from .conftest import jobs_of
from .test_merge_and_gap_fill import TRIGGER_SECRET

HEADERS = {"Authorization": f"Bearer {TRIGGER_SECRET}"}


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner(gap_fill=True)


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_TRIGGER_SECRET": TRIGGER_SECRET}


def _broken(provider_class: type) -> None:
    def broken(self: Any, context: Any) -> None:
        raise RuntimeError("its settings are broken")

    provider_class.__init__ = broken  # type: ignore[method-assign]


def test_a_tracker_that_cannot_be_set_up_still_finds_the_mapping(app, client, tracker, add_mapping):
    add_mapping("ENG")
    _broken(tracker.provider_class)
    resp = client.post("/trigger/gap-fill", json={"issueKey": "ENG-5", "prNumber": 77}, headers=HEADERS)
    assert resp.status_code == 202, resp.get_json()
    [job] = jobs_of("ENG-5")
    assert (job.phase, job.status, job.pr_number) == ("gap-analysis", "dispatched", 77)


def test_a_runner_backend_that_cannot_be_set_up_is_a_failed_dispatch(app, client, runner, add_mapping):
    add_mapping("ENG")
    _broken(runner.backend_class)
    resp = client.post("/trigger/gap-fill", json={"issueKey": "ENG-5", "prNumber": 77}, headers=HEADERS)
    assert resp.status_code == 502, resp.get_json()
    assert resp.get_json() == {
        "error": "dispatch_failed", "dispatchStatus": None,
        "detail": "no configured runner backend supports gap-fill dispatch "
                  "(github-actions: could not be set up)",
    }
    assert jobs_of("ENG-5") == []
