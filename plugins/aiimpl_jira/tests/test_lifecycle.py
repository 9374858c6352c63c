"""A whole lifecycle through the core with Jira as the tracker.

Poll → planning (status ``Planning``) → plan posted as ADF (``Plan Approved``) → a person moves the
issue back to ``Ready`` → the webhook dispatches the implementation (``Implementing``) → progress
comments → PR opened (``PR Ready``) → merged (done). And the failure path (``Implementation
Failed`` with the reference's failure comment). Every request the plugin made validates against
Jira's OpenAPI description (the ``jira`` fixture checks at teardown).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping, OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.jobs import enqueue_comment
from aiimpl_core.services.merge import MergedPullRequest, handle_merged
from aiimpl_core.testing.fakes import FakeRunner
from aiimpl_core.testing.orchestrator import answer_due_after, fresh, held
from aiimpl_core.webhooks import wait_for_checks

import aiimpl_jira.plugin
from aiimpl_jira.adf import adf_text
from aiimpl_jira.testing.fake_jira import FakeJira

SECRET = "hook-secret-123"


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def aiimpl_plugins(runner: FakeRunner) -> list[object]:
    return [aiimpl_jira.plugin, runner.plugin]


def _mapping(**kw: Any) -> Mapping:
    row = Mapping(
        team_key="ENG",
        owner="acme",
        repo="api",
        default_branch="main",
        execution_mode="github-actions",
        ticketing={"provider": "jira"},
        **kw,
    )
    db.session.add(row)
    db.session.commit()
    return row


def _jobs(key: str) -> list[Job]:
    fresh()  # (a webhook's check commits from a thread of its own)
    return list(db.session.scalars(db.select(Job).where(Job.issue_key == key).order_by(Job.id)).all())


def _env(runner: FakeRunner, job_id: int) -> dict[str, str]:
    return dict(runner.runs[job_id].request.env)


def _result(client: Any, runner: FakeRunner, job_id: int, **body: Any) -> Any:
    env = _env(runner, job_id)
    return client.post(
        "/runner/result",
        json={"comments": [], "phase": env["AIIMPL_PHASE"], **body},
        headers={"Authorization": f"Bearer {env['AIIMPL_RESULT_TOKEN']}"},
    )


def _status(client: Any, runner: FakeRunner, job_id: int, event: str, **fields: Any) -> Any:
    return client.post(
        "/api/status", json={"nonce": _env(runner, job_id)["AIIMPL_NONCE"], "event": event, **fields}
    )


def _comment_texts(jira: FakeJira, key: str) -> list[str]:
    return [adf_text(doc) for doc in jira.comment_docs(key)]


def _statuses_moved(jira: FakeJira, key: str) -> list[str]:
    """The statuses the plugin moved the issue to, in order (from the transitions it posted)."""
    names = {str(11 + sorted(jira.statuses).index(s)): s for s in jira.statuses}
    return [names[r.json["transition"]["id"]] for r in jira.requests_to("POST", f"/issue/{key}/transitions")]


def test_planning_approval_implementation_merge(
    app: Any, client: Any, jira: FakeJira, runner: FakeRunner
) -> None:
    _mapping(planning_enabled=True, planning_workflow_file="ai-plan.yml")
    jira.require_resolution("Done")  # the Done transition's screen asks for a resolution
    jira.add_issue("ENG-1", summary="Rework billing", description="Split invoices by **tenant**.")
    jira.add_issue("ENG-2", status="To Do")

    # poll: the Ready issue is planned
    report = run_cycle()
    [planning] = _jobs("ENG-1")
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"] and planning.phase == "planning"
    assert jira.issues["ENG-1"].status == "Planning"
    assert _jobs("ENG-2") == []

    # the planning context carries the description, read from ADF as Markdown
    ctx = client.get(
        "/runner/planning-context",
        headers={"Authorization": f"Bearer {_env(runner, planning.id)['AIIMPL_CONTEXT_TOKEN']}"},
    )
    assert ctx.status_code == 200, ctx.get_json()
    assert "Split invoices by **tenant**." in str(ctx.get_json())

    # the plan comes back: posted as ADF, status Plan Approved
    plan = "1. Add a `tenant_id` column\n2. Split the invoice job per tenant\n   - keep totals"
    assert _result(client, runner, planning.id, outcome="success", plan=plan).status_code == 200
    assert jira.issues["ENG-1"].status == "Plan Approved"
    [plan_doc] = jira.comment_docs("ENG-1")
    assert plan_doc["content"][0]["content"][0]["text"] == "📋 Plan ready for review."
    # how to approve it, in Jira's words only (the status as inline code)
    assert [(n.get("text"), n.get("marks")) for n in plan_doc["content"][-1]["content"]] == [
        ("To approve the plan and start the implementation, apply the trigger again (move the issue "
         "to ", None),
        ("Ready", [{"type": "code"}]), (").", None)]
    ordered = next(n for n in plan_doc["content"] if n["type"] == "orderedList")
    assert ordered["content"][0]["content"][0]["content"][1] == {
        "type": "text",
        "text": "tenant_id",
        "marks": [{"type": "code"}],
    }
    assert ordered["content"][1]["content"][1]["type"] == "bulletList"

    # a person approves by moving the issue to Ready; Jira's webhook picks it up at once
    jira.set_status("ENG-1", "Ready")
    event = {
        "webhookEvent": "jira:issue_updated",
        "issue": {"id": jira.issues["ENG-1"].id, "key": "ENG-1", "fields": {"status": {"name": "Ready"}}},
    }
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json=event)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["dispatched"] is True
    _, implementation = _jobs("ENG-1")
    assert implementation.phase == "implementation" and implementation.plan == plan
    assert jira.issues["ENG-1"].status == "Implementing"

    # the session reports progress, then the PR
    pr_url = "https://github.com/acme/api/pull/42"
    for name, fields in [
        ("session_created", {}),
        ("pr_opened", {"prNumber": 42, "prUrl": pr_url}),
        ("verification_passed", {}),
    ]:
        assert _status(client, runner, implementation.id, name, **fields).status_code == 200
    assert _result(client, runner, implementation.id, outcome="success", prUrl=pr_url).status_code == 200
    assert jira.issues["ENG-1"].status == "PR Ready"
    texts = _comment_texts(jira, "ENG-1")
    assert texts[1].startswith("🚀 Session machine created. Cloning repo and running setup…")
    assert texts[2].startswith(f"📝 Claude finished. PR #42 opened: {pr_url}")
    assert texts[-1] == f"🔗 PR #42 is ready for review: {pr_url}"
    pr_doc = jira.comment_docs("ENG-1")[-1]
    assert {"type": "link", "attrs": {"href": pr_url}} in pr_doc["content"][0]["content"][-1]["marks"]

    # merged on GitHub: the issue goes to the done category
    handle_merged(
        MergedPullRequest(
            owner="acme", repo="api", number=42, url=pr_url, branch="ai/ENG-1", merge_sha="abcdef1234567"
        ),
        delivery_id="d-1",
        event="pull_request",
    )
    assert jira.issues["ENG-1"].status == "Done"
    assert jira.issues["ENG-1"].values["resolution"]["name"] == "Done"
    assert _comment_texts(jira, "ENG-1")[-1] == "🎉 PR #42 merged (abcdef1). Closing this issue out."

    assert _statuses_moved(jira, "ENG-1") == ["Planning", "Plan Approved", "Implementing", "PR Ready", "Done"]
    # one search per poll, never a read per issue
    assert len(jira.requests_to("POST", "/search/jql")) == 1


def test_a_search_page_saying_more_follow_without_a_token_fails_the_poll_not_ends_it(
    app: Any, jira: FakeJira, runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken for the last page of a complete listing, such a page had the poll dispatch the issues
    before it and never see those after it, reporting nothing (and a complete listing tells the core
    that an issue it does not show no longer carries the trigger). The listing fails, the cycle says
    so, and a later cycle reads it all."""
    from aiimpl_jira.provider import JiraProvider

    monkeypatch.setattr(JiraProvider, "page_size", 1)
    _mapping()
    jira.add_issue("ENG-1")
    jira.add_issue("ENG-2")

    def no_token(page: dict[str, Any], asked: dict[str, Any]) -> None:
        page["isLast"] = False
        page.pop("nextPageToken", None)

    jira.alter_answers("POST", "/search/jql", no_token)

    report = run_cycle()

    assert report.dispatched == [] and _jobs("ENG-1") == [] and _jobs("ENG-2") == []
    assert report.providers_failed == {"jira"}
    assert report.providers_skipped["jira"] == (
        "listing failed: jira: POST /rest/api/3/search/jql failed: the page says more issues follow but "
        "gives no nextPageToken to read them from"
    )

    jira.alter_answers("POST", "/search/jql", None)  # Jira answers whole again, after the back-off
    report = run_cycle(now=utcnow() + timedelta(hours=1))
    assert sorted(d.issue_key for d in report.dispatched) == ["ENG-1", "ENG-2"]


