"""The reference's "Job steps and issue lists" table (every row) and the dispatch log, issue list
and Blockers view the admin UI reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiimpl_core.errors import ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker, Job, JobStep, JobTransition, TrackedIssue


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def make_job(issue_key: str = "ENG-1", status: str = "dispatched", **kw: Any) -> Job:
    team = issue_key.rsplit("-", 1)[0]
    job = Job(
        issue_key=issue_key,
        team_key=team,
        phase=kw.pop("phase", "implementation"),
        status=status,
        backend="github-actions",
        owner="acme",
        repo="api",
        **kw,
    )
    db.session.add(job)
    db.session.commit()
    return job


# The reference's table, every row: (id, request, status, body).
def test_job_steps_and_issue_lists_table(client, admin_headers, adm_tracker, adm_mapping) -> None:
    adm_mapping("ENG")
    # 404 job not found — for an unknown id and for an id that is no number at all
    for path in ("/api/jobs/999/steps", "/api/jobs/abc/steps", "/api/jobs/99999999999999/steps"):
        resp = client.get(path, headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (404, {"error": "job not found"}), path
    # 502 (underlying error message) — fetching issues from the ticketing provider failed
    adm_tracker.fail["iter_triggered"] = ProviderError("Linear API error: rate limited (HTTP 429)")
    resp = client.get("/api/issues?refresh=1", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (
        502,
        {"error": "Linear API error: rate limited (HTTP 429)"},
    )


def test_a_tracker_crash_is_a_502_without_a_traceback(client, admin_headers, adm_tracker) -> None:
    adm_tracker.fail["iter_triggered"] = RuntimeError("secret=hunter2")
    resp = client.get("/api/issues?refresh=1", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (502, {"error": "Fake tracker: RuntimeError"})


def test_a_tracker_yielding_no_page_is_a_502_naming_what_it_yielded(
    client, admin_headers, adm_tracker, monkeypatch
) -> None:
    monkeypatch.setattr(adm_tracker.provider_class, "iter_triggered",
                        lambda self, teams: iter([{"issues": []}]))
    resp = client.get("/api/issues?refresh=1", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (
        502,
        {"error": "iter_triggered of 'fake-tracker' yielded dict, not a TriggeredPage"},
    )


def test_steps_in_order(client, admin_headers) -> None:
    job = make_job()
    db.session.add_all(
        [
            JobStep(
                job_id=job.id,
                step_id="clone",
                type="clone",
                status="succeeded",
                started_at="2026-01-01T10:00:00Z",
                finished_at="2026-01-01T10:00:05Z",
                source="runner",
            ),
            JobStep(
                job_id=job.id,
                step_id="agent",
                type="agent",
                status="running",
                started_at="2026-01-01T10:00:06Z",
                detail={"turns": 3},
                source="session",
            ),
        ]
    )
    db.session.commit()
    resp = client.get(f"/api/jobs/{job.id}/steps", headers=admin_headers)
    assert resp.status_code == 200
    assert resp.get_json() == [
        {
            "id": "clone",
            "type": "clone",
            "status": "succeeded",
            "startedAt": "2026-01-01T10:00:00Z",
            "finishedAt": "2026-01-01T10:00:05Z",
            "detail": None,
            "source": "runner",
        },
        {
            "id": "agent",
            "type": "agent",
            "status": "running",
            "startedAt": "2026-01-01T10:00:06Z",
            "finishedAt": None,
            "detail": {"turns": 3},
            "source": "session",
        },
    ]
    empty = make_job("ENG-2")
    assert client.get(f"/api/jobs/{empty.id}/steps", headers=admin_headers).get_json() == []


def test_jobs_list_filters_and_detail(client, admin_headers) -> None:
    first = make_job("ENG-1", status="completed", pr_number=7, pr_url="https://github.com/acme/api/pull/7")
    second = make_job("WEB-2", status="running")
    third = make_job("ENG-3", status="timed_out", timeout_reason="machine_timeout")
    listed = client.get("/api/jobs", headers=admin_headers).get_json()
    assert [j["id"] for j in listed] == [third.id, second.id, first.id]
    assert (
        listed[2]["prUrl"] == "https://github.com/acme/api/pull/7"
        and listed[0]["timeoutReason"] == "machine_timeout"
    )
    by_status = client.get("/api/jobs?status=running", headers=admin_headers).get_json()
    assert [j["id"] for j in by_status] == [second.id]
    waiting = make_job("WEB-4", status="dispatched")
    # every job not ended, as aiimpl jobs list --status active lists them
    active = client.get("/api/jobs?status=active", headers=admin_headers).get_json()
    assert [j["id"] for j in active] == [waiting.id, second.id]
    db.session.delete(waiting)
    db.session.commit()
    by_team = client.get("/api/jobs?team=ENG&limit=1", headers=admin_headers).get_json()
    assert [j["id"] for j in by_team] == [third.id]
    by_issue = client.get("/api/jobs?issue=ENG-1", headers=admin_headers).get_json()
    assert [j["id"] for j in by_issue] == [first.id]

    db.session.add_all(
        [
            JobTransition(job_id=first.id, from_status=None, to_status="unknown"),
            JobTransition(job_id=first.id, from_status="unknown", to_status="completed", reason="PR opened"),
        ]
    )
    db.session.commit()
    detail = client.get(f"/api/jobs/{first.id}", headers=admin_headers)
    assert detail.status_code == 200
    assert [(t["fromStatus"], t["toStatus"], t["reason"]) for t in detail.get_json()["transitions"]] == [
        (None, "unknown", None),
        ("unknown", "completed", "PR opened"),
    ]
    missing = client.get("/api/jobs/12345", headers=admin_headers)
    assert (missing.status_code, missing.get_json()) == (404, {"error": "job not found"})


@pytest.mark.parametrize(
    "query,message",
    [
        (
            "status=bogus",
            "status must be one of: unknown, dispatched, running, completed, review_failed, "
            "failed, timed_out, active",
        ),
        ("team=" + "x" * 65, "team must be 1 to 64 characters"),
        ("issue=", "issue must be 1 to 64 characters"),
        ("limit=0", "limit must be an integer between 1 and 500"),
        ("limit=abc", "limit must be an integer between 1 and 500"),
        ("limit=501", "limit must be an integer between 1 and 500"),
        ("limit=1_0", "limit must be an integer between 1 and 500"),
        ("limit=%2B5", "limit must be an integer between 1 and 500"),
    ],
)
def test_jobs_list_rejects_bad_filters(client, admin_headers, query, message) -> None:
    resp = client.get(f"/api/jobs?{query}", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (400, {"error": message})


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("/api/jobs", "status=failed&status=completed", "status"),
        ("/api/jobs", "limit=5&limit=abc", "limit"),
        ("/api/jobs", "limit=abc&limit=5", "limit"),
        ("/api/jobs", "team=ENG&team=ENG", "team"),
        ("/api/jobs", "status=bogus&issue=ENG-1&issue=ENG-2", "issue"),
        ("/api/issues", "refresh=1&refresh=0", "refresh"),
        ("/api/issues", "limit=2&limit=3", "limit"),
        ("/api/blockers", "limit=2&limit=2", "limit"),
    ],
)
def test_a_filter_given_more_than_once_is_refused(
    client, admin_headers, adm_tracker, path, query, name
) -> None:
    """A repeated filter was cut to its first value (``request.args.to_dict()``):
    ``status=failed&status=completed`` listed the failed jobs alone, and ``limit=5&limit=abc`` was 200
    while ``limit=abc&limit=5`` was 400. It is refused, before any value is looked at."""
    make_job("ENG-1", status="failed")
    make_job("ENG-2", status="completed")
    resp = client.get(f"{path}?{query}", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (400, {"error": f"{name} given more than once"})
    assert not [op for op, _ in adm_tracker.calls if op == "iter_triggered"]  # no tracker was asked


def test_a_parameter_the_list_does_not_read_may_repeat(client, admin_headers) -> None:
    """(a cache buster, say: it is ignored, however often it is given)"""
    make_job("ENG-1", status="failed")
    resp = client.get("/api/jobs?status=failed&_=1&_=2", headers=admin_headers)
    assert resp.status_code == 200 and [j["issueKey"] for j in resp.get_json()] == ["ENG-1"]


def test_issues_with_stage_and_latest_job(client, admin_headers) -> None:
    db.session.add_all(
        [
            TrackedIssue(
                issue_key="ENG-1",
                team_key="ENG",
                provider="fake-tracker",
                title="Health check",
                url="https://tracker.test/ENG-1",
                stage="pr_opened",
                triggered=False,
            ),
            TrackedIssue(
                issue_key="ENG-2", team_key="ENG", provider="fake-tracker", title="Other", triggered=True
            ),
            TrackedIssue(
                issue_key="ENG-3", team_key="ENG", provider="fake-tracker", title="Seen", triggered=False
            ),
        ]
    )
    db.session.commit()
    make_job("ENG-1", status="failed")
    latest = make_job("ENG-1", status="completed", pr_number=9, pr_url="https://github.com/acme/api/pull/9")
    issues = {i["issueKey"]: i for i in client.get("/api/issues", headers=admin_headers).get_json()}
    assert issues["ENG-1"]["stage"] == "pr_opened" and issues["ENG-1"]["stageTitle"] == "PR opened"
    assert issues["ENG-1"]["latestJob"]["id"] == latest.id and issues["ENG-1"]["latestJob"]["prNumber"] == 9
    # a triggered issue no stage has moved yet is in the reference's first stage (a Jira issue in
    # Ready, a Linear issue with the trigger label: its Stage column was empty)
    assert issues["ENG-2"]["latestJob"] is None
    assert (issues["ENG-2"]["stage"], issues["ENG-2"]["stageTitle"]) == ("triggered", "Triggered")
    assert (issues["ENG-3"]["stage"], issues["ENG-3"]["stageTitle"]) == (None, None)


def test_issues_refresh_reads_every_configured_tracker_live(
    client, admin_headers, adm_tracker, adm_mapping
) -> None:
    adm_mapping("ENG")
    adm_tracker.add("ENG-2", title="Second")
    adm_tracker.add("OPS-1", title="Unmapped team")
    adm_tracker.issues["ENG-1"].labels = {"AI-Working"}  # no longer triggered
    resp = client.get("/api/issues?refresh=1", headers=admin_headers)
    assert resp.status_code == 200
    assert sorted(i["issueKey"] for i in resp.get_json()) == ["ENG-2", "OPS-1"]
    assert {i["stageTitle"] for i in resp.get_json()} == {"Triggered"}
    assert ("iter_triggered", ("ENG",)) in adm_tracker.calls


def _tracked(key: str, updated: datetime) -> TrackedIssue:
    return TrackedIssue(issue_key=key, team_key=key.rsplit("-", 1)[0], provider="fake-tracker", title=key,
                        created_at=updated, updated_at=updated)


def test_issues_are_cut_to_the_limit_most_recently_updated_first(client, admin_headers) -> None:
    """Tracked issues are never deleted: the list is the ones the orchestrator saw or changed last
    (100 unless ``limit`` says otherwise), not every issue ever tracked."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # created in the order ENG-1 … ENG-101, but ENG-1 was updated last of all
    db.session.add_all(_tracked(f"ENG-{n}", start + timedelta(minutes=n)) for n in range(2, 102))
    db.session.add(_tracked("ENG-1", start + timedelta(days=1)))
    db.session.commit()
    listed = [i["issueKey"] for i in client.get("/api/issues", headers=admin_headers).get_json()]
    assert listed == ["ENG-1"] + [f"ENG-{n}" for n in range(101, 2, -1)]  # 100: ENG-2 is left out
    two = client.get("/api/issues?limit=2", headers=admin_headers).get_json()
    assert [i["issueKey"] for i in two] == ["ENG-1", "ENG-101"]
    every = client.get("/api/issues?limit=500", headers=admin_headers).get_json()
    assert len(every) == 101 and every[-1]["issueKey"] == "ENG-2"


