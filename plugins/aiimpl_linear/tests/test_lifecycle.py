"""Whole lifecycles through the core with the real Linear plugin and the fake Linear server:
poll -> dispatch (AI-Working) -> session result -> Ready for Review / failure -> merge -> Done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping, utcnow
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import dispatch_issue, run_cycle
from aiimpl_core.services.merge import MergedPullRequest, handle_merged
from aiimpl_core.testing.fakes import FakeRunner
from aiimpl_core.webhooks import check_issues

from aiimpl_linear.client import LinearClient
from aiimpl_linear.queries import LIST_RELATIONS


@pytest.fixture
def add_mapping(app: Any) -> Callable[..., Mapping]:
    def make(team_key: str = "ENG", **kw: Any) -> Mapping:
        values: dict[str, Any] = {
            "owner": "acme",
            "repo": team_key.lower(),
            "default_branch": "main",
            "execution_mode": "github-actions",
            "ticketing": {"provider": "linear"},
            **kw,
        }
        row = Mapping(team_key=team_key, **values)
        db.session.add(row)
        db.session.commit()
        return row

    return make


def jobs_of(issue_key: str) -> list[Job]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(Job).where(Job.issue_key == issue_key).order_by(Job.id)).all())


def post_result(client: Any, runner: FakeRunner, job_id: int, **body: Any) -> Any:
    env = dict(runner.runs[job_id].request.env)
    payload: dict[str, Any] = {"comments": [], "phase": env["AIIMPL_PHASE"], **body}
    return client.post(
        "/runner/result", json=payload, headers={"Authorization": f"Bearer {env['AIIMPL_RESULT_TOKEN']}"}
    )


def test_trigger_to_ready_for_review_to_done(app, client, fake, runner, add_mapping) -> None:
    add_mapping("ENG")
    key = fake.add_issue("ENG", "Add a health endpoint", labels=["AI-Implement", "backend"])["identifier"]

    report = run_cycle()

    assert [d.issue_key for d in report.dispatched] == [key], report.as_dict()
    [job] = jobs_of(key)
    assert job.status == "dispatched" and job.provider == "linear" and job.phase == "implementation"
    assert fake.labels_of(key) == ["AI-Working", "backend"]  # the trigger went, the person's label stayed
    assert fake.created_labels == [("AI-Working", "ENG")]

    pr_url = "https://github.com/acme/eng/pull/42"
    resp = post_result(client, runner, job.id, outcome="success", prUrl=pr_url)
    assert resp.status_code == 200 and resp.get_json()["status"] == "completed"
    assert fake.labels_of(key) == ["Ready for Review", "backend"]
    assert fake.comments_of(key) == [f"🔗 PR #42 is ready for review: {pr_url}"]

    # our own label change removed the trigger: the next poll dispatches nothing
    assert run_cycle().dispatched == []
    assert len(jobs_of(key)) == 1

    handle_merged(
        MergedPullRequest(
            owner="acme", repo="eng", number=42, url=pr_url, branch=f"ai/{key}", merge_sha="abc123"
        ),
        delivery_id="d-1",
        event="pull_request",
    )
    assert fake.state_of(key) == "Done"
    assert len(fake.comments_of(key)) == 2


def test_failure_removes_the_ai_labels_and_comments(app, client, fake, runner, add_mapping) -> None:
    add_mapping("ENG")
    key = fake.add_issue("ENG", "Flaky", labels=["AI-Implement", "bug"])["identifier"]
    run_cycle()
    [job] = jobs_of(key)
    assert fake.labels_of(key) == ["AI-Working", "bug"]

    error = "git clone failed (exit 128): repository not found"
    resp = post_result(client, runner, job.id, outcome="failure", error=error, logExcerpt="fatal: not found")
    assert resp.get_json()["status"] == "failed"

    assert fake.labels_of(key) == ["bug"]
    assert fake.comments_of(key) == [
        f"⚠️ Implementation failed: {error}",
        "Log excerpt (`session_failed`):\n\n```\nfatal: not found\n```",
    ]
    # a person re-applies the trigger: it runs again
    fake.add_labels(key, "AI-Implement")
    assert len(run_cycle().dispatched) == 1
    assert fake.labels_of(key) == ["AI-Working", "bug"]


def test_planning_then_approval(app, client, fake, runner, add_mapping) -> None:
    add_mapping("ENG", planning_enabled=True, planning_workflow_file="ai-plan.yml")
    key = fake.add_issue("ENG", "Rework billing", labels=["AI-Implement"])["identifier"]
    run_cycle()
    [planning] = jobs_of(key)
    assert planning.phase == "planning" and fake.labels_of(key) == ["AI-Planning"]

    post_result(client, runner, planning.id, outcome="success", plan="1. Split invoices")
    assert fake.labels_of(key) == ["Plan-Complete"]
    assert fake.comments_of(key)[-1].startswith("📋 Plan ready for review.")
    # how to approve it, in Linear's words only
    assert fake.comments_of(key)[-1].endswith(
        "\n\nTo approve the plan and start the implementation, apply the trigger again (add the "
        "`AI-Implement` label).")
    assert run_cycle().dispatched == []  # not approved yet

    fake.add_labels(key, "AI-Implement")  # approval
    [entry] = run_cycle().dispatched
    assert entry.phase == "implementation"
    assert fake.labels_of(key) == ["AI-Working"]


def test_blocked_issue_is_not_dispatched_until_its_blocker_is_done(app, fake, runner, add_mapping) -> None:
    add_mapping("ENG")
    blocker = fake.add_issue("ENG", "Migrate schema", labels=[])["identifier"]
    key = fake.add_issue("ENG", "Use new schema")["identifier"]
    fake.add_blocker(blocker, key)

    report = run_cycle()
    assert report.dispatched == [] and key in report.blocked
    assert blocker in report.blocked[key]["message"]

    fake.set_state(blocker, "Done")
    assert [d.issue_key for d in run_cycle().dispatched] == [key]


def test_blocker_closed_as_a_duplicate_no_longer_holds_the_dispatch(app, fake, runner, add_mapping) -> None:
    add_mapping("ENG")
    blocker = fake.add_issue("ENG", "Migrate schema", labels=[])["identifier"]
    key = fake.add_issue("ENG", "Use new schema")["identifier"]
    fake.add_blocker(blocker, key)
    assert key in run_cycle().blocked

    fake.set_state(blocker, "Duplicate")  # closed as a duplicate of another issue

    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == [key] and key not in report.blocked


def test_issue_closed_as_a_duplicate_is_not_dispatched(app, fake, runner, add_mapping) -> None:
    """Closed as a duplicate with the trigger label left on: no poll and no webhook dispatches it."""
    add_mapping("ENG")
    key = fake.add_issue("ENG", "Same as ENG-9", labels=["AI-Implement"], state="Duplicate")["identifier"]

    report = run_cycle()
    assert report.dispatched == [] and key not in report.blocked
    assert check_issues("linear", [key]).dispatched == []
    assert jobs_of(key) == [] and fake.labels_of(key) == ["AI-Implement"]


def _blocked_past_the_listed_relations(fake: Any) -> tuple[str, str]:
    """An issue whose blocker comes after older related links that fill the listing's page of its
    relations: its key and the blocker's."""
    key = fake.add_issue("ENG", "Use new schema")["identifier"]
    for n in range(LIST_RELATIONS):
        fake.add_relation(fake.add_issue("ENG", f"Related {n}", labels=[])["identifier"], key)
    blocker = fake.add_issue("ENG", "Migrate schema", labels=[])["identifier"]
    fake.add_blocker(blocker, key)
    return key, blocker