def test_implementation_failure_moves_to_implementation_failed(
    app: Any, client: Any, jira: FakeJira, runner: FakeRunner
) -> None:
    _mapping()
    jira.add_issue("ENG-5", summary="Add export")

    run_cycle()
    [job] = _jobs("ENG-5")
    assert job.phase == "implementation" and jira.issues["ENG-5"].status == "Implementing"

    reason = "Nothing to commit: Claude left no file changes in the working tree"
    resp = _result(client, runner, job.id, outcome="failure", error=reason)
    assert resp.status_code == 200, resp.get_json()
    assert jira.issues["ENG-5"].status == "Implementation Failed"
    assert f"⚠️ Implementation failed: {reason}" in _comment_texts(jira, "ENG-5")

    # re-applying the trigger runs again
    jira.set_status("ENG-5", "Ready")
    report = run_cycle()
    assert len(report.dispatched) == 1 and len(_jobs("ENG-5")) == 2


def test_a_workflow_gap_is_given_up_after_a_few_tries_and_holds_the_comments_back_no_longer(
    app: Any, client: Any, runner: FakeRunner
) -> None:
    """No transition to Planning: the stage change is a refusal no retry changes (as Jira's own 400
    to an unavailable transition), so the outbox gives it up after a few tries, with the gap as its
    error, and the issue's later comments go out (they waited behind it for about 16 hours)."""
    with FakeJira(workflow={"Ready": ["Implementing"]}) as jira:
        app.config.update(jira.config())
        app.extensions["aiimpl"].bind(app.extensions["aiimpl"].context)  # forget the old client
        _mapping(planning_enabled=True, planning_workflow_file="ai-plan.yml")
        jira.add_issue("ENG-9")
        run_cycle()
        [job] = _jobs("ENG-9")
        enqueue_comment("ENG-9", "a later comment", provider="jira", kind="test", job=job)
        db.session.commit()
        start = utcnow()
        for n in range(1, outbox.MAX_ATTEMPTS_REFUSED + 1):
            outbox.deliver(issue_keys=["ENG-9"], now=start + timedelta(hours=n))
        db.session.expire_all()
        stage, comment = db.session.scalars(
            db.select(OutboxItem).where(OutboxItem.issue_key == "ENG-9").order_by(OutboxItem.id)
        ).all()
        assert (stage.op, stage.state, stage.attempts) == ("stage", "dead", outbox.MAX_ATTEMPTS_REFUSED)
        assert stage.last_error == "no transition from 'Ready' to 'Planning' in the workflow of ENG-9"
        assert comment.state == "done" and "a later comment" in _comment_texts(jira, "ENG-9")
        assert jira.issues["ENG-9"].status == "Ready"
        jira.assert_clean()


