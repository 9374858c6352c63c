"""Whole lifecycles: poll → dispatch → session callbacks over HTTP → outcome, stage and comments."""

from __future__ import annotations

import logging
import re

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.services import outbox, settings
from aiimpl_core.services.dispatch import run_cycle, run_cycle_for_issues
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fakes import fail_with
from aiimpl_core.types import LogLabel, RunPhase, TimeoutReason

from .conftest import (
    claim_without_launch,
    first_lines,
    jobs_of,
    later,
    outbox_of,
    post_result,
    post_status,
    session_env,
    tracked,
)

STAMP = re.compile(r"^_\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · \[Machine logs\]\(https://runs\.test/run-\d+\)_$")


def transitions(job: Job) -> list[str]:
    db.session.expire_all()
    job = db.session.get(Job, job.id)
    return [t.to_status for t in job.transitions]


def test_success_with_pr_posts_the_reference_comments(app, client, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1", title="Add a health endpoint")

    report = run_cycle()

    [job] = jobs_of("ENG-1")
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
    assert job.status == "dispatched" and job.phase == "implementation" and job.backend == "github-actions"
    assert runner.runs[job.id].request.branch == "ai/ENG-1"
    assert tracker.stage_labels("ENG-1") == {"AI-Working"}  # the trigger label is gone
    assert tracker.comments["ENG-1"] == []  # the reference has no comment on dispatch

    pr_url = "https://github.com/acme/eng/pull/42"
    for event, fields in [
        ("session_created", {}),
        ("environment_ready", {}),
        ("pr_opened", {"prNumber": 42, "prUrl": pr_url}),
        ("verification_started", {}),
        ("verification_passed", {}),
        ("session_cleaned_up", {"duration": "4m 10s"}),
    ]:
        resp = post_status(client, runner, job.id, event, **fields)
        assert resp.status_code == 200, resp.get_json()
    resp = post_result(client, runner, job.id, outcome="success", prUrl=pr_url)
    assert resp.status_code == 200 and resp.get_json()["status"] == "completed"

    comments = tracker.comments["ENG-1"]
    assert first_lines(comments) == [
        "🚀 Session machine created. Cloning repo and running setup…",
        "✅ Environment ready. Claude is implementing…",
        f"📝 Claude finished. PR #42 opened: {pr_url}",
        "🧪 Running verification script…",
        "✅ Verification passed",
        "🧹 Session machine cleaned up. Duration: 4m 10s",
        f"🔗 PR #42 is ready for review: {pr_url}",
    ]
    for body in comments[:6]:  # each progress comment carries its timestamp and the log link
        assert STAMP.match(body.split("\n")[-1]), body
    assert tracker.stage_labels("ENG-1") == {"Ready for Review"}
    assert transitions(job) == ["unknown", "dispatched", "running", "completed"]

    # the trigger was removed by our own stage change: nothing more to do
    report = run_cycle()
    assert report.dispatched == [] and len(jobs_of("ENG-1")) == 1
    # re-applying the trigger runs again
    tracker.trigger("ENG-1")
    report = run_cycle()
    assert len(report.dispatched) == 1 and len(jobs_of("ENG-1")) == 2


def test_planning_then_approval_then_implementation_with_the_plan(app, client, tracker, runner, add_mapping):
    add_mapping("ENG", planning_enabled=True, planning_workflow_file="ai-plan.yml")
    tracker.add("ENG-7", title="Rework billing", description="Split invoices by tenant.")

    run_cycle()
    [planning] = jobs_of("ENG-7")
    assert planning.phase == "planning"
    assert tracker.stage_labels("ENG-7") == {"AI-Planning"}
    ctx_token = session_env(runner, planning.id)["AIIMPL_CONTEXT_TOKEN"]
    ctx = client.get("/runner/planning-context", headers={"Authorization": f"Bearer {ctx_token}"}).get_json()
    assert ctx["phase"] == "planning" and ctx["plan"] is None
    assert (
        ctx["issue"]["title"] == "Rework billing"
        and ctx["issue"]["description"] == "Split invoices by tenant."
    )

    plan = "1. Add tenant id to invoices\n2. Split the export"
    resp = post_result(client, runner, planning.id, outcome="success", plan=plan)
    assert resp.get_json()["status"] == "completed"
    assert tracker.stage_labels("ENG-7") == {"Plan-Complete"}
    assert tracked("ENG-7").plan == plan
    assert tracker.comments["ENG-7"][-1].startswith("📋 Plan ready for review.\n\n" + plan)
    # a tracker without a trigger_hint: the way to approve it in general words only
    assert tracker.comments["ENG-7"][-1].endswith(
        "\n\nTo approve the plan and start the implementation, apply the trigger again.")

    # not approved yet: nothing is dispatched
    assert run_cycle().dispatched == []
    # approval: a person applies the trigger again
    tracker.trigger("ENG-7")
    report = run_cycle()
    [entry] = report.dispatched
    implementation = db.session.get(Job, entry.job_id)
    assert implementation.phase == "implementation" and implementation.plan == plan
    assert tracker.stage_labels("ENG-7") == {"AI-Working"}
    ctx_token = session_env(runner, implementation.id)["AIIMPL_CONTEXT_TOKEN"]
    ctx = client.get("/runner/planning-context", headers={"Authorization": f"Bearer {ctx_token}"}).get_json()
    assert ctx["phase"] == "implementation" and ctx["plan"] == plan

    resp = post_result(
        client, runner, implementation.id, outcome="success", prUrl="https://github.com/acme/eng/pull/9"
    )
    assert resp.get_json()["status"] == "completed"
    assert tracker.stage_labels("ENG-7") == {"Ready for Review"}
    assert tracked("ENG-7").plan is None  # a plan is used once


@pytest.mark.parametrize("body", [{}, {"plan": " \n"}, {"comments": [{"body": "  "}]}],
                         ids=["no-plan", "blank-plan", "blank-comments"])
def test_a_planning_success_without_a_plan_is_a_planning_failure(
    app, client, tracker, runner, add_mapping, body
):
    """Nothing to approve: offered as "Plan complete", applying the trigger again (the approval)
    would only plan again. It fails as planning, and re-applying the trigger re-plans."""
    add_mapping("ENG", planning_enabled=True, planning_workflow_file="ai-plan.yml")
    tracker.add("ENG-8")
    run_cycle()
    [planning] = jobs_of("ENG-8")

    resp = post_result(client, runner, planning.id, outcome="success", **body)
    assert resp.get_json() == {
        "jobId": planning.id, "status": "failed", "ended": True, "failureKind": "other"
    }
    assert tracker.comments["ENG-8"] == [
        "⚠️ Planning failed: the planning run finished without a plan",
        "Log excerpt (`session_failed`):\n\n```\nthe planning run finished without a plan\n```",
    ]
    assert tracked("ENG-8").plan is None and tracked("ENG-8").stage == "planning_failed"
    assert tracker.stage_labels("ENG-8") == set()


@pytest.mark.parametrize(
    "error",
    [
        "LLM invocation failed with exit code 1 … Reached max turns (50)",
        "LLM invocation failed with exit code 1: API error 529 overloaded",
        "Nothing to commit: Claude left no file changes in the working tree",
        "PR creation failed with HTTP 422: A pull request already exists for acme:ai/ENG-3",
        "git clone failed (exit 128): repository not found",
    ],
)
def test_run_failure_messages_are_posted_word_for_word(app, client, tracker, runner, add_mapping, error):
    add_mapping("ENG")
    tracker.add("ENG-3")
    run_cycle()
    [job] = jobs_of("ENG-3")

    resp = post_result(client, runner, job.id, outcome="failure", error=error, logExcerpt="last lines")
    assert resp.get_json()["status"] == "failed"

    label = "pr_not_found" if error.startswith("Nothing to commit") else "session_failed"
    assert tracker.comments["ENG-3"] == [
        f"⚠️ Implementation failed: {error}",
        f"Log excerpt (`{label}`):\n\n```\nlast lines\n```",
    ]
    assert tracker.stage_labels("ENG-3") == set()  # the AI labels are removed
    # re-applying the trigger re-runs
    tracker.trigger("ENG-3")
    assert len(run_cycle().dispatched) == 1


def test_a_trigger_applied_again_during_the_run_is_kept_and_runs_once_the_job_ends(
    app, client, tracker, runner, add_mapping
):
    """A person applied the trigger again while the job ran (the Blockers view said `dedup`:
    "Waiting for the in-flight job"): the job's end-of-run stage change removed it (on Jira it
    moved the issue out of Ready), so the wait never ended in a dispatch. The newer trigger wins:
    the outcome is reported, the stage is left to the next run, which the next cycle dispatches."""
    add_mapping("ENG")
    tracker.add("ENG-5")
    run_cycle()
    [job] = jobs_of("ENG-5")
    assert tracker.stage_labels("ENG-5") == {"AI-Working"}  # the trigger was taken off
    tracker.trigger("ENG-5")
    report = run_cycle()
    assert report.blocked["ENG-5"]["reason"] == "dedup"
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    assert tracker.comments["ENG-5"][0] == "⚠️ Implementation failed: git clone failed (exit 128): denied"
    assert "AI-Implement" in tracker.issues["ENG-5"].labels
    assert len(run_cycle().dispatched) == 1 and len(jobs_of("ENG-5")) == 2


def test_a_trigger_the_job_never_took_off_is_no_new_one(app, client, tracker, runner, add_mapping):
    """The job's own stage change never reached the tracker (it failed), so the issue was still
    triggered when a cycle saw it: that is the old trigger, not a person's new one. The ending sets
    its stage as ever, which takes the trigger off: the issue is not run again and again."""
    from datetime import timedelta

    from aiimpl_core.orm import Blocker, utcnow
    from aiimpl_core.services import outbox
    from aiimpl_core.testing.fakes import fail_with

    add_mapping("ENG")
    tracker.add("ENG-6")
    tracker.fail["set_stage"] = fail_with(400, "no such transition")  # refused: given up on
    run_cycle()
    [job] = jobs_of("ENG-6")
    for hours in range(1, outbox.MAX_ATTEMPTS_REFUSED + 1):
        outbox.deliver(now=utcnow() + timedelta(hours=hours))
    assert "AI-Implement" in tracker.issues["ENG-6"].labels  # its stage write is dead
    # (the cycle knows that trigger is the one its job took: `trigger already dispatched`; a
    # `dedup` wait recorded for it all the same is no new trigger)
    assert run_cycle().skipped["ENG-6"] == "trigger already dispatched"
    db.session.add(Blocker(issue_key="ENG-6", team_key="ENG", provider="fake-tracker", reason="dedup",
                           message="Already dispatched recently. Waiting for the in-flight job."))
    db.session.commit()
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    del tracker.fail["set_stage"]
    outbox.deliver(now=utcnow() + timedelta(hours=9))
    assert "AI-Implement" not in tracker.issues["ENG-6"].labels
    assert run_cycle().dispatched == [] and len(jobs_of("ENG-6")) == 1


def _old_trigger_waits_undelivered(tracker, key: str) -> Job:
    """Dispatch ``key`` and have a cycle record its `dedup` wait while the job's own stage change
    has not reached the tracker (it failed once and waits for its retry): the wait is for the
    trigger the job took. It comes about as on Jira: a webhook dispatched the issue the moment it
    moved to Ready, and the search, which lags behind the tracker, did not list it yet."""
    tracker.add(key, labels=set())
    tracker.lag_listing(key)
    tracker.trigger(key)
    tracker.fail["set_stage"] = fail_with(503, "unavailable")
    run_cycle_for_issues("fake-tracker", [key])
    [job] = jobs_of(key)
    run_cycle()  # a complete listing without the trigger: the job's trigger counts as taken off
    tracker.catch_up()
    assert run_cycle().blocked[key]["reason"] == "dedup"
    assert tracker.stage_labels(key) == {"AI-Implement"}  # the job's stage change is still to be sent
    return job


@pytest.mark.parametrize("seen_by", ["listing", "listing with a dispatch", "webhook"])
def test_a_trigger_applied_again_after_a_wait_for_the_old_one_is_kept(
    app, client, tracker, runner, add_mapping, seen_by
):
    """A `dedup` wait was first seen while the job's own stage change had not reached the tracker:
    it was the trigger the job took. Then the stage change took that trigger off, and a person
    applied it again before a cycle saw the issue untriggered (the wait went on). That trigger is a
    new one all the same: kept, and dispatched by the next cycle once the job ends. (Seen by a
    listing page that only waits, by one where another issue is dispatched, or by a webhook.)"""
    add_mapping("ENG")
    job = _old_trigger_waits_undelivered(tracker, "ENG-7")
    del tracker.fail["set_stage"]
    outbox.deliver(now=later(hours=1))
    assert tracker.stage_labels("ENG-7") == {"AI-Working"}  # the trigger was taken off
    tracker.trigger("ENG-7")
    if seen_by == "listing with a dispatch":
        tracker.add("ENG-70")
    if seen_by == "webhook":
        report = run_cycle_for_issues("fake-tracker", ["ENG-7"])
    else:
        report = run_cycle()
    assert report.blocked["ENG-7"]["reason"] == "dedup"
    dispatched = ["ENG-70"] if seen_by == "listing with a dispatch" else []
    assert [d.issue_key for d in report.dispatched] == dispatched
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    assert tracker.comments["ENG-7"][0] == "⚠️ Implementation failed: git clone failed (exit 128): denied"
    assert "AI-Implement" in tracker.issues["ENG-7"].labels
    assert len(run_cycle().dispatched) == 1 and len(jobs_of("ENG-7")) == 2


def test_a_trigger_applied_again_is_kept_when_the_cycle_began_before_the_job_took_the_trigger_off(
    app, client, tracker, runner, add_mapping
):
    """The cycle that saw the new trigger began before the job's stage change reached the tracker
    and read the listing after it (a long cycle; the change sent by the session's callback or by
    another host meanwhile): its wait is no older than that listing."""
    add_mapping("ENG")
    tracker.add("ENG-8")
    begun = utcnow()
    run_cycle()
    [job] = jobs_of("ENG-8")
    assert tracker.stage_labels("ENG-8") == {"AI-Working"}  # the trigger was taken off
    tracker.trigger("ENG-8")
    assert run_cycle(now=begun).blocked["ENG-8"]["reason"] == "dedup"
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    assert "AI-Implement" in tracker.issues["ENG-8"].labels
    assert len(run_cycle().dispatched) == 1 and len(jobs_of("ENG-8")) == 2


def test_a_wait_for_the_old_trigger_is_no_new_trigger_while_the_job_s_stage_change_waits(
    app, client, tracker, runner, add_mapping
):
    """The cycles that see the issue while the job's own stage change waits for its retry see the
    trigger the job took: the job that ends meanwhile sets its stage as ever, and once the stage
    changes are sent (in order) the trigger is off and the issue is not run again."""
    add_mapping("ENG")
    job = _old_trigger_waits_undelivered(tracker, "ENG-9")
    assert run_cycle().blocked["ENG-9"]["reason"] == "dedup"
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    del tracker.fail["set_stage"]
    outbox.deliver(now=later(hours=1))
    assert "AI-Implement" not in tracker.issues["ENG-9"].labels
    assert run_cycle().dispatched == [] and len(jobs_of("ENG-9")) == 1


def _reads(tracker, key: str) -> int:
    return sum(1 for op, arg in tracker.calls if op == "get_issue" and arg == key)


@pytest.mark.parametrize("page", ["only waits", "with a dispatch"])
def test_a_lagging_listing_after_the_job_took_the_trigger_off_is_no_new_trigger(
    app, client, tracker, runner, add_mapping, page
):
    """The search lags behind the tracker (Jira's index): a listing read after the job's stage
    change took the trigger off still shows it. The issue is read again, which no longer shows
    it: no person applied it again, so the job's end sets its stage (the issue is not left In
    Progress with no job), and nothing runs again."""
    from aiimpl_core.services.dispatch import TRIGGER_GONE_ON_READ

    add_mapping("ENG")
    tracker.add("ENG-20")
    tracker.lag_listing("ENG-20")  # the search goes on showing the issue as triggered
    run_cycle()
    [job] = jobs_of("ENG-20")
    assert tracker.stage_labels("ENG-20") == {"AI-Working"}  # the trigger was taken off
    if page == "with a dispatch":
        tracker.add("ENG-21")
    report = run_cycle()
    assert report.skipped["ENG-20"] == TRIGGER_GONE_ON_READ and "ENG-20" not in report.blocked
    assert _reads(tracker, "ENG-20") == 1
    assert [d.issue_key for d in report.dispatched] == (["ENG-21"] if page == "with a dispatch" else [])
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    assert tracker.stage_labels("ENG-20") == set()  # Implementation Failed: not left In Progress
    tracker.catch_up()
    assert run_cycle().dispatched == [] and len(jobs_of("ENG-20")) == 1


@pytest.mark.parametrize("page", ["only waits", "with a dispatch"])
def test_a_lagging_listing_does_not_begin_a_wait_for_the_old_trigger_again(
    app, client, tracker, runner, add_mapping, page
):
    """A `dedup` wait was first seen while the job's own stage change waited for its retry (the
    trigger the job took). The change then took the trigger off, and a listing read after it
    still shows it because the search lags: the wait does not begin again (which would take it for
    a person's new trigger), and the job's end sets its stage."""
    add_mapping("ENG")
    job = _old_trigger_waits_undelivered(tracker, "ENG-22")
    tracker.lag_listing("ENG-22")
    del tracker.fail["set_stage"]
    outbox.deliver(now=later(hours=1))
    assert tracker.stage_labels("ENG-22") == {"AI-Working"}  # the trigger was taken off
    if page == "with a dispatch":
        tracker.add("ENG-23")
    tracker.calls.clear()
    report = run_cycle()
    assert "ENG-22" not in report.blocked and _reads(tracker, "ENG-22") == 1
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    assert tracker.stage_labels("ENG-22") == set()
    tracker.catch_up()
    assert run_cycle().dispatched == [] and len(jobs_of("ENG-22")) == 1


def test_a_trigger_applied_again_is_kept_when_the_listing_lags(app, client, tracker, runner, add_mapping):
    """A listing lagging behind the tracker shows the old trigger, then a person applies it again:
    the read of the cycle after says so, and the trigger is kept. Each cycle reads the issue once
    until the wait is known to be a new trigger's; then no more."""
    from aiimpl_core.services.dispatch import TRIGGER_GONE_ON_READ

    add_mapping("ENG")
    tracker.add("ENG-24")
    tracker.lag_listing("ENG-24")
    run_cycle()
    [job] = jobs_of("ENG-24")
    assert run_cycle().skipped["ENG-24"] == TRIGGER_GONE_ON_READ
    tracker.trigger("ENG-24")
    assert run_cycle().blocked["ENG-24"]["reason"] == "dedup"
    assert _reads(tracker, "ENG-24") == 2
    assert run_cycle().blocked["ENG-24"]["reason"] == "dedup"
    assert _reads(tracker, "ENG-24") == 2  # a wait known to be a new trigger's reads nothing
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    assert "AI-Implement" in tracker.issues["ENG-24"].labels  # the newer trigger stays
    tracker.catch_up()
    assert len(run_cycle().dispatched) == 1 and len(jobs_of("ENG-24")) == 2


def test_a_tracker_failing_the_reads_again_is_backed_off_once_not_read_issue_by_issue(
    app, tracker, runner, add_mapping
):
    """The listing lags for two issues and the tracker then fails their reads: the first failure
    backs the tracker off, as a failed listing does, and the other issue is not read (each read
    would wait out the same outage); nothing is recorded as a new trigger."""
    from aiimpl_core.services import poller

    add_mapping("ENG", max_in_progress=5)
    for key in ("ENG-26", "ENG-27"):
        tracker.add(key)
        tracker.lag_listing(key)
    run_cycle()
    tracker.calls.clear()
    tracker.fail["get_issue"] = fail_with(503, "unavailable")
    report = run_cycle()
    assert _reads(tracker, "ENG-26") + _reads(tracker, "ENG-27") == 1
    assert poller.backoff_of("ticketing", "fake-tracker").error == "unavailable"
    assert len(report.errors) == 1 and report.errors[0].endswith("unavailable"), report.errors
    assert not report.blocked


def test_a_wait_while_the_job_s_stage_change_waits_reads_nothing(app, tracker, runner, add_mapping):
    """Only an issue whose trigger was taken off is read again: while the job's stage change waits
    for its retry, the listing that shows the trigger holds the issue as ever, without a read."""
    add_mapping("ENG")
    tracker.add("ENG-25")
    tracker.fail["set_stage"] = fail_with(503, "unavailable")
    run_cycle()
    assert run_cycle().skipped["ENG-25"] == "trigger already dispatched"
    assert _reads(tracker, "ENG-25") == 0


def test_planning_failure_comment(app, client, tracker, runner, add_mapping):
    add_mapping("ENG", planning_enabled=True, planning_workflow_file="ai-plan.yml")
    tracker.add("ENG-4")
    run_cycle()
    [job] = jobs_of("ENG-4")
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): denied")
    assert tracker.comments["ENG-4"][0] == "⚠️ Planning failed: git clone failed (exit 128): denied"
    assert tracker.stage_labels("ENG-4") == set()