def test_live_issues_are_cut_to_the_limit_the_tracker_updated_last_first(
    client, admin_headers, adm_tracker, adm_mapping, monkeypatch
) -> None:
    from aiimpl_core.types import TrackerIssue, TriggeredPage

    adm_mapping("ENG")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    page = TriggeredPage(
        (
            TrackerIssue("ENG-1", "ENG", "Old", "fake-tracker", updated_at=start),
            TrackerIssue("ENG-2", "ENG", "Undated", "fake-tracker"),
            TrackerIssue("ENG-3", "ENG", "New", "fake-tracker", updated_at=start + timedelta(hours=1)),
        ),
        complete=True,
    )
    monkeypatch.setattr(adm_tracker.provider_class, "iter_triggered", lambda self, teams: iter([page]))
    listed = client.get("/api/issues?refresh=1", headers=admin_headers).get_json()
    assert [i["issueKey"] for i in listed] == ["ENG-3", "ENG-1", "ENG-2"]
    cut = client.get("/api/issues?refresh=1&limit=2", headers=admin_headers).get_json()
    assert [i["issueKey"] for i in cut] == ["ENG-3", "ENG-1"]


@pytest.mark.parametrize("path", ["/api/issues", "/api/issues?refresh=1&", "/api/blockers"])
@pytest.mark.parametrize("limit", ["0", "-1", "abc", "", "501", "1.5", "99999999999999999999",
                                   # int() takes these: a space, a sign, an underscore, Arabic-Indic 3
                                   "%205", "%2B5", "1_0", "%D9%A3"])