def _webhook(client: Any, jira: FakeJira, key: str) -> Any:
    event = {
        "webhookEvent": "jira:issue_updated",
        "issue": {"id": jira.issues[key].id, "key": key, "fields": {"status": {"name": "Ready"}}},
    }
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json=event)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_the_webhook_dispatches_only_what_the_mapping_jql_selects(
    app: Any, client: Any, jira: FakeJira, runner: FakeRunner
) -> None:
    row = _mapping()
    row.ticketing = {"provider": "jira", "jql": "labels = ai"}
    db.session.commit()
    jira.add_issue("ENG-1", labels=["manual"])
    jira.add_issue("ENG-2", labels=["ai"])

    skipped = _webhook(client, jira, "ENG-1")
    assert skipped["result"]["skipped"] == {"ENG-1": "not triggered"} and skipped["dispatched"] is False
    assert _jobs("ENG-1") == [] and jira.issues["ENG-1"].status == "Ready"

    assert _webhook(client, jira, "ENG-2")["dispatched"] is True
    assert [j.phase for j in _jobs("ENG-2")] == ["implementation"]
    assert jira.issues["ENG-2"].status == "Implementing"

    # the poll agrees: ENG-1 is not triggered there either
    assert run_cycle().dispatched == [] and _jobs("ENG-1") == []


