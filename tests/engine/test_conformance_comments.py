"""The reference's "Ticket comments", "Blocker reasons" and "Job status values" rows that no other
test drives end to end: a progress comment without a log link, whole failing and timed-out
sessions in the order their comments reach the ticket, the defaults of fields a runner left out,
and the statuses late reports cannot change."""

from __future__ import annotations

import re

from aiimpl_core.testing import orchestrator

from .conftest import claim_without_launch, first_lines, jobs_of, post_result, post_status, session_env

STAMP = r"\n\n_\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC_"
LINKED = r"\n\n_\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · \[Machine logs\]\(https://runs\.test/run-\d+\)_"


def _dispatched(tracker, add_mapping, key="ENG-1", **mapping):  # noqa: ANN001, ANN202
    add_mapping("ENG", **mapping)
    tracker.add(key)
    orchestrator.poll_once(reconcile=False)
    [job] = jobs_of(key)
    return job


def test_a_progress_comment_has_its_timestamp_and_no_link_when_none_is_known(
    app, client, tracker, runner, add_mapping
):
    runner.link_on_dispatch = False  # no run (so no run URL) yet, and the session sends no logUrl
    job = _dispatched(tracker, add_mapping)
    assert post_status(client, runner, job.id, "session_created").status_code == 200
    [body] = tracker.comments["ENG-1"]
    text = "🚀 Session machine created. Cloning repo and running setup…"
    assert re.fullmatch(re.escape(text) + STAMP, body), body


def test_a_failing_session_posts_its_comments_in_order(app, client, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping)
    reason = ("LLM invocation failed with exit code 1: Reached max turns (50). Work so far is on branch "
              "`ai/ENG-1` (commit abc1234).")
    events = [("session_created", {}), ("environment_ready", {}), ("session_failed", {"reason": reason}),
              ("session_cleaned_up", {"duration": "3m 2s"})]
    for event, fields in events:
        assert post_status(client, runner, job.id, event, **fields).status_code == 200
    resp = post_result(client, runner, job.id, outcome="failure", error=reason,
                       logExcerpt="Reached max turns")
    assert resp.get_json()["status"] == "failed"
    comments = tracker.comments["ENG-1"]
    assert first_lines(comments) == [
        "🚀 Session machine created. Cloning repo and running setup…",
        "✅ Environment ready. Claude is implementing…",
        # one full stop: the template's, not the reason's as well
        f"⚠️ Session failed: {reason[:-1]}. Machine will be cleaned up.",
        "🧹 Session machine cleaned up. Duration: 3m 2s",
        f"⚠️ Implementation failed: {reason}",
        "Log excerpt (`session_failed`):",
    ]
    for body in comments[:4]:
        assert re.search(LINKED + r"\Z", body), body
    assert comments[5] == "Log excerpt (`session_failed`):\n\n```\nReached max turns\n```"
    assert tracker.stage_labels("ENG-1") == set()


def test_a_session_that_runs_out_of_time_posts_the_timed_out_comments(
    app, client, tracker, runner, add_mapping
):
    job = _dispatched(tracker, add_mapping)
    reason = "the wall-clock budget of 3600s ran out while the agent was running"
    for event, fields in [("session_created", {}), ("session_timed_out", {"reason": reason}),
                          ("session_cleaned_up", {"duration": "60m 0s"})]:
        assert post_status(client, runner, job.id, event, **fields).status_code == 200
    resp = post_result(client, runner, job.id, outcome="failure", error=reason, logLabel="machine_timeout",
                       logExcerpt="agent still running")
    assert resp.get_json()["status"] == "timed_out"
    [job] = jobs_of("ENG-1")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    comments = tracker.comments["ENG-1"]
    assert first_lines(comments[1:]) == [
        f"⚠️ Session timed out: {reason}. Machine will be cleaned up.",
        "🧹 Session machine cleaned up. Duration: 60m 0s",
        f"⚠️ Implementation failed: {reason}",
        "Log excerpt (`machine_timeout`):",
    ]
    assert comments[3:] == [
        f"⚠️ Implementation failed: {reason}",
        "Log excerpt (`machine_timeout`):\n\n```\nagent still running\n```",
    ]
    assert tracker.stage_labels("ENG-1") == set()


