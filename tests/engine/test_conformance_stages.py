"""The reference's "Issue lifecycle" table, row by row, through the real Linear and Jira plugins:
each way a job ends sets the stage the table gives (Linear label, Jira status), the failure comment
comes first, and applying the trigger again runs again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Mapping, utcnow
from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import FakeRunner
from aiimpl_core.types import RunPhase, TimeoutReason

PR_URL = "https://github.com/acme/eng/pull/7"


class Linear:
    """The Linear side: the stage is the issue's AI label (none once failed), the trigger a label."""

    name = "linear"

    def __init__(self) -> None:
        import aiimpl_linear.plugin
        from aiimpl_linear.testing import FakeLinear, linear_schema

        linear_schema()
        self.fake = FakeLinear().start()
        self.fake.add_team("ENG", "Engineering")
        self.plugin = aiimpl_linear.plugin

    def config(self) -> dict[str, Any]:
        return dict(self.fake.config())

    def stop(self) -> None:
        self.fake.stop()
        assert self.fake.validation_errors == [], self.fake.validation_errors

    def add(self) -> str:
        return self.fake.add_issue("ENG", "An issue", labels=["AI-Implement", "bug"])["identifier"]

    def stage(self, key: str) -> str:
        ai = [x for x in self.fake.labels_of(key) if x != "bug"]
        assert "bug" in self.fake.labels_of(key), "a label of the person's was removed"
        return ",".join(ai) or "AI labels removed"

    def trigger(self, key: str) -> None:
        self.fake.add_labels(key, "AI-Implement")

    def comments(self, key: str) -> list[str]:
        return self.fake.comments_of(key)


class Jira:
    """The Jira side: the stage is the issue's status, the trigger the status ``Ready``."""

    name = "jira"

    def __init__(self) -> None:
        import aiimpl_jira.plugin
        from aiimpl_jira.testing.fake_jira import FakeJira

        self.fake = FakeJira().start()
        self.plugin = aiimpl_jira.plugin
        self._n = 0

    def config(self) -> dict[str, Any]:
        return dict(self.fake.config())

    def stop(self) -> None:
        try:
            self.fake.assert_clean()
        finally:
            self.fake.stop()

    def add(self) -> str:
        self._n += 1
        key = f"ENG-{self._n}"
        self.fake.add_issue(key, summary="An issue")
        return key

    def stage(self, key: str) -> str:
        return self.fake.issues[key].status

    def trigger(self, key: str) -> None:
        self.fake.set_status(key, "Ready")

    def comments(self, key: str) -> list[str]:
        from aiimpl_jira.adf import adf_text

        return [adf_text(doc) for doc in self.fake.comment_docs(key)]


@pytest.fixture(params=["linear", "jira"])
def world(request: pytest.FixtureRequest) -> Iterator[Any]:
    side = Linear() if request.param == "linear" else Jira()
    try:
        yield side
    finally:
        side.stop()


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def aiimpl_plugins(world: Any, runner: FakeRunner) -> list[object]:
    return [world.plugin, runner.plugin]


@pytest.fixture
def aiimpl_config(world: Any) -> dict[str, Any]:
    return world.config()


def _mapping(world: Any, **kw: Any) -> None:
    db.session.add(Mapping(team_key="ENG", owner="acme", repo="eng", default_branch="main",
                           execution_mode="github-actions", ticketing={"provider": world.name}, **kw))
    db.session.commit()


#: the reference's stage table: stage -> (Linear label, Jira status)
STAGES = {
    "Planning": ("AI-Planning", "Planning"),
    "Plan complete": ("Plan-Complete", "Plan Approved"),
    "Implementing": ("AI-Working", "Implementing"),
    "PR opened": ("Ready for Review", "PR Ready"),
    "Planning failed": ("AI labels removed", "Planning Failed"),
    "Implementation failed": ("AI labels removed", "Implementation Failed"),
}


def expect(world: Any, stage: str) -> str:
    linear, jira = STAGES[stage]
    return linear if world.name == "linear" else jira


def later(**kw: float) -> datetime:
    return utcnow() + timedelta(**kw)


def _end(how: str, client: Any, runner: FakeRunner, job: Any, admin_headers: dict[str, str]) -> None:
    env = runner.runs[job.id].request.env
    if how == "failure":
        resp = orchestrator.post_result(client, env, "failure", error="git clone failed (exit 128): denied")
        assert resp.get_json()["status"] == "failed", resp.get_json()
    elif how == "review_failed":
        resp = orchestrator.post_result(client, env, "success", pr_url=PR_URL, error="review found blockers",
                                        review={"approved": False, "blockers": ["no tests"]})
        assert resp.get_json()["status"] == "review_failed", resp.get_json()
    elif how == "failure_after_pr":
        resp = orchestrator.post_result(client, env, "failure", pr_url=PR_URL, error="the agent crashed")
        assert resp.get_json()["status"] == "failed", resp.get_json()
    elif how == "timed_out_after_pr":  # the PR known from the session's pr_opened event only
        resp = client.post("/api/status", json={"nonce": env["AIIMPL_NONCE"], "event": "pr_opened",
                                                "prUrl": PR_URL, "prNumber": 7})
        assert resp.status_code == 200, resp.get_json()
        runner.set_state(job.id, RunPhase.TIMED_OUT, timeout_reason=TimeoutReason.MACHINE_TIMEOUT,
                         log_excerpt="still running")
        orchestrator.reconcile()
    elif how == "timeout_result":
        resp = orchestrator.post_result(client, env, "failure", logLabel="machine_timeout", logExcerpt="tick",
                                        error="the wall-clock budget of 3600s ran out")
        assert resp.get_json()["status"] == "timed_out", resp.get_json()
    elif how == "timed_out":
        runner.set_state(job.id, RunPhase.TIMED_OUT, timeout_reason=TimeoutReason.MACHINE_TIMEOUT,
                         log_excerpt="still running")
        orchestrator.reconcile()
    elif how == "backend_failed":
        runner.set_state(job.id, RunPhase.FAILED, exit_code=1, log_excerpt="Traceback")
        orchestrator.reconcile()
    elif how == "run_not_found":
        runner.runs.pop(job.id)  # the backend never heard of the run
        orchestrator.poll_once(later(minutes=11))
        assert orchestrator.jobs(job.issue_key)[-1].timeout_reason == "run_not_found"
    elif how == "cancel":
        resp = client.post(f"/api/jobs/{job.id}/cancel", headers=admin_headers)
        assert resp.status_code == 200, resp.get_json()
    else:  # pragma: no cover
        raise AssertionError(how)


