"""One merge delivered by two webhooks (a repository's and an app's, each with its own delivery id):
the issue gets one "merged" comment, also when a job was created on the PR between the two
deliveries (a gap-fill), which the second delivery then finds."""

from __future__ import annotations

from typing import Any

import pytest

from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeRunner

from .conftest import jobs_of, post_result
from .test_merge_and_gap_fill import TRIGGER_SECRET, WEBHOOK_SECRET, deliver, merged_payload


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner(gap_fill=True)


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET, "AIIMPL_TRIGGER_SECRET": TRIGGER_SECRET}


def merged_comments(tracker: Any, key: str) -> list[str]:
    return [c for c in tracker.comments[key] if "merged" in c.split("\n", 1)[0]]


def test_a_second_hook_s_delivery_of_a_merge_after_a_gap_fill_posts_nothing_again(
    app, client, tracker, runner, add_mapping
):
    payload = merged_payload()
    pr = payload["pull_request"]
    add_mapping("HW", owner="Codertocat", repo="Hello-World")
    tracker.add("HW-7")
    run_cycle()
    [job] = jobs_of("HW-7")
    post_result(client, runner, job.id, outcome="success", prUrl=pr["html_url"])

    assert deliver(client, payload, "repository-hook").status_code == 200
    assert len(merged_comments(tracker, "HW-7")) == 1
    resp = client.post("/trigger/gap-fill", json={"issueKey": "HW-7", "prNumber": pr["number"]},
                       headers={"Authorization": f"Bearer {TRIGGER_SECRET}"})
    assert resp.status_code == 202, resp.get_json()

    assert deliver(client, payload, "app-hook").status_code == 200
    assert len(merged_comments(tracker, "HW-7")) == 1
    assert [j.merge_sha for j in jobs_of("HW-7")] == [pr["merge_commit_sha"]] * 2
