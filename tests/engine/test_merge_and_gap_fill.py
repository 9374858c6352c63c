"""The end of a lifecycle (GitHub's merged-PR webhook) and gap-fill, around jobs the poller dispatched."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

from aiimpl_core import hookimpl
from aiimpl_core.auth.signatures import github_signature
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, TrackedIssue
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.pytest_plugin import specs_dir
from aiimpl_core.types import Stage

from .conftest import jobs_of, post_result

WEBHOOK_SECRET = "engine-webhook-secret"
TRIGGER_SECRET = "engine-trigger-secret"


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner(gap_fill=True)


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET, "AIIMPL_TRIGGER_SECRET": TRIGGER_SECRET}


def merged_payload() -> dict[str, Any]:
    """GitHub's merged ``pull_request`` delivery from the specs (Codertocat/Hello-World#2)."""
    name = "pull_request.closed.merged.payload.json"
    path = os.path.join(specs_dir(), "github", "webhooks", "derived", name)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def deliver(client: Any, payload: dict[str, Any], delivery: str) -> Any:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(WEBHOOK_SECRET, body),
    }
    return client.post("/api/github/webhook", data=body, headers=headers, content_type="application/json")


def test_poll_to_pr_to_merge(app, client, tracker: FakeTracker, runner: FakeRunner, add_mapping):
    payload = merged_payload()
    pr = payload["pull_request"]
    add_mapping("HW", owner="Codertocat", repo="Hello-World")
    tracker.add("HW-7", title="Hello world change")
    run_cycle()
    [job] = jobs_of("HW-7")
    resp = post_result(client, runner, job.id, outcome="success", prUrl=pr["html_url"], prNumber=pr["number"])
    assert resp.get_json()["status"] == "completed"

    delivery = str(uuid.uuid4())
    answers = [deliver(client, payload, delivery) for _ in range(5)]  # the same delivery five times
    assert all(a.status_code == 200 for a in answers)
    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert job.merge_sha == pr["merge_commit_sha"]
    assert tracker.issues["HW-7"].done
    merged = [c for c in tracker.comments["HW-7"] if "merged" in c]
    assert merged == [f"🎉 PR #{pr['number']} merged ({pr['merge_commit_sha'][:7]}). Closing this issue out."]
    assert [op for op, _ in tracker.calls].count("mark_done") == 1
    # the poller finds nothing more to do for the issue
    assert run_cycle().dispatched == [] and len(jobs_of("HW-7")) == 1


class TestMergeHooks:
    """Plugins hear the merge: the issue's move to ``done`` reaches ``aiimpl_issue_stage_changed``."""

    @pytest.fixture
    def stages(self) -> list[tuple[str, Any, Any]]:
        return []

    @pytest.fixture
    def aiimpl_plugins(self, tracker: FakeTracker, runner: FakeRunner, stages: list) -> list[object]:
        class Observer:
            @hookimpl
            def aiimpl_issue_stage_changed(self, issue_key: str, old: Any, new: Any) -> None:
                stages.append((issue_key, old, new))

        return [tracker.plugin, runner.plugin, Observer()]

    def test_a_merge_moves_the_issue_to_done_for_plugins_too(self, app, client, tracker, runner,
                                                             add_mapping, stages):
        payload = merged_payload()
        pr = payload["pull_request"]
        add_mapping("HW", owner="Codertocat", repo="Hello-World")
        tracker.add("HW-7")
        run_cycle()
        [job] = jobs_of("HW-7")
        post_result(client, runner, job.id, outcome="success", prUrl=pr["html_url"], prNumber=pr["number"])
        stages.clear()
        for _ in range(2):  # the same delivery again: heard once
            assert deliver(client, payload, "merge-delivery-1").status_code == 200
        assert stages == [("HW-7", Stage.PR_OPENED, Stage.DONE)]
        done = db.session.scalar(db.select(TrackedIssue).where(TrackedIssue.issue_key == "HW-7"))
        when = (done.stage_changed_at, done.done_at)
        # the same event through a second webhook (an organization's and a repository's): another
        # delivery id, and nothing changes again
        assert deliver(client, payload, "merge-delivery-2").status_code == 200
        db.session.expire_all()
        done = db.session.scalar(db.select(TrackedIssue).where(TrackedIssue.issue_key == "HW-7"))
        assert (done.stage, done.stage_changed_at, done.done_at) == ("done", *when)
        assert stages == [("HW-7", Stage.PR_OPENED, Stage.DONE)]
        assert [c for c in tracker.comments["HW-7"] if "merged" in c] == [
            f"🎉 PR #{pr['number']} merged ({pr['merge_commit_sha'][:7]}). Closing this issue out."]
        assert [op for op, _ in tracker.calls].count("mark_done") == 1


