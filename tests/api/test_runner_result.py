"""``POST /runner/result``: every row of the reference's table, and how results end jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select

from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db
from aiimpl_core.orm import ConsumedToken, Job, OutboxItem, TrackedIssue
from aiimpl_core.testing.fakes import fail_with
from aiimpl_core.testing.orchestrator import each_released_together

URL = "/runner/result"
PR_URL = "https://github.com/acme/api/pull/42"
MAX_TURNS = "LLM invocation failed with exit code 1: … Reached max turns (50)"


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    from aiimpl_core.testing.fakes import FakeRunner

    # a local runner too: a timeout on it is a container's
    return [cb_tracker.plugin, cb_runner.plugin, FakeRunner("local-docker", "local").plugin]


def ok_body(**over):
    body = {"outcome": "success", "phase": "implementation", "comments": [], "prUrl": PR_URL, "prNumber": 42}
    body.update(over)
    return body


def _post(client, token, body=None, raw=None, headers=None):
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    hdrs.update(headers or {})
    if raw is not None:
        return client.post(URL, data=raw, headers=hdrs, content_type="application/json")
    if body is None:
        return client.post(URL, headers=hdrs)
    return client.post(URL, json=body, headers=hdrs)


def _job(job_id):
    db.session.commit()  # end the test's read transaction: see what the server committed
    return db.session.get(Job, job_id)


# The reference's table, row by row: (status, error, how to provoke it).
BODY_ROWS = [
    # invalid_body: Body is missing or not a JSON object
    ("invalid_body", None, None),
    ("invalid_body", None, b"not json"),
    ("invalid_body", None, b"[1, 2]"),
    ("invalid_body", None, b"null"),
    ("invalid_body", None, b'"a string"'),
    ("invalid_body", None, b"42"),
    ("invalid_body", None, b"\xff\xfe\x00"),
    ("invalid_body", None, b"[" * 100000 + b"]" * 100000),
    # invalid_comment_shape: A comment entry is not an object with a string body
    ("invalid_comment_shape", ok_body(comments=[1]), None),
    ("invalid_comment_shape", ok_body(comments=["text"]), None),
    ("invalid_comment_shape", ok_body(comments=[{}]), None),
    ("invalid_comment_shape", ok_body(comments=[{"body": "ok"}, {"body": 7}]), None),
    ("invalid_comment_shape", ok_body(comments=[{"body": None}]), None),
    # invalid_comments: comments is missing or not an array
    ("invalid_comments", {k: v for k, v in ok_body().items() if k != "comments"}, None),
    ("invalid_comments", ok_body(comments="text"), None),
    ("invalid_comments", ok_body(comments={"body": "x"}), None),
    ("invalid_comments", ok_body(comments=None), None),
    # invalid_outcome: outcome is not success or failure
    ("invalid_outcome", ok_body(outcome="maybe"), None),
    ("invalid_outcome", {k: v for k, v in ok_body().items() if k != "outcome"}, None),
    ("invalid_outcome", ok_body(outcome=True), None),
    # invalid_phase: phase is not planning, implementation, or gap-analysis
    ("invalid_phase", ok_body(phase="build"), None),
    ("invalid_phase", {k: v for k, v in ok_body().items() if k != "phase"}, None),
    ("invalid_phase", ok_body(phase=["planning"]), None),
    # missing_prUrl: A successful implementation result did not include a PR URL
    ("missing_prUrl", {k: v for k, v in ok_body().items() if k != "prUrl"}, None),
    ("missing_prUrl", ok_body(prUrl=""), None),
    ("missing_prUrl", ok_body(prUrl=None), None),
    ("missing_prUrl", ok_body(prUrl="   "), None),  # a blank URL is no URL
    ("missing_prUrl", ok_body(prUrl="\t\n"), None),
    # phase_mismatch: The token's phase does not match the body
    ("phase_mismatch", ok_body(phase="planning"), None),
    ("phase_mismatch", ok_body(phase="gap-analysis", outcome="failure"), None),
]


@pytest.mark.parametrize(("error", "body", "raw"), BODY_ROWS)
def test_result_table_400_rows(client, cb_job, cb_token, error, body, raw):
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_RESULT)
    resp = _post(client, token, body=body, raw=raw)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json() == {"error": error}
    # a refused result consumes nothing and ends nothing
    assert _job(job_id).status == "dispatched"
    assert db.session.scalar(select(ConsumedToken)) is None


def test_result_table_first_failing_rule_in_table_order(client, cb_job, cb_token):
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_RESULT)
    everything_wrong = {"outcome": "maybe", "phase": "build", "comments": [3]}
    assert _post(client, token, everything_wrong).get_json() == {"error": "invalid_comment_shape"}
    assert _post(client, token, {"outcome": "maybe", "phase": "build"}).get_json() == {
        "error": "invalid_comments"
    }
    assert _post(client, token, {"outcome": "maybe", "phase": "build", "comments": []}).get_json() == {
        "error": "invalid_outcome"
    }
    # missing_prUrl comes before phase_mismatch, as in the table
    assert _post(client, token, ok_body(prUrl=None)).get_json() == {"error": "missing_prUrl"}


def _other_secret_token(job_id):
    return tokens.issue_run_token(
        "another-secret-entirely-000000000", job_id, "implementation", tokens.AUD_RESULT, 600
    )


AUTH_ROWS = [
    ("bad_signature", lambda j, t: _other_secret_token(j), {}),
    (
        "expired",
        lambda j, t: t(j, "implementation", tokens.AUD_RESULT, now=datetime.now(UTC) - timedelta(hours=5)),
        {},
    ),
    ("malformed", lambda j, t: "not-a-jwt", {}),
    ("malformed", lambda j, t: "a.b.c", {}),
    ("wrong_audience", lambda j, t: t(j, "implementation", tokens.AUD_PROGRESS), {}),
    ("wrong_audience", lambda j, t: t(j, "implementation", tokens.AUD_PLANNING_CONTEXT), {}),
    ("missing_bearer", lambda j, t: None, {}),
    ("missing_bearer", lambda j, t: None, {"Authorization": "Basic dXNlcjpwYXNz"}),
    ("missing_bearer", lambda j, t: None, {"Authorization": "Bearer"}),
    ("missing_bearer", lambda j, t: None, {"Authorization": "Bearer two words"}),
]


@pytest.mark.parametrize(("error", "make", "headers"), AUTH_ROWS)
def test_result_table_401_rows(client, cb_job, cb_token, error, make, headers):
    job_id, _ = cb_job()
    resp = _post(client, make(job_id, cb_token), body=ok_body(), headers=headers)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": error}
    assert _job(job_id).status == "dispatched"


def test_result_table_409_already_consumed(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job()
    token = cb_token(job_id, "implementation", tokens.AUD_RESULT)
    first = _post(client, token, ok_body())
    assert first.status_code == 200, first.get_json()
    second = _post(client, token, ok_body(outcome="failure", error="late"))
    assert second.status_code == 409
    assert second.get_json() == {"error": "already_consumed"}
    assert _job(job_id).status == "completed"
    assert not any("late" in c for c in cb_tracker.comments["ENG-1"])


def test_result_for_missing_job_is_404(client, cb_token):
    resp = _post(client, cb_token(999, "implementation", tokens.AUD_RESULT), ok_body())
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "job_not_found"}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("costUsd", "1.5", "costUsd"),
        ("turns", 1.5, "turns"),
        ("turns", True, "turns"),
        ("durationSeconds", -1, "durationSeconds"),
        ("prNumber", "42", "prNumber"),
        # a field nested in an object is named by its dotted path
        ("review", {"approved": "no"}, "review.approved"),
        ("review", {"blockers": []}, "review.approved"),
        ("review", "yes", "review"),
        ("logLabel", "weird", "logLabel"),
        ("error", 3, "error"),
    ],
)
def test_result_wrongly_typed_optional_field(client, cb_job, cb_token, field, value, named):
    job_id, _ = cb_job()
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), ok_body(**{field: value}))
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "invalid_field", "field": named}


def test_result_body_too_large_is_invalid_body(client, cb_job, cb_token):
    job_id, _ = cb_job()
    huge = json.dumps(ok_body(comments=[{"body": "x" * (3 * 1024 * 1024)}])).encode()
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), raw=huge)
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "invalid_body"}


# -- how results end jobs --------------------------------------------------------------------


def test_success_with_pr_completes_and_comments(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job()
    body = ok_body(
        comments=[{"body": "Implemented the health check."}], costUsd=0.42, turns=17, durationSeconds=321.5
    )
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), body)
    assert resp.status_code == 200
    assert resp.get_json() == {"jobId": job_id, "status": "completed", "ended": True}
    job = _job(job_id)
    assert (job.pr_url, job.pr_number, job.cost_usd, job.turns, job.duration_seconds) == (
        PR_URL,
        42,
        0.42,
        17,
        321.5,
    )
    posted = cb_tracker.comments["ENG-1"]
    assert posted[0] == "Implemented the health check."
    assert f"🔗 PR #42 is ready for review: {PR_URL}" in posted
    assert cb_tracker.stage_labels("ENG-1") == {"Ready for Review"}
    assert db.session.scalar(select(ConsumedToken.job_id)) == job_id


def test_pr_number_is_read_from_the_url_when_missing(client, cb_job, cb_token):
    job_id, _ = cb_job()
    _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), ok_body(prNumber=None))
    assert _job(job_id).pr_number == 42


def test_spaces_around_the_pr_url_are_dropped(client, cb_job, cb_token):
    job_id, _ = cb_job()
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT),
                 ok_body(prUrl=f"  {PR_URL}\n", prNumber=None))
    assert resp.status_code == 200, resp.get_json()
    job = _job(job_id)
    assert (job.pr_url, job.pr_number) == (PR_URL, 42)


def test_review_not_approved_is_review_failed(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job()
    body = ok_body(review={"approved": False, "blockers": ["SQL injection in search", "no tests"]})
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), body)
    assert resp.get_json()["status"] == "review_failed"
    job = _job(job_id)
    assert job.log_label == "post_push_review_not_approved"
    assert job.log_excerpt == "- SQL injection in search\n- no tests"
    posted = "\n".join(cb_tracker.comments["ENG-1"])
    assert "Log excerpt (`post_push_review_not_approved`)" in posted
    assert "- SQL injection in search" in posted


def test_review_approved_completes(client, cb_job, cb_token):
    job_id, _ = cb_job()
    body = ok_body(review={"approved": True, "blockers": []})
    assert _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), body).get_json()[
        "status"
    ] == ("completed")


# The reference's "Run failure messages", as the session words them.
@pytest.mark.parametrize(
    ("error", "label", "expected_label", "kind"),
    [
        (MAX_TURNS, None, "session_failed", "max_turns"),
        (
            "LLM invocation failed with exit code 1: API Error: overloaded",
            None,
            "session_failed",
            "agent_failed",
        ),
        (
            "Nothing to commit: Claude left no file changes in the working tree",
            None,
            "pr_not_found",
            "no_changes",
        ),
        (
            "PR creation failed with HTTP 422: A pull request already exists",
            None,
            "session_failed",
            "push_or_pr_failed",
        ),
        ("git push failed (exit 1): protected branch", None, "session_failed", "push_or_pr_failed"),
        (
            "git clone failed (exit 128): repository not found",
            "container_failed",
            "container_failed",
            "clone_failed",
        ),
        ("Setup failed (exit 2): npm ERR!", None, "session_failed", "other"),
    ],
)
def test_failure_ends_failed_with_reason_and_label(
    client, cb_job, cb_token, cb_tracker, error, label, expected_label, kind
):
    job_id, _ = cb_job()
    body = {
        "outcome": "failure",
        "phase": "implementation",
        "comments": [],
        "error": error,
        "logExcerpt": "last lines of the log",
    }
    if label:
        body["logLabel"] = label
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), body)
    assert resp.get_json() == {"jobId": job_id, "status": "failed", "ended": True, "failureKind": kind}
    job = _job(job_id)
    assert job.error == error
    assert job.log_label == expected_label
    posted = cb_tracker.comments["ENG-1"]
    assert f"⚠️ Implementation failed: {error}" in posted
    assert f"Log excerpt (`{expected_label}`):\n\n```\nlast lines of the log\n```" in posted


@pytest.mark.parametrize(
    ("backend", "sent", "reason"),
    [
        ("github-actions", "machine_timeout", "machine_timeout"),
        ("local-docker", "machine_timeout", "container_timeout"),
        ("local-docker", "container_timeout", "container_timeout"),
        ("github-actions", "container_timeout", "machine_timeout"),
    ],
)
def test_a_failure_labelled_as_a_timeout_ends_timed_out(
    client, cb_job, cb_token, cb_tracker, backend, sent, reason
):
    """The session reports its time budget running out as a failure with a timeout's log label
    (the result has no timeout outcome): the job is timed out, with its runner's timeout."""
    job_id, _ = cb_job(backend=backend)
    error = "the wall-clock budget of 3540s ran out while the agent was running"
    body = {"outcome": "failure", "phase": "implementation", "comments": [], "error": error,
            "logLabel": sent, "logExcerpt": "last lines of the log"}
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), body)
    assert resp.get_json() == {"jobId": job_id, "status": "timed_out", "ended": True}
    job = _job(job_id)
    assert (job.status, job.timeout_reason, job.log_label, job.error) == ("timed_out", reason, reason, error)
    posted = cb_tracker.comments["ENG-1"]
    assert f"⚠️ Implementation failed: {error}" in posted
    assert f"Log excerpt (`{reason}`):\n\n```\nlast lines of the log\n```" in posted


