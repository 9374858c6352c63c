"""A pull request merged while its job still runs (GitHub's auto-merge, or a person merging during
verification or the post-push review): the job's later ending records its status and reports its
run, but never moves the issue out of "done" nor says the merged PR is ready for review."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.services import merge, outbox, outcomes
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.orchestrator import Pause, Worker, first_holds_second_waits
from aiimpl_core.types import RunPhase, Stage, TimeoutReason

from .conftest import jobs_of, outbox_of, post_result, post_status, tracked
from .test_merge_and_gap_fill import TRIGGER_SECRET, WEBHOOK_SECRET, deliver, merged_payload

KEY = "HW-7"
PAYLOAD = merged_payload()
PR = PAYLOAD["pull_request"]
MERGED = f"🎉 PR #{PR['number']} merged ({PR['merge_commit_sha'][:7]}). Closing this issue out."
READY = f"🔗 PR #{PR['number']} is ready for review: {PR['html_url']}"


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner(gap_fill=True)


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET, "AIIMPL_TRIGGER_SECRET": TRIGGER_SECRET}


def _running_with_pr(client: Any, tracker: FakeTracker, runner: FakeRunner, add_mapping: Any) -> int:
    """An implementation job that opened PR #2 and still runs (verification, post-push review)."""
    add_mapping("HW", owner="Codertocat", repo="Hello-World")
    tracker.add(KEY)
    run_cycle()
    [job] = jobs_of(KEY)
    assert post_status(client, runner, job.id, "session_created").status_code == 200
    resp = post_status(client, runner, job.id, "pr_opened", prUrl=PR["html_url"], prNumber=PR["number"])
    assert resp.status_code == 200
    return job.id


def _merge(client: Any) -> None:
    resp = deliver(client, PAYLOAD, str(uuid.uuid4()))
    assert resp.status_code == 200 and resp.get_json()["matched"] is True, resp.get_json()


def _reopen_and_trigger(tracker: FakeTracker) -> None:
    """A person reopens the done issue and applies the trigger again; a cycle dispatches it."""
    tracker.issues[KEY].done = False
    tracker.trigger(KEY)
    assert run_cycle().dispatched


def _stage_calls(tracker: FakeTracker) -> list[tuple[str, Any]]:
    return [(op, arg) for op, arg in tracker.calls if op in ("set_stage", "mark_done")]


def _assert_still_done(tracker: FakeTracker) -> None:
    """Done in the database and in the tracker; nothing moved it after the merge."""
    assert tracked(KEY).stage == Stage.DONE.value
    assert _stage_calls(tracker) == [("set_stage", (KEY, Stage.IMPLEMENTING)), ("mark_done", KEY)]
    assert [i.stage for i in outbox_of(KEY) if i.op == "stage"] == [Stage.IMPLEMENTING.value]
    assert "Ready for Review" not in tracker.stage_labels(KEY)
    assert READY not in tracker.comments[KEY]


def test_a_success_after_the_merge_leaves_the_issue_done(app, client, tracker, runner, add_mapping):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    _merge(client)
    assert tracked(KEY).stage == Stage.DONE.value and tracker.issues[KEY].done

    resp = post_result(client, runner, job_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
    assert resp.status_code == 200
    assert resp.get_json() == {"jobId": job_id, "status": "completed", "ended": True}
    [job] = jobs_of(KEY)
    assert (job.status, job.pr_number, job.merge_sha) == ("completed", PR["number"], PR["merge_commit_sha"])
    _assert_still_done(tracker)
    assert tracker.comments[KEY][-1] == MERGED


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            {"outcome": "failure", "error": "Verification failed: 3 tests failed", "logExcerpt": "FAILED t1"},
            "failed",
            ["⚠️ Implementation failed: Verification failed: 3 tests failed",
             "Log excerpt (`session_failed`):\n\n```\nFAILED t1\n```"],
        ),
        (
            {"outcome": "success", "prUrl": PR["html_url"], "prNumber": PR["number"],
             "review": {"approved": False, "blockers": ["SQL injection in login"]}},
            "review_failed",
            ["⚠️ Implementation failed: the post-push review flagged blockers",
             "Log excerpt (`post_push_review_not_approved`):\n\n```\n- SQL injection in login\n```"],
        ),
        (
            {"outcome": "failure", "error": "the session ran out of time", "logLabel": "machine_timeout",
             "logExcerpt": "killed"},
            "timed_out",
            ["⚠️ Implementation failed: the session ran out of time",
             "Log excerpt (`machine_timeout`):\n\n```\nkilled\n```"],
        ),
    ],
    ids=["failed", "review_failed", "timed_out"],
)
def test_a_failure_after_the_merge_is_reported_but_leaves_the_issue_done(
    app, client, tracker, runner, add_mapping, body, status, expected
):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    _merge(client)

    resp = post_result(client, runner, job_id, **body)
    assert resp.status_code == 200 and resp.get_json()["status"] == status
    assert jobs_of(KEY)[0].status == status
    _assert_still_done(tracker)
    # what the run found still reaches the ticket, after the merge
    merged_at = tracker.comments[KEY].index(MERGED)
    assert tracker.comments[KEY][merged_at + 1:] == expected