def test_issue_lists_refuse_a_bad_limit(client, admin_headers, adm_tracker, path, limit) -> None:
    sep = "" if path.endswith("&") else "?"
    resp = client.get(f"{path}{sep}limit={limit}", headers=admin_headers)
    message = "limit must be an integer between 1 and 500"
    assert (resp.status_code, resp.get_json()) == (400, {"error": message})
    assert not [op for op, _ in adm_tracker.calls if op == "iter_triggered"]  # no tracker was asked


def test_blockers_are_cut_to_the_limit_blocked_longest_first(client, admin_headers) -> None:
    since = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    db.session.add_all(
        Blocker(issue_key=f"ENG-{n}", team_key="ENG", provider="fake-tracker", reason="concurrency",
                message="at concurrency cap (2/2). Waiting for a slot.",
                first_seen_at=since + timedelta(minutes=-n), last_seen_at=since)
        for n in range(1, 102)
    )
    db.session.commit()
    listed = [b["issueKey"] for b in client.get("/api/blockers", headers=admin_headers).get_json()]
    assert listed == [f"ENG-{n}" for n in range(101, 1, -1)]  # 100: ENG-1, blocked last, is left out
    two = client.get("/api/blockers?limit=2", headers=admin_headers).get_json()
    assert [b["issueKey"] for b in two] == ["ENG-101", "ENG-100"]
    assert len(client.get("/api/blockers?limit=500", headers=admin_headers).get_json()) == 101


