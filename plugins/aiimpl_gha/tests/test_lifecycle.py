"""Whole runs through the orchestrator with the github-actions backend and the fake GitHub.

Dispatch by the poll cycle → the run GitHub creates is linked to its job (by the dispatch's answer,
or by the reconciler on a server that names no run or when the dispatch's answer was lost) → the
run's end (here GitHub's ``timed_out``) ends the job; the session's ``/api/token`` gets an
installation token for its repository; ``/trigger/gap-fill`` reports GitHub's refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.orm import Mapping as MappingRow
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.fakes import FakeTracker, add_mapping

from aiimpl_gha.backend import GitHubActionsBackend

from .conftest import github_config, list_runs_late

TRIGGER_SECRET = "trigger-secret-for-tests"


@pytest.fixture
def aiimpl_config(gh: FakeGitHub) -> dict[str, Any]:
    return {**github_config(gh), "AIIMPL_TRIGGER_SECRET": TRIGGER_SECRET}


@pytest.fixture
def mapping(app: Any, gh: FakeGitHub) -> Iterator[MappingRow]:
    row = add_mapping(repo="api")
    backend = app.extensions["aiimpl"].runner("github-actions")
    assert isinstance(backend, GitHubActionsBackend)
    backend.sync_workflows(row.view())
    yield row


def job_of(issue_key: str) -> Job:
    db.session.expire_all()
    [job] = db.session.scalars(db.select(Job).where(Job.issue_key == issue_key)).all()
    return job


def test_dispatched_job_is_linked_and_a_timed_out_run_ends_it(
    app: Any, client: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow
) -> None:
    tracker.add("ENG-1", title="Add a health endpoint")
    run_cycle(reconcile=False)
    job = job_of("ENG-1")
    assert (job.status, job.backend) == ("dispatched", "github-actions")
    run = gh.run_named(f"job-{job.id}")
    assert run.title == job.run_name and run.inputs["job_id"] == str(job.id)
    # GitHub's answer to the dispatch named the run
    assert (job.run_id, job.run_url) == (str(run.id), f"https://github.com/acme/api/actions/runs/{run.id}")

    # queued: the reconciler does not call it running
    reconcile()
    job = job_of("ENG-1")
    assert (job.status, job.run_id) == ("dispatched", str(run.id))

    gh.advance_run(run.id, "in_progress")
    reconcile()
    job = job_of("ENG-1")
    assert job.status == "running" and job.run_url == f"https://github.com/acme/api/actions/runs/{run.id}"

    gh.advance_run(run.id, "completed", "timed_out")
    run_cycle()
    job = job_of("ENG-1")
    assert (job.status, job.timeout_reason) == ("timed_out", "timed_out")
    assert tracker.comments["ENG-1"] == [
        "⚠️ Implementation failed: the GitHub Actions run reported a timeout (timed_out)"
    ]


def test_a_run_listed_only_after_a_dispatch_without_an_answer_is_followed_to_its_end(
    app: Any, client: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GitHub made the run but its answer was lost (a gateway's 504), and the listing the dispatch
    # makes right after does not show the run yet: the job waits for it instead of failing
    gh.fail_next("POST", "/dispatches$", 504, "We couldn't respond to your request in time.", done=True)
    list_runs_late(gh, monkeypatch)
    tracker.add("ENG-9")
    tracker.add("ENG-11")
    report = run_cycle(reconcile=False)
    job = job_of("ENG-9")
    assert (job.status, job.run_id) == ("dispatched", None)
    # the dispatcher backs off all the same: the next issue waits rather than dispatch into the
    # same outage
    assert db.session.scalars(db.select(Job).where(Job.issue_key == "ENG-11")).all() == []
    assert report.blocked["ENG-11"]["reason"] == "backend-unavailable"
    run = gh.run_named(f"job-{job.id}")
    # the run's session may use its nonce: its job is still in flight
    resp = client.post("/api/token", json={"nonce": run.inputs["nonce"], "owner": "acme"})
    assert resp.status_code == 200, resp.get_json()

    reconcile(now=utcnow() + timedelta(seconds=31))  # the back-off over, listed now: linked by its name
    job = job_of("ENG-9")
    url = f"https://github.com/acme/api/actions/runs/{run.id}"
    assert (job.status, job.run_id, job.run_url) == ("dispatched", str(run.id), url)
    gh.advance_run(run.id, "in_progress")
    reconcile(now=utcnow() + timedelta(seconds=31))
    assert job_of("ENG-9").status == "running"
    gh.advance_run(run.id, "completed", "failure")
    run_cycle()
    job = job_of("ENG-9")
    assert (job.status, job.run_url) == ("failed", url)
    # the run's failure, not a failed dispatch
    assert tracker.comments["ENG-9"][0] == f"⚠️ Implementation failed: the GitHub Actions run failed: {url}"
    # dispatched once; the issue held back by the back-off went out once it was over
    assert sorted(r.title.rsplit(" ", 2)[0] for r in gh.runs_of("acme", "api")) == [
        "AI-Implement ENG-11", "AI-Implement ENG-9"]


def test_a_dispatch_without_an_answer_whose_run_never_appears_ends_run_not_found(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow
) -> None:
    gh.fail_next("POST", "/dispatches$", 502, "Server Error")  # GitHub made no run after all
    tracker.add("ENG-10")
    run_cycle(reconcile=False)
    assert (job_of("ENG-10").status, job_of("ENG-10").run_id) == ("dispatched", None)
    reconcile(now=utcnow() + timedelta(minutes=9))  # within the run_not_found window
    assert job_of("ENG-10").status == "dispatched"
    reconcile(now=utcnow() + timedelta(minutes=11))
    job = job_of("ENG-10")
    assert (job.status, job.timeout_reason, job.run_id) == ("timed_out", "run_not_found", None)
    assert gh.runs_of("acme", "api") == []  # never dispatched again


def test_failed_run_ends_the_job_failed_with_the_run_link(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow
) -> None:
    tracker.add("ENG-6")
    run_cycle(reconcile=False)
    job = job_of("ENG-6")
    run = gh.run_named(f"job-{job.id}")
    gh.advance_run(run.id, "completed", "failure")
    run_cycle()
    job = job_of("ENG-6")
    url = f"https://github.com/acme/api/actions/runs/{run.id}"
    assert (job.status, job.run_url) == ("failed", url)
    assert tracker.comments["ENG-6"][0] == f"⚠️ Implementation failed: the GitHub Actions run failed: {url}"


def test_session_gets_a_token_for_its_repository_only(
    app: Any, client: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow
) -> None:
    tracker.add("ENG-2")
    run_cycle(reconcile=False)
    job = job_of("ENG-2")
    inputs = gh.run_named(f"job-{job.id}").inputs  # what the workflow run received
    resp = client.post("/api/token", json={"nonce": inputs["nonce"], "owner": "acme"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    issued = gh.tokens[body["token"]]
    assert issued.repositories == {"api"}
    assert issued.permissions == {
        "contents": "write",
        "pull_requests": "write",
        "issues": "write",
        "actions": "read",
    }
    assert body["expiresAt"].startswith(issued.expires_at.strftime("%Y-%m-%dT%H:%M"))
    # the session env passed through inputs names its repository and branch
    env = json.loads(inputs["env"])
    assert env["AIIMPL_REPOSITORY"] == "acme/api" and env["AIIMPL_BRANCH"] == "ai/ENG-2"

    wrong_owner = client.post("/api/token", json={"nonce": inputs["nonce"], "owner": "evil"})
    assert (wrong_owner.status_code, wrong_owner.get_json()) == (403, {"error": "Owner mismatch"})


def test_token_failure_is_the_reference_500(
    app: Any, client: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow
) -> None:
    tracker.add("ENG-3")
    run_cycle(reconcile=False)
    job = job_of("ENG-3")
    inputs = gh.run_named(f"job-{job.id}").inputs
    gh.installations.clear()  # the App was uninstalled
    from aiimpl_core.github.app_auth import TOKENS

    TOKENS.clear()
    resp = client.post("/api/token", json={"nonce": inputs["nonce"], "owner": "acme"})
    assert (resp.status_code, resp.get_json()) == (500, {"error": "Failed to generate token"})


def test_gap_fill_refused_by_github_is_502_dispatch_failed(
    app: Any, client: Any, gh: FakeGitHub, mapping: MappingRow, tracker: FakeTracker
) -> None:
    tracker.add("ENG-4")
    gh.put_file("acme", "api", ".github/workflows/ai-implement-gap-fill.yml", "name: x\non: push\njobs: {}\n")
    resp = client.post(
        "/trigger/gap-fill",
        json={"issueKey": "ENG-4", "prNumber": 12},
        headers={"Authorization": f"Bearer {TRIGGER_SECRET}"},
    )
    assert resp.status_code == 502
    assert resp.get_json() == {
        "error": "dispatch_failed",
        "detail": "Workflow does not have 'workflow_dispatch' trigger",
        "dispatchStatus": 422,
    }


def test_gap_fill_dispatches_the_gap_fill_workflow(
    app: Any, client: Any, gh: FakeGitHub, mapping: MappingRow, tracker: FakeTracker
) -> None:
    tracker.add("ENG-5")
    resp = client.post(
        "/trigger/gap-fill",
        json={"issueKey": "ENG-5", "prNumber": 12},
        headers={"Authorization": f"Bearer {TRIGGER_SECRET}"},
    )
    assert resp.status_code in (200, 201, 202), resp.get_json()
    job = job_of("ENG-5")
    run = gh.run_named(f"job-{job.id}")
    assert run.workflow.file == "ai-implement-gap-fill.yml"
    assert run.inputs["phase"] == "gap-analysis"
    assert json.loads(run.inputs["env"])["AIIMPL_PR_NUMBER"] == "12"


def test_sync_workflows_api_twice_writes_once(
    app: Any, client: Any, admin_headers: dict[str, str], gh: FakeGitHub
) -> None:
    row = MappingRow(
        team_key="WEB",
        owner="acme",
        repo="api",
        default_branch="main",
        execution_mode="github-actions",
        ticketing={"provider": "fake-tracker"},
    )
    db.session.add(row)
    db.session.commit()
    first = client.post("/api/mappings/WEB/sync-workflows", headers=admin_headers)
    assert first.status_code == 200, first.get_json()
    assert sorted(first.get_json()["created"]) == [
        ".github/workflows/ai-implement-gap-fill.yml",
        ".github/workflows/ai-implement.yml",
    ]
    assert first.get_json()["warnings"] == []
    second = client.post("/api/mappings/WEB/sync-workflows", headers=admin_headers)
    assert second.status_code == 200
    assert second.get_json()["created"] == [] and second.get_json()["updated"] == []
    assert len(gh.commits("acme", "api")) == 2


class TestSyncWithTheDefaultPublicURL:
    """AIIMPL_PUBLIC_URL unset in the environment: its default, http://127.0.0.1:8000."""

    @pytest.fixture
    def aiimpl_config(self, gh: FakeGitHub) -> dict[str, Any]:
        from aiimpl_core.config import load

        return {**github_config(gh), "AIIMPL_PUBLIC_URL": load({})["AIIMPL_PUBLIC_URL"]}

    def test_the_sync_answers_a_warning_that_the_runners_cannot_reach_it(
        self, app: Any, client: Any, admin_headers: dict[str, str], gh: FakeGitHub
    ) -> None:
        assert app.config["AIIMPL_PUBLIC_URL"] == "http://127.0.0.1:8000"
        add_mapping(repo="api")
        answer = client.post("/api/mappings/ENG/sync-workflows", headers=admin_headers)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        assert len(body["created"]) == 2
        [warning] = body["warnings"]
        assert warning.startswith("AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only: "
                                  "GitHub's runners cannot reach it")