def test_review_failed_posts_the_pr_and_the_review_label(app, client, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-5")
    run_cycle()
    [job] = jobs_of("ENG-5")
    pr_url = "https://github.com/acme/eng/pull/5"
    resp = post_result(
        client,
        runner,
        job.id,
        outcome="success",
        prUrl=pr_url,
        error="review found blockers",
        review={"approved": False, "blockers": ["SQL built by string concatenation"]},
    )
    assert resp.get_json()["status"] == "review_failed"
    assert tracker.comments["ENG-5"] == [
        f"🔗 PR #5 (not ready for review): {pr_url}",
        "⚠️ Implementation failed: review found blockers",
        "Log excerpt (`post_push_review_not_approved`):\n\n```\n- SQL built by string concatenation\n```",
    ]


@pytest.mark.parametrize(
    ("state", "expected_status", "expected_reason", "comments"),
    [
        (
            {
                "phase": RunPhase.FAILED,
                "detail": "container exited with code 2",
                "exit_code": 2,
                "log_label": LogLabel.CONTAINER_FAILED,
                "log_excerpt": "npm ERR! missing script",
            },
            "failed",
            None,
            [
                "⚠️ Implementation failed: container exited with code 2",
                "Log excerpt (`container_failed`):\n\n```\nnpm ERR! missing script\n```",
            ],
        ),
        (
            {"phase": RunPhase.FAILED, "exit_code": 1, "log_excerpt": "Traceback …"},
            "failed",
            None,
            [
                "⚠️ Implementation failed: the run exited with code 1",
                "Log excerpt (`session_failed`):\n\n```\nTraceback …\n```",
            ],
        ),
        (
            {
                "phase": RunPhase.TIMED_OUT,
                "timeout_reason": TimeoutReason.MACHINE_TIMEOUT,
                "log_excerpt": "still running",
            },
            "timed_out",
            "machine_timeout",
            [
                "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)",
                "Log excerpt (`machine_timeout`):\n\n```\nstill running\n```",
            ],
        ),
        (
            {
                "phase": RunPhase.TIMED_OUT,
                "timeout_reason": TimeoutReason.CONTAINER_TIMEOUT,
                "log_excerpt": "tick",
            },
            "timed_out",
            "container_timeout",
            [
                "⚠️ Implementation failed: the local Docker session exceeded its lifetime (container_timeout)",
                "Log excerpt (`container_timeout`):\n\n```\ntick\n```",
            ],
        ),
        (
            {"phase": RunPhase.TIMED_OUT, "timeout_reason": TimeoutReason.TIMED_OUT},
            "timed_out",
            "timed_out",
            ["⚠️ Implementation failed: the GitHub Actions run reported a timeout (timed_out)"],
        ),
    ],
)
def test_reconciler_ends_runs_the_backend_reports(
    app, tracker, runner, add_mapping, state, expected_status, expected_reason, comments
):
    add_mapping("ENG")
    tracker.add("ENG-8")
    run_cycle()
    [job] = jobs_of("ENG-8")
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    assert jobs_of("ENG-8")[0].status == "running"

    state = dict(state)  # the parameters are shared between the SQLite and PostgreSQL runs
    phase = state.pop("phase")
    runner.set_state(job.id, phase, **state)
    report = run_cycle()
    [job] = jobs_of("ENG-8")
    assert report.reconciled["ended"] == 1
    assert (job.status, job.timeout_reason) == (expected_status, expected_reason)
    assert tracker.comments["ENG-8"] == comments
    assert tracker.stage_labels("ENG-8") == set()
    assert transitions(job) == ["unknown", "dispatched", "running", expected_status]
    # terminal statuses never change
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    assert jobs_of("ENG-8")[0].status == expected_status


@pytest.mark.parametrize(
    ("planning", "label", "reason"),
    [
        (False, "pr_not_found", "⚠️ Implementation failed: the run finished without opening a pull request"),
        (True, "session_failed", "⚠️ Planning failed: the run finished without reporting a result"),
    ],
)
def test_run_over_without_a_result_fails_after_the_grace_period(
    app, tracker, runner, add_mapping, planning, label, reason
):
    add_mapping("ENG", planning_enabled=planning, planning_workflow_file="p.yml" if planning else None)
    tracker.add("ENG-9")
    run_cycle()
    [job] = jobs_of("ENG-9")
    runner.set_state(job.id, RunPhase.SUCCEEDED, log_excerpt="done, no result sent")
    run_cycle(now=later(seconds=30))
    assert jobs_of("ENG-9")[0].status == "dispatched"  # /runner/result may still arrive
    run_cycle(now=later(minutes=4))
    assert jobs_of("ENG-9")[0].status == "dispatched"
    run_cycle(now=later(minutes=6))
    [job] = jobs_of("ENG-9")
    assert job.status == "failed" and job.log_label == label
    assert tracker.comments["ENG-9"] == [
        reason,
        f"Log excerpt (`{label}`):\n\n```\ndone, no result sent\n```",
    ]


def test_result_after_the_backend_reported_success_wins(app, client, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-10")
    run_cycle()
    [job] = jobs_of("ENG-10")
    runner.set_state(job.id, RunPhase.SUCCEEDED)
    run_cycle()
    resp = post_result(client, runner, job.id, outcome="success", prUrl="https://github.com/acme/eng/pull/10")
    assert resp.get_json()["status"] == "completed"
    run_cycle(now=later(minutes=10))
    assert jobs_of("ENG-10")[0].status == "completed"


def test_run_not_found_when_no_run_is_ever_linked(app, tracker, add_mapping, runner):
    runner.link_on_dispatch = False
    add_mapping("ENG")
    tracker.add("ENG-11")
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-11")
    assert job.status == "dispatched" and job.run_id is None
    runner.runs.pop(job.id)  # the backend never heard of it: NOT_FOUND
    run_cycle(now=later(minutes=9))
    assert jobs_of("ENG-11")[0].status == "dispatched"  # inside the window
    run_cycle(now=later(minutes=11))
    [job] = jobs_of("ENG-11")
    assert (job.status, job.timeout_reason) == ("timed_out", "run_not_found")
    assert tracker.comments["ENG-11"] == [
        "⚠️ Implementation failed: no run was linked to the dispatch within the time limit (run_not_found)"
    ]


def test_pending_run_is_linked_and_not_timed_out(app, tracker, add_mapping, runner):
    runner.link_on_dispatch = False
    add_mapping("ENG")
    tracker.add("ENG-12")
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-12")
    assert job.run_id is None
    runner.set_state(job.id, RunPhase.PENDING, run_url="https://runs.test/x")
    report = run_cycle()
    assert report.reconciled["linked"] == 1
    [job] = jobs_of("ENG-12")
    assert job.run_id and job.run_url == "https://runs.test/x"
    run_cycle(now=later(minutes=20))
    assert jobs_of("ENG-12")[0].status == "dispatched"


def test_crash_between_claim_and_launch_ends_run_not_found_and_never_dispatches_twice(
    app, tracker, runner, add_mapping
):
    add_mapping("ENG")
    tracker.add("ENG-13")
    job = claim_without_launch(tracker, "ENG-13")
    assert job.status == "unknown"

    # "restart": new cycles neither launch it nor dispatch the trigger again
    tracker.trigger("ENG-13")
    run_cycle()
    run_cycle(now=later(minutes=5))
    assert [j.status for j in jobs_of("ENG-13")] == ["unknown"]
    assert runner.runs == {} and runner.poll_calls == []  # never handed to the backend
    run_cycle(now=later(minutes=11))
    [job] = jobs_of("ENG-13")
    assert (job.status, job.timeout_reason) == ("timed_out", "run_not_found")
    assert runner.runs == {}


def test_refused_dispatch_fails_the_job_with_a_comment(app, tracker, runner, add_mapping, caplog):
    from aiimpl_core.testing.fakes import dispatch_refused

    runner.dispatch_error = dispatch_refused(422)
    add_mapping("ENG")
    tracker.add("ENG-14")
    with caplog.at_level(logging.INFO, logger="aiimpl_core.services.dispatch"):
        report = run_cycle()
    [job] = jobs_of("ENG-14")
    assert job.status == "failed" and report.dispatched[0].error
    # the operator's log says it (a server's poll cycle or webhook prints no report), and the
    # cycle's summary does not count it as dispatched
    assert [r.getMessage() for r in caplog.records if r.name == "aiimpl_core.services.dispatch"] == [
        f"dispatch of ENG-14 (job {job.id}) failed: {report.dispatched[0].error}"]
    assert "0 dispatched, 1 failed to dispatch, 0 blocked" in report.summary()
    assert tracker.comments["ENG-14"][0].startswith(
        "⚠️ Implementation failed: dispatch to Fake github-actions failed"
    )
    assert tracker.stage_labels("ENG-14") == set()


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("raises", "dispatch to Fake github-actions failed: unexpected error (RuntimeError); "
                   "the orchestrator's log has the details"),
        ("answers-none", "dispatch to Fake github-actions failed: the backend answered NoneType, "
                         "not a DispatchResult"),
        ("cannot-be-set-up", "preparing the session failed: the runner provider 'github-actions' "
                             "could not be set up (RuntimeError); the orchestrator's log has the details"),
        ("model-fails", "preparing the session failed: unexpected error (KeyError); "
                        "the orchestrator's log has the details"),
    ],
    ids=["raises", "answers-none", "cannot-be-set-up", "model-fails"],
)
def test_a_plugin_that_breaks_while_launching_fails_the_job_at_once(
    app, tracker, runner, add_mapping, monkeypatch, how, reason
):
    """Whatever a plugin raises or answers while a job is launched ends the job ``failed`` with a
    comment, at once: never a job left ``unknown`` until ``run_not_found``, never the plugin's own
    message (it may quote a setting) on the ticket."""
    from aiimpl_core.services import launch

    secret = "ghp_plugin_message_secret"
    if how == "raises":
        runner.dispatch_error = RuntimeError(f"token {secret} refused")
    elif how == "answers-none":
        monkeypatch.setattr(runner.backend_class, "dispatch", lambda self, request: None)
    elif how == "cannot-be-set-up":
        def broken(self, context):  # noqa: ANN001, ANN202
            raise RuntimeError(f"token {secret} is malformed")

        monkeypatch.setattr(runner.backend_class, "__init__", broken)
        app.extensions["aiimpl"]._instances.clear()
    else:
        def failing_env(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise KeyError(secret)

        monkeypatch.setattr(launch, "build_request", failing_env)
    add_mapping("ENG")
    tracker.add("ENG-40")
    report = run_cycle()
    [job] = jobs_of("ENG-40")
    assert (job.status, job.error) == ("failed", reason)
    [error] = report.errors
    assert error.startswith("ENG-40: ") and error.endswith(reason.split(" failed: ", 1)[1])
    assert tracker.comments["ENG-40"][0] == f"⚠️ Implementation failed: {reason}"
    assert secret not in " ".join(tracker.comments["ENG-40"]) + str(report.errors)
    assert tracker.stage_labels("ENG-40") == set()


def test_a_session_that_reports_before_its_dispatch_returns_keeps_its_run(
    app, client, tracker, runner, add_mapping, monkeypatch
):
    """A runner that starts fast reports before the backend's answer is recorded: the job is
    ``running`` by then, and the launch still records the run the backend started."""
    add_mapping("ENG")
    tracker.add("ENG-15")
    backend = app.extensions["aiimpl"].runner("github-actions")
    dispatch = type(backend).dispatch
    answers = []

    def reporting_first(self, request):
        result = dispatch(self, request)
        answers.append(client.post("/api/status", json={"nonce": request.env["AIIMPL_NONCE"],
                                                        "event": "session_created"}))
        return result

    monkeypatch.setattr(type(backend), "dispatch", reporting_first)
    report = run_cycle()
    assert [a.status_code for a in answers] == [200]
    [job] = jobs_of("ENG-15")
    run = runner.runs[job.id]
    assert (job.status, job.run_id, job.run_url) == ("running", run.run_id, f"https://runs.test/{run.run_id}")
    assert report.dispatched[0].status == "running" and not report.errors
    assert transitions(job) == ["unknown", "running"]


def test_shadow_mode_records_everything_and_touches_nothing(app, tracker, runner, add_mapping):
    settings.put(settings.RUNNER_MODE_KEY, "shadow")
    add_mapping("ENG")
    add_mapping("OPS", paused=True)
    tracker.add("ENG-20")
    tracker.add("OPS-1")

    report = run_cycle()
    [job] = jobs_of("ENG-20")
    assert job.shadow and job.status == "dispatched" and job.runner_mode == "shadow"
    assert report.blocked["OPS-1"]["reason"] == "paused"
    assert runner.runs == {}  # no runner started
    assert {op for op, _ in tracker.calls} == {"iter_triggered"}  # nothing written to the tracker
    assert tracker.stage_labels("ENG-20") == {"AI-Implement"}  # the trigger stays: no stage written

    run_cycle(now=later(minutes=5))
    assert len(jobs_of("ENG-20")) == 1  # same trigger: not dispatched twice
    assert runner.poll_calls == []  # no backend asked about shadow jobs

    run_cycle(now=later(minutes=11))
    [job] = jobs_of("ENG-20")
    assert (job.status, job.timeout_reason) == ("timed_out", "run_not_found")
    items = outbox_of("ENG-20")
    assert items and {i.state for i in items} == {"shadow"} and {i.op for i in items} == {"comment"}
    assert {op for op, _ in tracker.calls} == {"iter_triggered"}
    assert tracker.comments["ENG-20"] == []

    # the trigger removed and applied again by a person: a new trigger, a new shadow job
    tracker.issues["ENG-20"].labels.discard("AI-Implement")
    run_cycle(now=later(minutes=12))
    tracker.trigger("ENG-20")
    run_cycle(now=later(minutes=13))
    assert len(jobs_of("ENG-20")) == 2


def test_runner_mode_env_override_wins(app, tracker, runner, add_mapping):
    app.config["RUNNER_MODE"] = "shadow"
    settings.put(settings.RUNNER_MODE_KEY, "default")
    add_mapping("ENG")
    tracker.add("ENG-21")
    run_cycle()
    [job] = jobs_of("ENG-21")
    assert job.shadow and runner.runs == {}


def _fails_while_the_tracker_is_down(client, tracker, runner, add_mapping, key):  # noqa: ANN001, ANN202
    """Dispatch ``key``, then post its failure while the tracker refuses comments."""
    from aiimpl_core.testing.fakes import fail_with

    add_mapping("ENG")
    tracker.add(key)
    run_cycle()
    [job] = jobs_of(key)
    tracker.fail["post_comment"] = fail_with(503, "tracker down")
    resp = post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): x")
    assert resp.status_code == 200
    return job


