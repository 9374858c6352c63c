"""Webhooks racing the work they start, as several workers and hosts sharing one database run them.

1. A tracker webhook's dispatch of an issue (``run_cycle_for_issues``, what ``POST
   /api/linear/webhook`` calls) and a poll cycle (``run_cycle``) dispatching the same issue: one
   job, one launch, no blocker left behind.
2. Two copies of GitHub's merged ``pull_request`` delivery for a job's PR: one "PR merged" comment,
   one "done", both answered 200.

Each interleaving is forced where it can be: one side is paused inside its transaction (holding its
locks) and the other is seen waiting for them before the first goes on; the rest are released
together, round after round. The Linear webhook itself races a poll cycle in
``plugins/aiimpl_linear/tests/test_webhook_race.py``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker, WebhookDelivery
from aiimpl_core.services import dispatch, merge, outbox
from aiimpl_core.services.dispatch import run_cycle, run_cycle_for_issues
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.orchestrator import (
    Pause,
    Worker,
    at_once,
    each_at_once,
    first_holds_second_waits,
    fresh,
)
from aiimpl_core.types import Stage

from .conftest import jobs_of, outbox_of, post_result, tracked
from .test_merge_and_gap_fill import WEBHOOK_SECRET, deliver, merged_payload

KEY = "ENG-1"
#: why a check skips an issue another worker dispatched: before, or after, its stage change was sent
SEEN_DISPATCHED = ("trigger already dispatched", "listing older than our last stage change")
#: what a check that began after the other worker's stage change was sent finds: the issue no longer
#: triggered (the webhook's read of it), or not listed at all (the poll cycle's listing)
SEEN_AFTER_STAGE_CHANGE = ("not triggered", "not listed")


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET}


# -- forcing an interleaving --------------------------------------------------------------------


# -- 1. a tracker webhook's dispatch and a poll cycle, for the same issue -----------------------


def webhook_check() -> Any:
    """What a tracker webhook runs for the issue (``POST /api/linear/webhook`` calls it)."""
    return run_cycle_for_issues("fake-tracker", [KEY])


def blocker_rows() -> dict[str, str]:
    db.session.expire_all()
    return {b.issue_key: b.reason for b in db.session.scalars(select(Blocker))}


def assert_dispatched_once(tracker: FakeTracker, runner: FakeRunner, *reports: Any) -> None:
    """One job, launched once, its stage change queued and sent once; no blocker; one of the
    reports dispatched the issue and the others skipped it, without an error."""
    fresh()  # a new snapshot: what the workers committed
    [job] = jobs_of(KEY)
    assert job.status == "dispatched"
    assert list(runner.runs) == [job.id]
    assert blocker_rows() == {}
    outbox.deliver(issue_keys=[KEY])  # whatever a worker left queued, as the next cycle sends it
    assert [(i.op, i.stage, i.state) for i in outbox_of(KEY)] == [("stage", "implementing", "done")]
    assert [arg for op, arg in tracker.calls if op == "set_stage"] == [(KEY, Stage.IMPLEMENTING)]
    assert tracked(KEY).stage == Stage.IMPLEMENTING.value
    assert sorted(len(r.dispatched) for r in reports) == [0] * (len(reports) - 1) + [1]
    for report in reports:
        assert not report.errors and KEY not in report.blocked, report.as_dict()
        # (a listing read, and found empty: not a tracker left out of the cycle)
        seen = report.skipped.get(KEY, "not listed" if report.listed.get("fake-tracker") == 0 else None)
        assert report.dispatched or seen in SEEN_DISPATCHED + SEEN_AFTER_STAGE_CHANGE, report.as_dict()


def test_a_poll_cycle_waits_for_the_webhook_s_claim_and_skips_the_issue(
    app, tracker, runner, add_mapping, monkeypatch
):
    add_mapping("ENG")
    tracker.add(KEY)
    pause = Pause(monkeypatch, dispatch, "set_stage", thread="webhook")  # inside the claim
    hook = Worker(app, "webhook", webhook_check)
    hooked, polled = first_holds_second_waits(app, pause, hook, lambda: Worker(app, "poller", run_cycle))
    assert_dispatched_once(tracker, runner, hooked, polled)
    assert [d.issue_key for d in hooked.dispatched] == [KEY]


def test_a_webhook_waits_for_the_poll_cycle_s_claim_and_skips_the_issue(
    app, tracker, runner, add_mapping, monkeypatch
):
    add_mapping("ENG")
    tracker.add(KEY)
    pause = Pause(monkeypatch, dispatch, "set_stage", thread="poller")
    poller = Worker(app, "poller", run_cycle)
    polled, hooked = first_holds_second_waits(app, pause, poller,
                                              lambda: Worker(app, "webhook", webhook_check))
    assert_dispatched_once(tracker, runner, polled, hooked)
    assert [d.issue_key for d in polled.dispatched] == [KEY]
    # (on SQLite the poller may have sent its stage change before the webhook's claim got its turn;
    # and as SQLite cannot show the webhook waiting, only half a second passes before the poller
    # goes on: a webhook slower than that reads the issue once that change has taken the trigger off)
    seen = SEEN_DISPATCHED if db.engine.dialect.name == "postgresql" else (*SEEN_DISPATCHED, "not triggered")
    assert hooked.skipped[KEY] in seen


def test_a_webhook_check_that_straddles_a_whole_poll_cycle_leaves_no_blocker(
    app, tracker, runner, add_mapping, monkeypatch
):
    """The webhook read the issue (triggered) and its trigger state; before it reads the jobs, a
    poll cycle dispatches the issue and sends its stage change (which clears the trigger). What
    the webhook saw is then older than that change, as a listing read before it would be: it
    dispatches nothing and records no blocker ("Already dispatched recently") for the issue."""
    add_mapping("ENG")
    tracker.add(KEY)
    pause = Pause(monkeypatch, dispatch, "_read_tracked", thread="webhook")  # the lock-free check
    hook = Worker(app, "webhook", webhook_check)
    try:
        assert pause.entered.wait(30), hook.error
        poll = run_cycle()  # another worker's whole cycle, stage change sent
        assert [d.issue_key for d in poll.dispatched] == [KEY]
        assert tracker.stage_labels(KEY) == {"AI-Working"} and not tracked(KEY).trigger_consumed
    finally:
        pause.release()
    report = hook.join()
    assert_dispatched_once(tracker, runner, poll, report)
    assert report.skipped[KEY] in SEEN_DISPATCHED and not report.blocked


@pytest.mark.parametrize("round_", range(5))
def test_a_webhook_and_a_poll_cycle_released_together_dispatch_once(
    app, tracker, runner, add_mapping, round_
):
    add_mapping("ENG")
    tracker.add(KEY)
    reports = each_at_once(app, [lambda _client: webhook_check(), lambda _client: run_cycle()])
    assert_dispatched_once(tracker, runner, *reports)


# -- 2. two copies of GitHub's merged pull_request delivery, for a job's PR ----------------------

HW = "HW-7"
PAYLOAD = merged_payload()
PR = PAYLOAD["pull_request"]
MERGED = f"🎉 PR #{PR['number']} merged ({PR['merge_commit_sha'][:7]}). Closing this issue out."


def job_with_its_pr_open(client: Any, tracker: FakeTracker, runner: FakeRunner, add_mapping: Any) -> int:
    """A job the poller dispatched that opened Codertocat/Hello-World#2 (the PR of the payload)."""
    add_mapping("HW", owner="Codertocat", repo="Hello-World")
    tracker.add(HW)
    run_cycle()
    [job] = jobs_of(HW)
    job_id = job.id
    resp = post_result(client, runner, job_id, outcome="success", prUrl=PR["html_url"], prNumber=PR["number"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "completed"
    fresh()  # no transaction left open: the workers' writes must not wait for one
    return job_id


def merge_delivery(app: Any, delivery: str) -> Callable[[], tuple[int, Any]]:
    def send() -> tuple[int, Any]:
        resp = deliver(app.test_client(), PAYLOAD, delivery)
        return resp.status_code, resp.get_json()

    return send


def assert_merged_once(tracker: FakeTracker, job_id: int, answers: list[tuple[int, Any]]) -> None:
    """Both answered 200; one "PR merged" comment and one "done" queued, each sent once; the
    merge recorded on the job and the issue done."""
    assert [status for status, _ in answers] == [200, 200], answers
    assert all(body["jobId"] in (job_id, None) for _, body in answers), answers
    fresh()  # a new snapshot: what the workers committed
    items = outbox_of(HW)
    assert len([i for i in items if i.kind == "merged"]) == 1, [(i.op, i.kind) for i in items]
    assert len([i for i in items if i.op == "done"]) == 1, [(i.op, i.kind) for i in items]
    outbox.deliver(issue_keys=[HW])  # whatever a worker left queued, as the next cycle sends it
    assert tracker.comments[HW].count(MERGED) == 1, tracker.comments[HW]
    assert Counter(op for op, _ in tracker.calls)["mark_done"] == 1
    assert tracker.issues[HW].done
    [job] = jobs_of(HW)
    assert job.merge_sha == PR["merge_commit_sha"]
    assert tracked(HW).stage == Stage.DONE.value


@pytest.mark.parametrize("same_id", [True, False], ids=["same-delivery-id", "another-delivery-id"])
def test_a_second_merge_delivery_waits_for_the_first_and_changes_nothing(
    app, client, tracker, runner, add_mapping, monkeypatch, same_id
):
    """The first copy holds its transaction open once it queued the merge's writes; the second
    waits for it (the delivery id's row, else the job's row) and then finds the merge handled.
    GitHub gives redeliveries, and every webhook subscribed to the event, the event's delivery
    id; a second id for the same merge (a relay that stamps its own) must not act twice either."""
    job_id = job_with_its_pr_open(client, tracker, runner, add_mapping)
    first_id = str(uuid.uuid4())
    second_id = first_id if same_id else str(uuid.uuid4())
    pause = Pause(monkeypatch, merge, "enqueue_done", thread="first")  # the merge's writes queued
    first = Worker(app, "first", merge_delivery(app, first_id))
    held, waited = first_holds_second_waits(
        app, pause, first, lambda: Worker(app, "second", merge_delivery(app, second_id))
    )
    assert held[1] == {"ignored": False, "duplicate": False, "matched": True, "jobId": job_id}
    assert_merged_once(tracker, job_id, [held, waited])
    if same_id:
        assert waited[1] == {"ignored": False, "duplicate": True, "matched": False, "jobId": None}
        assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1


@pytest.mark.parametrize("round_", range(5))
def test_two_copies_of_a_merge_delivery_released_together_act_once(
    app, client, tracker, runner, add_mapping, round_
):
    job_id = job_with_its_pr_open(client, tracker, runner, add_mapping)
    send = merge_delivery(app, str(uuid.uuid4()))
    answers = at_once(app, lambda _client: send(), 2)
    assert_merged_once(tracker, job_id, answers)
    assert sorted(body["duplicate"] for _, body in answers) == [False, True]