def test_a_dispatch_slower_than_the_answer_s_time_is_answered_running_and_goes_on(
    app: Any, client: Any, jira: FakeJira, runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"] = 1
    _mapping()
    jira.add_issue("ENG-1")
    called, release = held(monkeypatch, runner.backend_class, "dispatch")
    answer_due_after(monkeypatch, called)
    try:
        answer = _webhook(client, jira, "ENG-1")
    finally:
        release.set()
    [job] = _jobs("ENG-1")
    assert (answer["dispatched"], answer["running"], answer["result"]["running"]) == (True, True, True)
    assert [(d["jobId"], d["status"]) for d in answer["result"]["dispatched"]] == [(job.id, "unknown")]
    assert wait_for_checks(30)
    [job] = _jobs("ENG-1")
    assert job.status == "dispatched" and jira.issues["ENG-1"].status == "Implementing"


def test_the_webhook_dispatches_nothing_outside_aiimpl_jira_projects(
    app: Any, client: Any, jira: FakeJira, runner: FakeRunner
) -> None:
    _mapping()
    app.config["AIIMPL_JIRA_PROJECTS"] = "OPS"
    jira.add_issue("ENG-1")

    assert _webhook(client, jira, "ENG-1")["result"]["skipped"] == {"ENG-1": "not triggered"}
    assert _jobs("ENG-1") == [] and jira.issues["ENG-1"].status == "Ready"
    assert jira.requests_to("POST", "/search/jql") == []


def test_a_required_screen_field_is_refused_not_retried_for_hours(
    app: Any, client: Any, jira: FakeJira, runner: FakeRunner
) -> None:
    """The transition to Implementing asks for a field without a default: the stage change is refused
    (given up after the outbox's few attempts for a refusal), its error naming field and transition."""
    from datetime import timedelta

    from aiimpl_core.orm import OutboxItem, utcnow
    from aiimpl_core.services.outbox import MAX_ATTEMPTS_REFUSED, deliver

    _mapping()
    jira.add_screen_field("Implementing", "customfield_10050", "Root cause")
    jira.add_issue("ENG-3")
    run_cycle()
    db.session.expire_all()
    [item] = db.session.scalars(db.select(OutboxItem).where(OutboxItem.issue_key == "ENG-3")).all()
    assert item.op == "stage" and item.attempts == 1
    assert item.last_error == (
        "the transition 'Move to Implementing' of ENG-3 (from 'Ready' to 'Implementing') requires the "
        "field 'Root cause' (customfield_10050), which is empty on the issue and has no default value to "
        "fill in: fill it in on the issue, give the field a default value or take it off the "
        "transition's screen in Jira"
    )
    later = utcnow()
    for _ in range(MAX_ATTEMPTS_REFUSED - 1):
        later += timedelta(hours=2)
        deliver(issue_keys=["ENG-3"], now=later)
    db.session.expire_all()
    item = db.session.get(OutboxItem, item.id)
    assert item.state == "dead" and item.attempts == MAX_ATTEMPTS_REFUSED
    assert jira.issues["ENG-3"].status == "Ready"
    assert jira.requests_to("POST", "/issue/ENG-3/transitions") == []