def test_outbox_retries_a_failed_comment_then_delivers_it_once(app, client, tracker, runner, add_mapping):
    _fails_while_the_tracker_is_down(client, tracker, runner, add_mapping, "ENG-30")
    assert tracker.comments["ENG-30"] == []
    run_cycle()
    assert tracker.comments["ENG-30"] == []
    del tracker.fail["post_comment"]
    run_cycle(now=later(hours=2))
    run_cycle(now=later(hours=3))
    assert tracker.comments["ENG-30"] == [
        "⚠️ Implementation failed: git clone failed (exit 128): x",
        "Log excerpt (`session_failed`):\n\n```\ngit clone failed (exit 128): x\n```",
    ]
    assert tracker.stage_labels("ENG-30") == set()
    assert {i.state for i in outbox_of("ENG-30")} == {"done"}


def test_a_stage_change_held_back_behind_a_failed_comment_is_due_again_at_once(
    app, client, tracker, runner, add_mapping
):
    """Stage changes are taken for sending together at the start of a delivery; one held back
    because an earlier comment of its issue failed is given back (due again), not left taken
    until its lease runs out."""
    from aiimpl_core.orm import utcnow

    _fails_while_the_tracker_is_down(client, tracker, runner, add_mapping, "ENG-31")
    waiting = [(i.op, i.state) for i in outbox_of("ENG-31") if i.state != "done"]
    assert waiting == [("comment", "pending"), ("comment", "pending"), ("stage", "pending")], waiting
    [stage] = [i for i in outbox_of("ENG-31") if i.op == "stage" and i.state != "done"]
    assert stage.next_attempt_at <= utcnow() and stage.attempts == 0
    del tracker.fail["post_comment"]
    run_cycle(now=later(hours=2))
    assert {i.state for i in outbox_of("ENG-31")} == {"done"}
    assert tracker.stage_labels("ENG-31") == set() and len(tracker.comments["ENG-31"]) == 2