def test_a_timeout_result_needs_no_instance_of_its_runner_backend(
    app, client, cb_job, cb_token, cb_runner, cb_tracker, monkeypatch
):
    """The timeout's reason is its runner's (a container's or a machine's), which the backend's
    class says: an instance that could not be set up in the web process (a setting it lacks)
    refused the result with a 400 of its own, and the job, its error and excerpt were lost."""
    job_id, _ = cb_job()

    def set_up_fails(self, context):  # noqa: ANN001, ARG001
        raise RuntimeError("AIIMPL_GITHUB_APP_ID is not set")

    monkeypatch.setattr(cb_runner.backend_class, "__init__", set_up_fails)
    app.extensions["aiimpl"]._instances.clear()
    body = {"outcome": "failure", "phase": "implementation", "comments": [], "error": "out of time",
            "logLabel": "machine_timeout", "logExcerpt": "last lines of the log"}
    resp = _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), body)
    assert resp.get_json() == {"jobId": job_id, "status": "timed_out", "ended": True}
    job = _job(job_id)
    assert (job.status, job.timeout_reason, job.error) == ("timed_out", "machine_timeout", "out of time")


def test_a_reason_already_naming_its_phase_is_not_repeated(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job()
    body = {
        "outcome": "failure",
        "phase": "implementation",
        "comments": [],
        "error": "Implementation failed: git clone failed (exit 128): denied",
    }
    _post(client, cb_token(job_id, "implementation", tokens.AUD_RESULT), body)
    assert "⚠️ Implementation failed: git clone failed (exit 128): denied" in cb_tracker.comments["ENG-1"]


def test_planning_failure_uses_planning_prefix(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job(phase="planning")
    body = {"outcome": "failure", "phase": "planning", "comments": [], "error": MAX_TURNS}
    _post(client, cb_token(job_id, "planning", tokens.AUD_RESULT), body)
    assert f"⚠️ Planning failed: {MAX_TURNS}" in cb_tracker.comments["ENG-1"]


def test_planning_success_stores_the_plan(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job(phase="planning")
    body = {
        "outcome": "success",
        "phase": "planning",
        "comments": [{"body": "Note for humans"}],
        "plan": "1. Add route\n2. Add test",
    }
    resp = _post(client, cb_token(job_id, "planning", tokens.AUD_RESULT), body)
    assert resp.get_json()["status"] == "completed"
    tracked = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == "ENG-1"))
    assert tracked.plan == "1. Add route\n2. Add test"
    assert tracked.stage == "plan_complete"
    assert _job(job_id).plan == "1. Add route\n2. Add test"
    posted = cb_tracker.comments["ENG-1"]
    assert "Note for humans" in posted
    assert any(c.startswith("📋 Plan ready for review.\n\n1. Add route") for c in posted)
    assert cb_tracker.stage_labels("ENG-1") == {"Plan-Complete"}


def test_planning_plan_falls_back_to_the_comments(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job(phase="planning")
    body = {
        "outcome": "success",
        "phase": "planning",
        "comments": [{"body": "Step one"}, {"body": "Step two"}],
    }
    _post(client, cb_token(job_id, "planning", tokens.AUD_RESULT), body)
    assert _job(job_id).plan == "Step one\n\nStep two"
    # posted once, as the plan, not a second time as loose comments
    assert sum("Step one" in c for c in cb_tracker.comments["ENG-1"]) == 1


def test_result_for_a_timed_out_job_keeps_its_status(client, cb_job, cb_token, cb_tracker):
    job_id, _ = cb_job(status="timed_out", timeout_reason="machine_timeout")
    token = cb_token(job_id, "implementation", tokens.AUD_RESULT)
    resp = _post(client, token, ok_body())
    assert resp.status_code == 200
    assert resp.get_json() == {"jobId": job_id, "status": "timed_out", "ended": False}
    assert _job(job_id).status == "timed_out"
    assert _post(client, token, ok_body()).get_json() == {"error": "already_consumed"}


def test_tracker_failure_does_not_change_the_answer(client, cb_job, cb_token, cb_tracker):
    cb_tracker.fail["post_comment"] = fail_with(503, "tracker down")
    job_id, _ = cb_job()
    resp = _post(
        client, cb_token(job_id, "implementation", tokens.AUD_RESULT), ok_body(comments=[{"body": "hello"}])
    )
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "completed"
    pending = db.session.scalars(select(OutboxItem).where(OutboxItem.op == "comment")).all()
    assert pending and all(item.state == "pending" for item in pending)
    assert cb_tracker.comments["ENG-1"] == []


def test_runner_comments_are_deduplicated_per_job_and_index(client, cb_job, cb_token):
    job_id, _ = cb_job()
    _post(
        client,
        cb_token(job_id, "implementation", tokens.AUD_RESULT),
        ok_body(comments=[{"body": "one"}, {"body": "two"}]),
    )
    keys = set(db.session.scalars(select(OutboxItem.dedupe_key).where(OutboxItem.kind == "runner")))
    assert keys == {f"result:{job_id}:0", f"result:{job_id}:1"}


def _race(base_url: str, token: str) -> list[tuple[int, dict]]:
    """Post a success and a failure with the same result token at the same moment."""
    failure = {"outcome": "failure", "phase": "implementation", "comments": [], "error": "boom"}

    def post(body: dict) -> Callable[[None], tuple[int, dict]]:
        def send(_: None) -> tuple[int, dict]:
            r = requests.post(base_url + URL, json=body, headers={"Authorization": f"Bearer {token}"},
                              timeout=60)
            return r.status_code, r.json()
        return send

    return each_released_together(nullcontext, [post(ok_body()), post(failure)], timeout=60)


def test_concurrent_results_one_wins_one_conflicts(app, cb_live_server, cb_job, cb_token, cb_tracker):
    """Two posts of one result token race through a real threaded server, several times."""
    for n in range(1, 6):
        cb_tracker.add(f"ENG-{100 + n}")
        job_id, _ = cb_job(f"ENG-{100 + n}")
        answers = _race(cb_live_server, cb_token(job_id, "implementation", tokens.AUD_RESULT))
        assert sorted(code for code, _ in answers) == [200, 409], answers
        assert {"error": "already_consumed"} in [body for _, body in answers]
        winner = next(body for code, body in answers if code == 200)
        job = _job(job_id)
        assert job.status == winner["status"] in ("completed", "failed")
        assert len(job.transitions) == 1  # ended exactly once (the fixture records no creation)