ENDINGS = ["failure", "review_failed", "failure_after_pr", "timed_out_after_pr", "timeout_result",
           "timed_out", "backend_failed", "cancel", "run_not_found"]


@pytest.mark.parametrize("how", ENDINGS)
def test_each_implementation_ending_sets_the_stage_of_the_table(
    app, client, admin_headers, world, runner, how
):
    _mapping(world)
    key = world.add()
    runner.link_on_dispatch = how != "run_not_found"  # a run never linked
    orchestrator.poll_once(reconcile=False)
    [job] = orchestrator.jobs(key)
    assert world.stage(key) == expect(world, "Implementing")

    _end(how, client, runner, job, admin_headers)
    orchestrator.poll_once()  # deliver whatever waits
    [job] = orchestrator.jobs(key)
    assert job.status in ("failed", "review_failed", "timed_out")
    assert world.stage(key) == expect(world, "Implementation failed"), how
    failures = [c for c in world.comments(key) if c.startswith("⚠️ Implementation failed: ")]
    assert len(failures) == 1, world.comments(key)
    posted = world.comments(key)
    if how == "timed_out_after_pr":  # the session's own comment came first
        assert posted[0].startswith(f"📝 Claude finished. PR #7 opened: {PR_URL}"), posted
        posted = posted[1:]
    if how.endswith("_pr") or how == "review_failed":
        # the reference's pull-request link (a run that opened one), then the failure notice
        assert posted[0] == f"🔗 PR #7 (not ready for review): {PR_URL}"
        assert posted[1] == failures[0]
    else:
        assert posted[0] == failures[0]

    # applying the trigger again runs again: an implementation
    world.trigger(key)
    orchestrator.poll_once()
    jobs = orchestrator.jobs(key)
    assert [j.phase for j in jobs] == ["implementation", "implementation"]
    assert jobs[-1].status == "dispatched"
    assert world.stage(key) == expect(world, "Implementing")


@pytest.mark.parametrize("how", [h for h in ENDINGS if h != "review_failed" and not h.endswith("_pr")])
def test_each_planning_ending_sets_planning_failed(app, client, admin_headers, world, runner, how):
    _mapping(world, planning_enabled=True, planning_workflow_file="ai-plan.yml")
    key = world.add()
    runner.link_on_dispatch = how != "run_not_found"
    orchestrator.poll_once(reconcile=False)
    [job] = orchestrator.jobs(key)
    assert job.phase == "planning" and world.stage(key) == expect(world, "Planning")

    _end(how, client, runner, job, admin_headers)
    orchestrator.poll_once()
    assert world.stage(key) == expect(world, "Planning failed"), how
    comments = world.comments(key)
    assert comments[0].startswith("⚠️ Planning failed: "), comments
    assert not any(c.startswith("⚠️ Implementation failed") for c in comments)

    # applying the trigger again plans again
    world.trigger(key)
    orchestrator.poll_once()
    assert [j.phase for j in orchestrator.jobs(key)] == ["planning", "planning"]
    assert world.stage(key) == expect(world, "Planning")


def test_planning_approval_and_a_failed_implementation_then_a_retry(
    app, client, admin_headers, world, runner
):
    """After an approved plan's implementation fails, applying the trigger again implements again
    (with the approved plan), never asks for the plan to be approved a second time."""
    _mapping(world, planning_enabled=True, planning_workflow_file="ai-plan.yml")
    key = world.add()
    orchestrator.poll_once()
    [planning] = orchestrator.jobs(key)
    orchestrator.post_result(client, runner.runs[planning.id].request.env, "success", plan="1. Do it")
    assert world.stage(key) == expect(world, "Plan complete")
    world.trigger(key)  # approval
    orchestrator.poll_once()
    _, impl = orchestrator.jobs(key)
    assert impl.phase == "implementation" and impl.plan == "1. Do it"
    assert world.stage(key) == expect(world, "Implementing")
    _end("failure", client, runner, impl, admin_headers)
    assert world.stage(key) == expect(world, "Implementation failed")

    world.trigger(key)
    orchestrator.poll_once()
    jobs = orchestrator.jobs(key)
    assert [j.phase for j in jobs] == ["planning", "implementation", "implementation"]
    assert jobs[-1].plan == "1. Do it"


def test_success_sets_pr_opened(app, client, world, runner):
    _mapping(world)
    key = world.add()
    orchestrator.poll_once()
    [job] = orchestrator.jobs(key)
    resp = orchestrator.post_result(client, runner.runs[job.id].request.env, "success", pr_url=PR_URL)
    assert resp.get_json()["status"] == "completed"
    assert world.stage(key) == expect(world, "PR opened")
    assert world.comments(key) == [f"🔗 PR #7 is ready for review: {PR_URL}"]