def test_gap_fill_on_a_pr_the_engine_opened(app, client, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-5")
    run_cycle()
    [job] = jobs_of("ENG-5")
    post_result(client, runner, job.id, outcome="success", prUrl="https://github.com/acme/eng/pull/77")

    resp = client.post(
        "/trigger/gap-fill",
        json={"issueKey": "ENG-5", "prNumber": 77},
        headers={"Authorization": f"Bearer {TRIGGER_SECRET}"},
    )
    assert resp.status_code in (200, 201, 202), resp.get_json()
    gap = [j for j in jobs_of("ENG-5") if j.phase == "gap-analysis"]
    assert len(gap) == 1 and gap[0].pr_number == 77 and gap[0].status == "dispatched"
    assert runner.runs[gap[0].id].request.pr_number == 77
    # the reconciler asks about the gap-analysis run with the others, in one call
    runner.poll_calls.clear()
    run_cycle()
    assert runner.poll_calls == [[gap[0].id]]

    # paused: 423 with the team key
    db.session.execute(db.text("UPDATE mappings SET paused = :p"), {"p": True})
    db.session.commit()
    resp = client.post(
        "/trigger/gap-fill",
        json={"issueKey": "ENG-5", "prNumber": 77},
        headers={"Authorization": f"Bearer {TRIGGER_SECRET}"},
    )
    assert resp.status_code == 423 and resp.get_json() == {"error": "project_paused", "teamKey": "ENG"}


def test_a_gap_analysis_that_succeeds_leaves_the_issues_stage_and_plan(
    app, client, tracker, runner, add_mapping
):
    """A gap-analysis works on a PR open already: its ending leaves the issue where it is. It went
    the implementation's way: a plan planned since, waiting at Plan-Complete for its approval, was
    dropped and the issue moved to "Ready for Review" (approving it then planned again)."""
    from .conftest import tracked

    add_mapping("ENG", planning_enabled=True, planning_workflow_file="ai-plan.yml")
    tracker.add("ENG-5")
    run_cycle()
    post_result(client, runner, jobs_of("ENG-5")[-1].id, outcome="success", plan="plan one")
    tracker.trigger("ENG-5")  # approved
    run_cycle()
    pr = "https://github.com/acme/eng/pull/77"
    post_result(client, runner, jobs_of("ENG-5")[-1].id, outcome="success", prUrl=pr)
    tracker.trigger("ENG-5")  # planned afresh
    run_cycle()
    post_result(client, runner, jobs_of("ENG-5")[-1].id, outcome="success", plan="plan two")
    assert (tracked("ENG-5").stage, tracked("ENG-5").plan) == ("plan_complete", "plan two")

    resp = client.post("/trigger/gap-fill", json={"issueKey": "ENG-5", "prNumber": 77},
                       headers={"Authorization": f"Bearer {TRIGGER_SECRET}"})
    assert resp.status_code == 202, resp.get_json()
    tracker.comments["ENG-5"].clear()
    answer = post_result(client, runner, resp.get_json()["jobId"], phase="gap-analysis", outcome="success",
                         prUrl=pr, prNumber=77)
    assert answer.get_json()["status"] == "completed"
    assert (tracked("ENG-5").stage, tracked("ENG-5").plan) == ("plan_complete", "plan two")
    assert tracker.stage_labels("ENG-5") == {"Plan-Complete"}
    assert [c.split("\n")[0] for c in tracker.comments["ENG-5"]] == [f"🔗 PR #77 is ready for review: {pr}"]


def merged_comments(tracker: Any, key: str) -> list[str]:
    return [c for c in tracker.comments[key] if "merged" in c.split("\n", 1)[0]]


def test_a_second_hook_s_delivery_of_a_merge_after_a_gap_fill_posts_nothing_again(
    app, client, tracker, runner, add_mapping
):
    """One merge delivered by two webhooks (a repository's and an app's, each with its own delivery id):
the issue gets one "merged" comment, also when a job was created on the PR between the two
deliveries (a gap-fill), which the second delivery then finds."""
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