def test_fields_a_runner_left_out_read_as_text_not_as_a_gap(app, client, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping)
    for event in ("session_timed_out", "session_failed", "verification_failed", "session_cleaned_up"):
        assert post_status(client, runner, job.id, event).status_code == 200
    assert first_lines(tracker.comments["ENG-1"]) == [
        "⚠️ Session timed out: time budget exceeded. Machine will be cleaned up.",
        "⚠️ Session failed: unknown error. Machine will be cleaned up.",
        "❌ Verification failed: see the logs",
        "🧹 Session machine cleaned up. Duration: unknown",
    ]


def test_fields_a_runner_sent_blank_read_as_left_out(app, client, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping)
    for event, field in (("verification_failed", "detail"), ("session_cleaned_up", "duration"),
                         ("session_failed", "reason")):
        assert post_status(client, runner, job.id, event, **{field: " \n\t "}).status_code == 200
    assert first_lines(tracker.comments["ENG-1"]) == [
        "❌ Verification failed: see the logs",
        "🧹 Session machine cleaned up. Duration: unknown",
        "⚠️ Session failed: unknown error. Machine will be cleaned up.",
    ]


def test_a_review_without_a_message_still_says_why(app, client, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping)
    url = "https://github.com/acme/eng/pull/3"
    resp = post_result(client, runner, job.id, outcome="success", prUrl=url,
                       review={"approved": False, "blockers": ["no tests", "SQL by concatenation"]})
    assert resp.get_json()["status"] == "review_failed"
    assert tracker.comments["ENG-1"] == [
        f"🔗 PR #3 (not ready for review): {url}",
        "⚠️ Implementation failed: the post-push review flagged blockers",
        "Log excerpt (`post_push_review_not_approved`):\n\n```\n- no tests\n- SQL by concatenation\n```",
    ]
    assert tracker.stage_labels("ENG-1") == set()


def test_statuses_move_forward_only(app, client, tracker, runner, add_mapping):
    """running is not undone by a backend that still lists the run as queued; a terminal status is
    not changed by late progress, a late result, or the backend."""
    from aiimpl_core.types import RunPhase

    job = _dispatched(tracker, add_mapping)
    env = session_env(runner, job.id)
    assert orchestrator.post_progress(client, env, "clone").status_code == 200
    assert jobs_of("ENG-1")[0].status == "running"
    runner.set_state(job.id, RunPhase.PENDING)
    orchestrator.reconcile()
    assert jobs_of("ENG-1")[0].status == "running"

    resp = post_result(client, runner, job.id, outcome="success", prUrl="https://github.com/acme/eng/pull/4")
    assert resp.get_json()["status"] == "completed"
    assert orchestrator.post_progress(client, env, "cleanup", status="succeeded").status_code == 200
    runner.set_state(job.id, RunPhase.FAILED, detail="boom")
    orchestrator.poll_once()
    [job] = jobs_of("ENG-1")
    assert job.status == "completed"
    assert [t.to_status for t in job.transitions] == ["unknown", "dispatched", "running", "completed"]
    assert tracker.comments["ENG-1"] == ["🔗 PR #4 is ready for review: https://github.com/acme/eng/pull/4"]


def test_a_job_never_launched_counts_against_the_cap(app, tracker, runner, add_mapping):
    add_mapping("ENG", max_in_progress=1)
    tracker.add("ENG-1")
    claim_without_launch(tracker, "ENG-1")  # unknown: not terminal
    tracker.add("ENG-2")
    report = orchestrator.poll_once()
    assert report.blocked["ENG-2"] == {
        "reason": "concurrency", "message": "at concurrency cap (1/1). Waiting for a slot.",
    }


def test_cancelling_a_job_never_launched_fails_the_issue_with_the_comment(
    app, client, admin_headers, tracker, runner, add_mapping
):
    add_mapping("ENG")
    tracker.add("ENG-1")
    job = claim_without_launch(tracker, "ENG-1")
    assert client.post(f"/api/jobs/{job.id}/cancel", headers=admin_headers).status_code == 200
    orchestrator.poll_once()
    assert tracker.comments["ENG-1"] == ["⚠️ Implementation failed: cancelled by an operator"]
    assert tracker.issues["ENG-1"].labels == set()
    tracker.trigger("ENG-1")
    assert [d.issue_key for d in orchestrator.poll_once().dispatched] == ["ENG-1"]