def test_sync_workflows_api_failure_is_the_500_row_with_githubs_message(
    app: Any, client: Any, admin_headers: dict[str, str], gh: FakeGitHub
) -> None:
    row = MappingRow(
        team_key="OPS",
        owner="acme",
        repo="api",
        default_branch="main",
        execution_mode="github-actions",
        ticketing={"provider": "fake-tracker"},
    )
    db.session.add(row)
    db.session.commit()
    gh.fail_next("PUT", "/contents/", 409, "is at 2b1c3d but expected 9f8e7d")
    resp = client.post("/api/mappings/OPS/sync-workflows", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (500, {"error": "is at 2b1c3d but expected 9f8e7d"})
    missing = client.post("/api/mappings/NOPE/sync-workflows", headers=admin_headers)
    assert (missing.status_code, missing.get_json()) == (404, {"error": "Team not found"})


@pytest.mark.parametrize("gh", ["full"], indirect=True)  # cancelling is outside the fast subset
def test_a_run_far_past_its_lifetime_is_cancelled_on_github(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow
) -> None:
    tracker.add("ENG-7")
    run_cycle(reconcile=False)
    job = job_of("ENG-7")
    run = gh.run_named(f"job-{job.id}")
    gh.advance_run(run.id, "in_progress")
    reconcile()
    assert job_of("ENG-7").status == "running"

    reconcile(now=utcnow() + timedelta(minutes=65))  # past the hour's lifetime, inside the grace
    assert job_of("ENG-7").status == "running" and gh.runs[run.id].status == "in_progress"

    reconcile(now=utcnow() + timedelta(minutes=75))
    job = job_of("ENG-7")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert (gh.runs[run.id].status, gh.runs[run.id].conclusion) == ("completed", "cancelled")
    [cancel] = gh.server.requests_to("POST", f"/actions/runs/{run.id}/cancel")
    assert cancel.header("Authorization").startswith("Bearer ")

    run_cycle()  # the cancelled run's end is not taken for a second ending
    assert job_of("ENG-7").status == "timed_out"
    failure, excerpt = tracker.comments["ENG-7"]  # the notice and its labelled excerpt, once
    assert failure == "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)"
    assert excerpt.startswith("Log excerpt (`machine_timeout`)")


@pytest.mark.parametrize("gh", ["full"], indirect=True)  # cancelling is outside the fast subset
def test_a_run_no_runner_ever_took_up_says_so_when_it_is_stopped(
    app: Any, gh: FakeGitHub, tracker: FakeTracker, mapping: MappingRow
) -> None:
    """A run that stayed queued (no runner matching its runs-on labels): its job ended with the
    lifetime's words alone, a person looking for a session that overran when none ever started."""
    tracker.add("ENG-8")
    run_cycle(reconcile=False)
    job = job_of("ENG-8")
    run = gh.run_named(f"job-{job.id}")
    reconcile()
    assert job_of("ENG-8").status == "dispatched" and gh.runs[run.id].status == "queued"

    reconcile(now=utcnow() + timedelta(minutes=75))

    job = job_of("ENG-8")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert (gh.runs[run.id].status, gh.runs[run.id].conclusion) == ("completed", "cancelled")
    run_cycle()  # (the comments go out)
    failure, excerpt = tracker.comments["ENG-8"]
    assert failure == "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)"
    said = ("The run never started: it was still waiting to start 75 min after its dispatch (no runner "
            "took it up: for GitHub Actions, none matching the workflow's runs-on labels was free), and "
            "was stopped.")
    assert said in excerpt
    assert f"Run: {job.run_url}" in excerpt and job.run_url


@pytest.mark.parametrize("gh", ["full"], indirect=True)  # cancelling is outside the fast subset
@pytest.mark.parametrize("run_details", ["returned", "ignored"])
def test_an_operators_cancel_before_a_reconcile_cycle_cancels_the_run_on_github(
    app: Any,
    client: Any,
    gh: FakeGitHub,
    tracker: FakeTracker,
    mapping: MappingRow,
    admin_headers: Any,
    run_details: str,
) -> None:
    gh.run_details = run_details  # ``ignored``: a server that names no run in the dispatch's answer
    tracker.add("ENG-8")
    run_cycle(reconcile=False)
    job = job_of("ENG-8")
    run = gh.run_named(f"job-{job.id}")
    # no reconcile cycle ran: the job is linked only when the dispatch's answer named the run
    assert (job.status, job.run_id) == ("dispatched", str(run.id) if run_details == "returned" else None)
    resp = client.post(f"/api/jobs/{job.id}/cancel", headers=admin_headers)
    assert resp.status_code == 200 and resp.get_json()["status"] == "failed"
    assert (run.status, run.conclusion) == ("completed", "cancelled")
    # a run not linked is looked up by its name first
    listings = gh.server.requests_to("GET", "/actions/runs")
    assert len(listings) == (0 if run_details == "returned" else 1)