def test_blockers(client, admin_headers) -> None:
    since = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    db.session.add_all(
        [
            Blocker(
                issue_key="ENG-4",
                team_key="ENG",
                provider="fake-tracker",
                title="Busy",
                reason="concurrency",
                message="at concurrency cap (2/2). Waiting for a slot.",
                first_seen_at=since,
                last_seen_at=since + timedelta(minutes=5),
            ),
            Blocker(
                issue_key="OPS-1",
                team_key="OPS",
                provider="fake-tracker",
                title="Unmapped",
                reason="no-mapping",
                message="No mapping for team OPS. Add one in Projects.",
                first_seen_at=since + timedelta(minutes=1),
                last_seen_at=since + timedelta(minutes=5),
            ),
        ]
    )
    db.session.commit()
    rows = client.get("/api/blockers", headers=admin_headers).get_json()
    assert rows == [
        {
            "issueKey": "ENG-4",
            "teamKey": "ENG",
            "provider": "fake-tracker",
            "reason": "concurrency",
            "message": "at concurrency cap (2/2). Waiting for a slot.",
            "title": "Busy",
            "since": "2026-01-01T09:00:00Z",
            "lastSeenAt": "2026-01-01T09:05:00Z",
        },
        {
            "issueKey": "OPS-1",
            "teamKey": "OPS",
            "provider": "fake-tracker",
            "reason": "no-mapping",
            "message": "No mapping for team OPS. Add one in Projects.",
            "title": "Unmapped",
            "since": "2026-01-01T09:01:00Z",
            "lastSeenAt": "2026-01-01T09:05:00Z",
        },
    ]