def test_a_run_far_past_its_lifetime_is_stopped_as_machine_timeout(app, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-40")
    run_cycle()
    [job] = jobs_of("ENG-40")
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    run_cycle(now=later(minutes=65))  # past the 60-minute lifetime, inside the grace
    assert jobs_of("ENG-40")[0].status == "running"
    run_cycle(now=later(minutes=75))
    [job] = jobs_of("ENG-40")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert runner.destroyed == [job.run_id]  # the backend was asked to stop it
    assert tracker.comments["ENG-40"][0] == (
        "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)"
    )


def test_a_session_is_judged_by_the_lifetime_it_was_started_with(
    app, tracker, runner, add_mapping, monkeypatch
):
    """Lowering the lifetime setting (and restarting) stopped the sessions already running as
    overruns: each job keeps the lifetime its session was started with, and told."""
    from sqlalchemy import update

    add_mapping("ENG", max_in_progress=5)
    tracker.add("ENG-50")
    run_cycle()
    monkeypatch.setitem(app.config, "AIIMPL_SESSION_LIFETIME_SECONDS", 600)
    tracker.add("ENG-51")
    tracker.add("ENG-52")
    run_cycle()
    long, short, older = (jobs_of(key)[0] for key in ("ENG-50", "ENG-51", "ENG-52"))
    assert (long.lifetime_seconds, short.lifetime_seconds) == (3600, 600)
    sent = {job.id: runner.runs[job.id].request for job in (long, short)}
    assert [sent[long.id].lifetime_seconds, sent[long.id].env["AIIMPL_LIFETIME_SECONDS"]] == [3600, "3600"]
    assert [sent[short.id].lifetime_seconds, sent[short.id].env["AIIMPL_LIFETIME_SECONDS"]] == [600, "600"]
    # a job dispatched before lifetimes were recorded is judged by the setting, as it was
    db.session.execute(update(Job).where(Job.id == older.id).values(lifetime_seconds=None))
    db.session.commit()
    for job in (long, short, older):
        runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()

    run_cycle(now=later(minutes=25))  # 10 minutes and the grace have passed, not 60
    keys = ("ENG-50", "ENG-51", "ENG-52")
    ended = {key: (jobs_of(key)[0].status, jobs_of(key)[0].timeout_reason) for key in keys}
    assert ended == {"ENG-50": ("running", None), "ENG-51": ("timed_out", "machine_timeout"),
                     "ENG-52": ("timed_out", "machine_timeout")}
    assert sorted(runner.destroyed) == sorted([short.run_id, older.run_id])

    run_cycle(now=later(minutes=75))
    [long] = jobs_of("ENG-50")
    assert (long.status, long.timeout_reason) == ("timed_out", "machine_timeout")


def test_one_jobs_trouble_in_linking_its_run_leaves_the_others_linked(
    app, tracker, runner, add_mapping, monkeypatch
):
    """Runs to link are recorded together; when that fails, each job is tried on its own, so only
    the troubled one waits for the next pass."""
    from aiimpl_core.services import reconcile as reconcile_mod

    runner.link_on_dispatch = False
    add_mapping("ENG", max_in_progress=5)
    for n in (1, 2, 3):
        tracker.add(f"ENG-{n}")
    run_cycle(reconcile=False)
    jobs = {key: jobs_of(key)[0] for key in ("ENG-1", "ENG-2", "ENG-3")}
    for job in jobs.values():
        runner.set_state(job.id, RunPhase.PENDING)
    troubled = jobs["ENG-2"].id
    original = reconcile_mod._link

    def link(job, state):
        changed = original(job, state)
        if job.id == troubled:
            db.session.flush()
            raise RuntimeError("disk full")
        return changed

    monkeypatch.setattr(reconcile_mod, "_link", link)
    report = reconcile()
    assert report.linked == 2
    runs = {k: (jobs_of(k)[0].status, jobs_of(k)[0].run_id) for k in jobs}
    assert runs == {
        "ENG-1": ("dispatched", runner.runs[jobs["ENG-1"].id].run_id),
        "ENG-2": ("dispatched", None),
        "ENG-3": ("dispatched", runner.runs[jobs["ENG-3"].id].run_id),
    }

    monkeypatch.setattr(reconcile_mod, "_link", original)
    assert reconcile().linked == 1  # the next pass links it
    assert jobs_of("ENG-2")[0].run_id == runner.runs[troubled].run_id


def test_one_jobs_trouble_in_a_reconcile_pass_leaves_the_others_applied(
    app, tracker, runner, add_mapping, monkeypatch
):
    """The reconciler applies a backend's changed jobs in one transaction, each in a savepoint: a
    job whose update fails is logged and looked at again next pass; the others are kept."""
    from aiimpl_core.services import reconcile as reconcile_mod

    add_mapping("ENG", max_in_progress=5)
    for n in (1, 2, 3):
        tracker.add(f"ENG-{n}")
    run_cycle()
    jobs = {key: jobs_of(key)[0] for key in ("ENG-1", "ENG-2", "ENG-3")}
    for job in jobs.values():
        runner.set_state(job.id, RunPhase.FAILED, detail="boom")
    troubled = jobs["ENG-2"].id
    original = reconcile_mod.end_job

    def end_job(job, outcome):
        ended = original(job, outcome)
        if job.id == troubled:
            raise RuntimeError("disk full")
        return ended

    monkeypatch.setattr(reconcile_mod, "end_job", end_job)
    announced: list[tuple[int, str]] = []
    facade = app.extensions["aiimpl"]
    monkeypatch.setattr(facade, "job_status_changed",
                        lambda job_id, issue_key, old, new, backend: announced.append((job_id, str(new))))
    report = run_cycle()
    assert report.reconciled["ended"] == 2
    # plugins hear of the two endings that were kept, not of the one that was undone
    assert sorted(announced) == sorted((jobs[k].id, "failed") for k in ("ENG-1", "ENG-3"))
    assert set(report.reconciled["endings"]) == {str(jobs["ENG-1"].id), str(jobs["ENG-3"].id)}
    assert [jobs_of(k)[0].status for k in ("ENG-1", "ENG-2", "ENG-3")] == ["failed", "dispatched", "failed"]

    monkeypatch.setattr(reconcile_mod, "end_job", original)
    report = run_cycle()  # the next pass ends it
    assert report.reconciled["endings"] == {str(troubled): "failed"}
    assert jobs_of("ENG-2")[0].status == "failed"
    assert len(tracker.comments["ENG-2"]) == len(tracker.comments["ENG-1"])  # its comments once


def test_a_lagging_listing_does_not_dispatch_an_ended_job_again(app, tracker, runner, add_mapping):
    """A tracker's search may still show a trigger our last stage change removed (Jira's index
    lags): an issue that ran before is read again before it is dispatched once more."""
    from aiimpl_core.services.dispatch import TRIGGER_GONE_ON_READ
    from aiimpl_core.testing.fakes import dispatch_refused

    runner.dispatch_error = dispatch_refused(422)
    add_mapping("ENG")
    tracker.add("ENG-15")
    tracker.lag_listing("ENG-15")  # the search goes on showing the issue as triggered
    run_cycle()
    [failed] = jobs_of("ENG-15")
    assert failed.status == "failed" and not tracker.issues["ENG-15"].labels  # the trigger is gone

    tracker.calls.clear()
    report = run_cycle()
    assert len(jobs_of("ENG-15")) == 1 and report.skipped["ENG-15"] == TRIGGER_GONE_ON_READ
    assert ("get_issue", "ENG-15") in tracker.calls

    runner.dispatch_error = None
    tracker.trigger("ENG-15")  # a person triggers it again: the read confirms it
    report = run_cycle()
    assert [j.status for j in jobs_of("ENG-15")] == ["failed", "dispatched"]
    assert [d.issue_key for d in report.dispatched] == ["ENG-15"]


def test_a_first_dispatch_reads_nothing_more_than_the_listing(app, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-16")
    run_cycle()
    assert len(jobs_of("ENG-16")) == 1
    assert [op for op, _ in tracker.calls if op == "get_issue"] == []


@pytest.mark.parametrize(
    ("mode", "execution_mode", "message"),
    [
        ("local", "github-actions",
         "Runner mode local selects no installed and enabled runner backend. Install or enable its "
         "plugin, or change the runner mode."),
        ("default", "fly-machines",
         "No runner backend fly-machines is installed and enabled. Install or enable its plugin, or "
         "change the project's executionMode."),
    ],
    ids=["mode-without-backend", "execution-mode-not-installed"],
)
def test_no_installed_backend_holds_issues_instead_of_failing_them(
    app, tracker, runner, add_mapping, mode, execution_mode, message
):
    """A runner mode (or a project's executionMode) that no installed plugin provides: the issues
    wait with a blocker that says what to do, none is failed on its ticket, and --force cannot
    start a job that could only fail."""
    from aiimpl_core.services.dispatch import dispatch_issue

    settings.put(settings.RUNNER_MODE_KEY, mode)
    mapping = add_mapping("ENG", execution_mode=execution_mode)
    tracker.add("ENG-41")
    report = run_cycle()
    assert report.blocked["ENG-41"] == {"reason": "backend-unavailable", "message": message}
    assert jobs_of("ENG-41") == [] and tracker.comments["ENG-41"] == []
    assert dispatch_issue("ENG-41", force=True).blocked["ENG-41"]["message"] == message
    assert jobs_of("ENG-41") == []
    settings.put(settings.RUNNER_MODE_KEY, "default")  # the project names an installed backend
    mapping.execution_mode = "github-actions"
    db.session.commit()
    run_cycle()
    assert [j.status for j in jobs_of("ENG-41")] == ["dispatched"]


def test_the_log_follows_each_job_from_its_creation_to_its_end(app, client, tracker, runner, add_mapping,
                                                               caplog):
    """An operator follows an issue through the server's log: its job created, dispatched and
    ended, with why (a failure's reason on one line, however the runner wrote it)."""
    add_mapping("ENG")
    tracker.add("ENG-1")
    with caplog.at_level(logging.INFO, logger="aiimpl_core.services.jobs"):
        run_cycle()
        [job] = jobs_of("ENG-1")
        resp = post_result(client, runner, job.id, outcome="failure", error="git clone failed\n(exit 128)")
        assert resp.get_json()["status"] == "failed"
    said = [r.getMessage() for r in caplog.records if r.name == "aiimpl_core.services.jobs"]
    assert said == [
        f"job {job.id} of ENG-1 created: implementation on github-actions (unknown)",
        f"job {job.id} of ENG-1: unknown -> dispatched",
        f"job {job.id} of ENG-1: dispatched -> failed (git clone failed (exit 128))",
    ]


def test_a_reason_cut_in_the_log_is_masked_whole_first(app, client, tracker, runner, add_mapping, caplog):
    """A secret the process knows straddling the 200th character was logged as its first part."""
    from aiimpl_core import logs

    secret = "sk-live-" + "s" * 30
    logs.mask(secret)
    try:
        add_mapping("ENG")
        tracker.add("ENG-1")
        with caplog.at_level(logging.INFO, logger="aiimpl_core.services.jobs"):
            run_cycle()
            [job] = jobs_of("ENG-1")
            post_result(client, runner, job.id, outcome="failure", error="x" * 190 + secret)
        [ended] = [r.getMessage() for r in caplog.records if "-> failed" in r.getMessage()]
        assert secret[:8] not in ended and ended.endswith("[REDACTED])")
    finally:
        logs.SECRETS.clear()
