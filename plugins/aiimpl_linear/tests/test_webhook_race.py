"""``POST /api/linear/webhook`` racing a poll cycle over the same issue, on the fake Linear server.

Several gunicorn workers and hosts share one database: a person adds ``AI-Implement``, Linear's
delivery reaches one worker while another runs its poll cycle. The issue is dispatched once (one
job, one launch, one label change in Linear), the webhook answers 200, and no blocker is left
behind. The core's own tests race the same path without HTTP (``tests/engine/test_race_webhooks.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker, Job, Mapping
from aiimpl_core.services import dispatch
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeRunner
from aiimpl_core.testing.orchestrator import Pause, Worker, each_at_once, first_holds_second_waits, fresh

from aiimpl_linear.testing import FakeLinear

URL = "/api/linear/webhook"
#: why the loser skips the issue: its trigger was consumed, or the stage change had cleared it
SEEN_DISPATCHED = ("trigger already dispatched", "listing older than our last stage change")


@pytest.fixture
def issue(app: Any, fake: FakeLinear) -> str:
    """ENG's mapping, and an issue a person just gave the trigger (no cycle has seen it yet)."""
    db.session.add(Mapping(team_key="ENG", owner="acme", repo="api", default_branch="main",
                           execution_mode="github-actions", ticketing={"provider": "linear"}))
    db.session.commit()
    key = fake.add_issue("ENG", "Add export", labels=["feature"])["identifier"]
    fake.add_labels(key, "AI-Implement")
    return key


def delivery(fake: FakeLinear, key: str) -> Callable[[Any], tuple[int, Any]]:
    """Linear's delivery for the label change, as ``call(client)`` → (status, body)."""
    body = json.dumps(fake.issue_webhook_payload(key)).encode()
    headers = {
        "Content-Type": "application/json", "Linear-Event": "Issue", "Linear-Signature": fake.sign(body)
    }

    def send(client: Any) -> tuple[int, Any]:
        resp = client.post(URL, data=body, headers=headers)
        return resp.status_code, resp.get_json()

    return send


def assert_dispatched_once(fake: FakeLinear, runner: FakeRunner, key: str, answer: tuple[int, Any],
                           *reports: Any) -> None:
    """One job, one launch, one stage change, no blocker; exactly one of the webhook's check and
    the cycles dispatched the issue, and the webhook's answer says which."""
    fresh()
    [job] = db.session.scalars(db.select(Job).where(Job.issue_key == key)).all()
    assert job.status == "dispatched" and list(runner.runs) == [job.id]
    assert db.session.scalars(db.select(Blocker)).all() == []
    assert fake.labels_of(key) == ["AI-Working", "feature"]
    assert fake.operations().count("UpdateIssueLabels") == 1  # the stage change, sent once
    status, body = answer
    if body["dispatched"]:
        assert (status, body) == (
            200, {"ok": True, "issue": key, "dispatched": True, "jobId": job.id, "status": "dispatched"})
    else:  # a cycle had dispatched it: the check saw that, or read the issue after its stage change
        assert status == 200 and set(body) == {"ok", "issue", "dispatched", "reason"}, body
        assert body["reason"] in (*SEEN_DISPATCHED, "not triggered"), body
    for report in reports:
        assert not report.errors and key not in report.blocked, report.as_dict()
        # (a listing read once the webhook's stage change took the label off shows no issue at all)
        assert (report.dispatched or report.skipped.get(key) in SEEN_DISPATCHED
                or report.listed.get("linear") == 0), report.as_dict()
    assert body["dispatched"] + sum(len(report.dispatched) for report in reports) == 1


def test_a_poll_cycle_waits_for_the_webhook_s_claim_and_skips_the_issue(
    app, fake, runner, issue, monkeypatch
) -> None:
    """The webhook's claim is paused before it commits (holding the team's and the global locks
    on PostgreSQL, SQLite's write lock); a poll cycle starts, and is still running half a second
    later: it waits for them. Then the cycle finds the trigger consumed."""
    pause = Pause(monkeypatch, dispatch, "set_stage", thread="webhook")
    hook = Worker(app, "webhook", lambda: delivery(fake, issue)(app.test_client()))
    hooked, poll = first_holds_second_waits(app, pause, hook, lambda: Worker(app, "poller", run_cycle))
    assert_dispatched_once(fake, runner, issue, hooked, poll)
    assert hooked[1]["dispatched"] and not poll.dispatched


def test_a_webhook_check_that_straddles_a_poll_cycle_leaves_no_blocker(
    app, fake, runner, issue, monkeypatch
) -> None:
    """The webhook read the issue and its trigger state; a whole poll cycle then dispatches the
    issue and moves it to AI-Working; only then does the webhook's check read the jobs. It must not
    record "Already dispatched recently" for the issue it saw before that change."""
    pause = Pause(monkeypatch, dispatch, "_read_tracked", thread="webhook")  # the lock-free check
    hook = Worker(app, "webhook", lambda: delivery(fake, issue)(app.test_client()))
    try:
        assert pause.entered.wait(30), hook.error
        poll = run_cycle()
        assert [d.issue_key for d in poll.dispatched] == [issue]
        assert "AI-Implement" not in fake.labels_of(issue)
    finally:
        pause.release()
    assert_dispatched_once(fake, runner, issue, hook.join(), poll)


@pytest.mark.parametrize("round_", range(3))
def test_the_webhook_and_a_poll_cycle_released_together_dispatch_once(
    app, fake, runner, issue, round_
) -> None:
    send = delivery(fake, issue)
    hook, poll = each_at_once(app, [send, lambda _client: run_cycle()])
    assert_dispatched_once(fake, runner, issue, hook, poll)