def test_blocker_among_many_relations_holds_the_dispatch(app, fake, runner, add_mapping) -> None:
    add_mapping("ENG")
    key, blocker = _blocked_past_the_listed_relations(fake)

    report = run_cycle()
    assert report.dispatched == [] and key in report.blocked
    assert blocker in report.blocked[key]["message"]


def test_a_blocked_issue_whose_relations_page_has_no_next_cursor_is_not_dispatched(
    app, fake, runner, add_mapping, monkeypatch
) -> None:
    """The listing's page of the issue's relations said more follow without the cursor to read
    them from: taken for all of them, the blocker past it went unseen and the blocked issue was
    dispatched. The issue is left out of that cycle, and read again by the next."""
    add_mapping("ENG")
    key, blocker = _blocked_past_the_listed_relations(fake)
    real = LinearClient.execute

    def execute(self: LinearClient, operation: str, variables: Any = None) -> dict[str, Any]:
        data = real(self, operation, variables)
        if operation == "TriggeredIssues":
            for node in data["issues"]["nodes"]:
                node["inverseRelations"]["pageInfo"]["endCursor"] = None
        return data

    monkeypatch.setattr(LinearClient, "execute", execute)

    report = run_cycle()

    assert report.dispatched == [] and jobs_of(key) == [], report.as_dict()
    assert fake.labels_of(key) == ["AI-Implement"]

    monkeypatch.undo()  # Linear answers whole again: the blocker holds the dispatch
    report = run_cycle()
    assert report.dispatched == [] and blocker in report.blocked[key]["message"]


