"""``GET /runner/planning-context``: every row of the reference's table, and what the context holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db
from aiimpl_core.orm import TrackedIssue
from aiimpl_core.testing.fakes import fail_with

URL = "/runner/planning-context"


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def _get(client, token, headers=None):
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    hdrs.update(headers or {})
    return client.get(URL, headers=hdrs)


AUTH_ROWS = [
    (
        "bad_signature",
        lambda j, t: tokens.issue_run_token("x" * 32, j, "planning", tokens.AUD_PLANNING_CONTEXT, 600),
        {},
    ),
    (
        "expired",
        lambda j, t: t(
            j, "planning", tokens.AUD_PLANNING_CONTEXT, now=datetime.now(UTC) - timedelta(hours=4), ttl=60
        ),
        {},
    ),
    ("malformed", lambda j, t: "%%%", {}),
    ("wrong_audience", lambda j, t: t(j, "planning", tokens.AUD_PROGRESS), {}),
    ("missing_bearer", lambda j, t: None, {}),
    ("missing_bearer", lambda j, t: None, {"Authorization": "bearer"}),
]


@pytest.mark.parametrize(("error", "make", "headers"), AUTH_ROWS)
def test_planning_context_table_401_rows(client, cb_job, cb_token, error, make, headers):
    job_id, _ = cb_job(phase="planning")
    resp = _get(client, make(job_id, cb_token), headers)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": error}


def test_planning_context_for_planning(client, cb_job, cb_token, cb_tracker):
    cb_tracker.comments["ENG-1"].append("Please keep it small.")
    job_id, _ = cb_job(phase="planning")
    resp = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body == {
        "jobId": job_id,
        "phase": "planning",
        "issue": {
            "key": "ENG-1",
            "title": "Add a health check",
            "description": "We need /healthz.",
            "url": "https://tracker.test/ENG-1",
            "comments": [{"body": "Please keep it small.", "author": None, "createdAt": None}],
            "commentsOmitted": 0,
        },
        "issueSource": "tracker",
        "trackerError": None,
        "repository": {"owner": "acme", "repo": "api", "fullName": "acme/api"},
        "baseBranch": "main",
        "branch": "ai/ENG-1",
        "plan": None,
        "prNumber": None,
    }


def test_planning_context_carries_the_newest_comments_within_its_bounds(client, cb_job, cb_token, cb_tracker):
    from aiimpl_core.services import callbacks

    count = callbacks.CONTEXT_MAX_COMMENTS + 30
    cb_tracker.comments["ENG-1"].extend(f"comment {n}" for n in range(count))
    job_id, _ = cb_job(phase="planning")
    issue = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT)).get_json()["issue"]
    assert [c["body"] for c in issue["comments"]] == [f"comment {n}" for n in range(30, count)]
    assert issue["commentsOmitted"] == 30

    # long ones: each cut to a tracker comment's size, and no more characters than the budget in all
    cb_tracker.comments["ENG-1"][:] = ["the oldest", "x" * 50_000, *["y" * 30_000] * 3]
    issue = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT)).get_json()["issue"]
    bodies = [c["body"] for c in issue["comments"]]
    assert bodies == ["y" * 30_000] * 3 and issue["commentsOmitted"] == 2
    cb_tracker.comments["ENG-1"][:] = ["x" * 50_000]
    issue = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT)).get_json()["issue"]
    [cut] = [c["body"] for c in issue["comments"]]
    assert len(cut) == callbacks.CONTEXT_MAX_COMMENT_LENGTH and cut.endswith(callbacks.TRUNCATED)


def test_planning_context_for_implementation_carries_the_approved_plan(client, cb_job, cb_token):
    db.session.add(
        TrackedIssue(
            issue_key="ENG-1",
            team_key="ENG",
            provider="fake-tracker",
            title="Add a health check",
            plan="1. Do it",
        )
    )
    db.session.commit()
    job_id, _ = cb_job()
    body = _get(client, cb_token(job_id, "implementation", tokens.AUD_PLANNING_CONTEXT)).get_json()
    assert body["plan"] == "1. Do it"
    # the job's own plan (given at dispatch) wins over the issue's
    job2, _ = cb_job("ENG-2", plan="job plan", status="running")
    assert _get(client, cb_token(job2, "implementation", tokens.AUD_PLANNING_CONTEXT)).get_json()["plan"] == (
        "job plan"
    )


def test_planning_context_for_gap_analysis_has_the_pr_number(client, cb_job, cb_token):
    job_id, _ = cb_job(phase="gap-analysis", pr_number=42)
    body = _get(client, cb_token(job_id, "gap-analysis", tokens.AUD_PLANNING_CONTEXT)).get_json()
    assert body["prNumber"] == 42
    assert body["plan"] is None


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        ("http-502", "fake-tracker: GET /issue failed with HTTP 502: bad gateway"),
        # a plugin answering no TrackerIssue is named (it said "unexpected error (AttributeError)")
        ("no-issue", "get_issue of 'fake-tracker' answered NoneType, not a TrackerIssue"),
    ],
)
def test_planning_context_falls_back_when_the_tracker_fails(
    client, cb_job, cb_token, cb_tracker, monkeypatch, failure, error
):
    db.session.add(
        TrackedIssue(
            issue_key="ENG-1",
            team_key="ENG",
            provider="fake-tracker",
            title="Cached title",
            url="https://tracker.test/ENG-1",
        )
    )
    db.session.commit()
    if failure == "http-502":
        cb_tracker.fail["get_issue"] = fail_with(502, error)
    else:
        monkeypatch.setattr(cb_tracker.provider_class, "get_issue", lambda self, key: None)
    job_id, _ = cb_job(phase="planning")
    resp = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["issueSource"] == "cache"
    assert body["trackerError"] == error
    assert body["issue"] == {
        "key": "ENG-1",
        "title": "Cached title",
        "description": "",
        "url": "https://tracker.test/ENG-1",
        "comments": [],
        "commentsOmitted": 0,
    }


def test_planning_context_for_a_missing_job_is_404(client, cb_token):
    resp = _get(client, cb_token(555, "planning", tokens.AUD_PLANNING_CONTEXT))
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "job_not_found"}


@pytest.mark.parametrize("status", ["completed", "review_failed", "failed", "timed_out"])
def test_planning_context_of_an_ended_job_is_expired(client, cb_job, cb_token, status):
    job_id, _ = cb_job(phase="planning", status=status)
    resp = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT))
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "expired"}


@pytest.mark.parametrize("status", ["dispatched", "running"])
def test_planning_context_of_a_job_not_ended_is_answered(client, cb_job, cb_token, status):
    job_id, _ = cb_job(phase="planning", status=status)
    resp = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT))
    assert resp.status_code == 200
    assert resp.get_json()["issue"]["title"] == "Add a health check"


def test_a_tracker_error_quoting_a_secret_reaches_the_session_masked(client, cb_job, cb_token, cb_tracker):
    """The session never holds the tracker's credentials: a tracker (or a proxy) echoing them in
    its error must not hand them over in ``trackerError`` (masked as in the log line and in the
    webhook's and ``/api/issues``' answers)."""
    from aiimpl_core import logs

    key = "JIRATOKEN-s3cr3t-abcdef123456"
    logs.mask(key)
    said = f"fake-tracker: GET /issue failed with HTTP 503: down {key}"
    cb_tracker.fail["get_issue"] = fail_with(503, said)
    job_id, _ = cb_job(phase="planning")
    resp = _get(client, cb_token(job_id, "planning", tokens.AUD_PLANNING_CONTEXT))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["issueSource"] == "cache" and key not in resp.get_data(as_text=True)
    assert body["trackerError"].startswith("fake-tracker: GET /issue failed with HTTP 503: down ")