def test_the_reconciler_ending_a_job_after_the_merge_leaves_the_issue_done(
    app, client, tracker, runner, add_mapping
):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    _merge(client)

    runner.set_state(job_id, RunPhase.TIMED_OUT, timeout_reason=TimeoutReason.MACHINE_TIMEOUT,
                     log_excerpt="still verifying")
    assert run_cycle().reconciled["ended"] == 1
    assert jobs_of(KEY)[0].status == "timed_out"
    _assert_still_done(tracker)
    reason = "the session machine exceeded its lifetime (machine_timeout)"
    merged, session_timed_out, *rest = tracker.comments[KEY][-4:]
    # the session that announced itself never said how it ended: the reference's ⚠️ comment for it
    assert merged == MERGED
    assert session_timed_out.startswith(f"⚠️ Session timed out: {reason}. Machine will be cleaned up.")
    assert rest == [
        f"⚠️ Implementation failed: {reason}",
        "Log excerpt (`machine_timeout`):\n\n```\nstill verifying\n```",
    ]


def test_a_gap_analysis_finishing_after_the_merge_leaves_the_issue_done(
    app, client, tracker, runner, add_mapping
):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    post_result(client, runner, job_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
    resp = client.post("/trigger/gap-fill", json={"issueKey": KEY, "prNumber": PR["number"]},
                       headers={"Authorization": f"Bearer {TRIGGER_SECRET}"})
    assert resp.status_code == 202, resp.get_json()
    gap_id = resp.get_json()["jobId"]
    _merge(client)  # matches the gap-analysis job, the latest on PR #2
    assert tracked(KEY).stage == Stage.DONE.value
    before = len(tracker.comments[KEY])

    resp = post_result(client, runner, gap_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "completed"
    assert tracked(KEY).stage == Stage.DONE.value
    assert _stage_calls(tracker)[-1] == ("mark_done", KEY)
    assert tracker.comments[KEY][-1] == MERGED and len(tracker.comments[KEY]) == before


def test_a_plan_finished_after_the_merge_is_not_offered_for_approval(
    app, client, tracker, runner, add_mapping
):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    post_result(client, runner, job_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
    # the issue is triggered again, now with planning: a planning job runs when PR #2 is merged
    db.session.execute(db.text("UPDATE mappings SET planning_enabled = :t, planning_workflow_file = 'p.yml'"),
                       {"t": True})
    db.session.commit()
    tracker.trigger(KEY)
    run_cycle()
    planning = jobs_of(KEY)[-1]
    assert (planning.phase, planning.status) == ("planning", "dispatched")
    _merge(client)

    resp = post_result(client, runner, planning.id, outcome="success", plan="1. Do it again")
    assert resp.status_code == 200 and resp.get_json()["status"] == "completed"
    assert jobs_of(KEY)[-1].plan == "1. Do it again"  # kept with the job
    row = tracked(KEY)
    assert (row.stage, row.plan) == (Stage.DONE.value, None)
    assert not any(c.startswith("📋 Plan ready for review.") for c in tracker.comments[KEY])
    assert _stage_calls(tracker)[-1] == ("mark_done", KEY)
    # reopened and triggered again, the issue plans afresh: no plan nobody approved is implemented
    _reopen_and_trigger(tracker)
    again = jobs_of(KEY)[-1]
    assert again.id != planning.id and (again.phase, again.plan) == ("planning", None)


def test_a_plan_whose_implementation_was_merged_is_not_implemented_again(
    app, client, tracker, runner, add_mapping
):
    """The approved plan's implementation opened PR #2 and failed its post-push review; a person
    merged the PR all the same. Reopened and triggered again, the issue plans afresh."""
    add_mapping("HW", owner="Codertocat", repo="Hello-World", planning_enabled=True,
                planning_workflow_file="p.yml")
    tracker.add(KEY)
    run_cycle()
    [planning] = jobs_of(KEY)
    post_result(client, runner, planning.id, outcome="success", plan="1. Do it")
    tracker.trigger(KEY)  # approved
    run_cycle()
    implementation = jobs_of(KEY)[-1]
    assert (implementation.phase, implementation.plan) == ("implementation", "1. Do it")
    resp = post_result(client, runner, implementation.id, outcome="success", prUrl=PR["html_url"],
                       prNumber=PR["number"], review={"approved": False, "blockers": ["Missing tests"]})
    assert resp.get_json()["status"] == "review_failed"
    assert tracked(KEY).plan == "1. Do it"  # a failed implementation keeps its plan
    _merge(client)
    assert (tracked(KEY).stage, tracked(KEY).plan) == (Stage.DONE.value, None)

    _reopen_and_trigger(tracker)
    again = jobs_of(KEY)[-1]
    assert (again.phase, again.plan) == ("planning", None)


def test_a_new_trigger_after_the_merge_runs_the_lifecycle_again(app, client, tracker, runner, add_mapping):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    _merge(client)
    post_result(client, runner, job_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])

    _reopen_and_trigger(tracker)
    again = jobs_of(KEY)[-1]
    assert again.id != job_id and tracked(KEY).stage == Stage.IMPLEMENTING.value
    url = "https://github.com/Codertocat/Hello-World/pull/3"
    post_result(client, runner, again.id, outcome="success", prUrl=url, prNumber=3)
    assert tracked(KEY).stage == Stage.PR_OPENED.value
    assert _stage_calls(tracker)[-1] == ("set_stage", (KEY, Stage.PR_OPENED))
    assert tracker.comments[KEY][-1] == f"🔗 PR #3 is ready for review: {url}"


# -- the merge and the result at the same moment, in two threads (own sessions, connections) ----


def _race(app: Any, pause: Pause, first: Callable[[Any], Any], second: Callable[[Any], Any]
          ) -> tuple[Any, Any]:
    """``first(test_client)`` as one worker until it reaches ``pause`` (its transaction open), then
    ``second`` as another, seen waiting for the first's lock before the first goes on; what each
    answered."""
    db.session.commit()
    answers = first_holds_second_waits(app, pause, Worker(app, "holder", lambda: first(app.test_client())),
                                       lambda: Worker(app, "waiter", lambda: second(app.test_client())))
    db.session.rollback()
    outbox.deliver(issue_keys=[KEY])  # whatever a concurrent delivery left for the poller
    return answers


def test_a_result_racing_a_merge_that_holds_the_lock_sees_done(
    app, client, tracker, runner, add_mapping, monkeypatch
):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    pause = Pause(monkeypatch, merge, "enqueue_done", thread="holder")  # the merge's transaction is open
    _, result = _race(app, pause, _merge, lambda c: post_result(
        c, runner, job_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"]
    ))
    assert result.status_code == 200 and result.get_json()["status"] == "completed"
    _assert_still_done(tracker)
    assert tracker.comments[KEY][-1] == MERGED


def test_a_merge_racing_a_result_that_holds_the_lock_comes_after_it(
    app, client, tracker, runner, add_mapping, monkeypatch
):
    job_id = _running_with_pr(client, tracker, runner, add_mapping)
    pause = Pause(monkeypatch, outcomes, "set_stage", thread="holder")  # the result's transaction is open

    def result(c: Any) -> None:
        resp = post_result(c, runner, job_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
        assert resp.status_code == 200

    _race(app, pause, result, _merge)
    # the result went first: ready for review, then merged, and the issue ends done
    assert tracked(KEY).stage == Stage.DONE.value
    assert _stage_calls(tracker) == [
        ("set_stage", (KEY, Stage.IMPLEMENTING)), ("set_stage", (KEY, Stage.PR_OPENED)), ("mark_done", KEY)
    ]
    assert tracker.comments[KEY][-2:] == [READY, MERGED]


def test_a_result_of_another_job_racing_the_merge_decides_on_the_issue_under_its_lock(
    app, client, tracker, runner, add_mapping, monkeypatch
):
    """The merge matches the job that opened PR #2 while a later job of the issue runs: the two
    share no job row, only the issue's, and the ending must read it under that lock (a plain read
    would see the stage from before the merge and write "PR opened" over "done")."""
    first = _running_with_pr(client, tracker, runner, add_mapping)
    post_result(client, runner, first, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
    tracker.trigger(KEY)  # applied again while PR #2 waits for its review
    assert run_cycle().dispatched
    second = jobs_of(KEY)[-1].id
    pause = Pause(monkeypatch, merge, "enqueue_done", thread="holder")

    def result(c: Any) -> None:
        resp = post_result(c, runner, second, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
        assert resp.status_code == 200 and resp.get_json()["status"] == "completed"

    _race(app, pause, _merge, result)
    assert [j.merge_sha for j in jobs_of(KEY)] == [PR["merge_commit_sha"], None]
    assert tracked(KEY).stage == Stage.DONE.value
    assert _stage_calls(tracker)[-1] == ("mark_done", KEY)
    assert tracker.comments[KEY][-1] == MERGED