def test_unmapped_team_is_a_no_mapping_blocker(app, fake, runner, add_mapping) -> None:
    add_mapping("ENG")
    fake.add_team("OPS")
    key = fake.add_issue("OPS", "Rotate keys")["identifier"]
    report = run_cycle()
    assert report.blocked[key]["message"] == "No mapping for team OPS. Add one in Projects."


def test_a_mapping_whose_team_key_is_in_lower_case_dispatches_its_team(
    app, fake, runner, add_mapping
) -> None:
    """Linear's team keys are upper-case (issues ENG-1, ENG-2): a mapping saved as ``eng`` was
    accepted but matched no issue, each held as a ``no-mapping`` blocker."""
    add_mapping("eng")
    key = fake.add_issue("ENG", "Add a health endpoint", labels=["AI-Implement", "backend"])["identifier"]

    report = run_cycle()

    assert [d.issue_key for d in report.dispatched] == [key], report.as_dict()
    assert key not in report.blocked
    [job] = jobs_of(key)
    assert job.status == "dispatched" and runner.runs[job.id].request.mapping.team_key == "eng"
    assert fake.labels_of(key) == ["AI-Working", "backend"]

    # `aiimpl dispatch ENG-2` finds the team's mapping too
    again = fake.add_issue("ENG", "Add a readiness endpoint", labels=["AI-Implement"])["identifier"]
    assert [d.issue_key for d in dispatch_issue(again).dispatched] == [again]


def test_a_listing_page_without_its_next_cursor_fails_the_cycle_visibly(
    app, fake, runner, add_mapping, monkeypatch
) -> None:
    """A page saying more issues follow without the cursor to read them from was taken for the end
    of the listing, and the issues after it were silently never seen: the listing fails, the cycle
    reports it, and the connection is tried again after its back-off."""
    add_mapping("ENG")
    app.config["AIIMPL_LINEAR_PAGE_SIZE"] = "1"
    keys = [fake.add_issue("ENG", f"Issue {n}")["identifier"] for n in range(2)]
    real = LinearClient.execute

    def execute(self: LinearClient, operation: str, variables: Any = None) -> dict[str, Any]:
        data = real(self, operation, variables)
        if operation == "TriggeredIssues":
            data["issues"]["pageInfo"]["endCursor"] = None
        return data

    monkeypatch.setattr(LinearClient, "execute", execute)

    report = run_cycle()

    assert report.dispatched == [] and [j for key in keys for j in jobs_of(key)] == []
    assert report.providers_skipped["linear"] == (
        "listing failed: Linear TriggeredIssues failed: the page says more issues follow but gives "
        "no cursor to read them from (pageInfo.endCursor)"
    )
    assert poller.backoff_of("ticketing", "linear") is not None


def test_rate_limited_listing_postpones_only_linear(app, fake, runner, add_mapping) -> None:
    add_mapping("ENG")
    key = fake.add_issue("ENG")["identifier"]
    fake.rate_limit(times=1, retry_in=600)

    report = run_cycle()
    assert report.dispatched == [] and jobs_of(key) == []
    assert fake.operations() == ["TriggeredIssues"]  # one refused call, no hammering
    assert "rate limited for 600s" in report.providers_skipped["linear"]
    # the engine backs off this connection for the time Linear asked: the next cycle sends nothing
    backoff = poller.backoff_of("ticketing", "linear")
    assert backoff is not None and (backoff.until - utcnow()).total_seconds() > 500
    fake.requests.clear()
    run_cycle()
    assert fake.operations() == []
