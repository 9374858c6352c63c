"""``GET /api/outbox`` and ``POST /api/outbox/<itemId>/retry``: the tracker writes the outbox gave up
on, and putting one back in the queue so that the next delivery sends it."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import fail_with, queue_outbox_item
from aiimpl_core.testing.orchestrator import released_together
from aiimpl_core.types import Stage

LIST = "/api/outbox"


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def add_item(issue_key: str = "ENG-1", **kw: Any) -> int:
    return queue_outbox_item(issue_key, **{"state": "dead", **kw})


def item(item_id: int) -> OutboxItem:
    db.session.rollback()  # a new snapshot: see what other sessions committed
    found = db.session.get(OutboxItem, item_id)
    assert found is not None
    return found


def retry(client: Any, headers: dict[str, str], item_id: int | str) -> Any:
    return client.post(f"/api/outbox/{item_id}/retry", headers=headers)


# -- listing ------------------------------------------------------------------------------------------


def test_lists_dead_items_newest_first_with_counts(client, admin_headers) -> None:
    first = add_item("ENG-1")
    add_item("ENG-1", state="done", done_at=utcnow())
    add_item("ENG-2", state="pending")
    second = add_item("ENG-2", op="stage", stage="implementing")
    add_item("ENG-3", state="shadow")
    resp = client.get(LIST, headers=admin_headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert [i["id"] for i in body["items"]] == [second, first]
    assert body["counts"] == {"dead": 2, "pending": 1, "sending": 0, "done": 1, "shadow": 1}
    shown = body["items"][1]
    assert set(shown) == {"id", "issueKey", "jobId", "provider", "op", "kind", "stage", "state", "attempts",
                          "lastError", "bodyPreview", "createdAt", "nextAttemptAt", "doneAt", "requeuedAt"}
    assert (shown["issueKey"], shown["op"], shown["kind"], shown["state"], shown["attempts"]) == (
        "ENG-1", "comment", "outcome", "dead", 3)
    assert shown["lastError"].endswith("HTTP 422: comment rejected")
    assert shown["bodyPreview"] == "A comment." and shown["createdAt"].endswith("Z")
    assert shown["requeuedAt"] is None  # never retried
    assert body["items"][0]["stage"] == "implementing" and body["items"][0]["bodyPreview"] is None


def test_filters_by_state_issue_and_limit(client, admin_headers) -> None:
    ids = [add_item("ENG-1") for _ in range(3)]
    other = add_item("ENG-2")
    pending = add_item("ENG-1", state="pending")

    def listed(query: str) -> list[int]:
        resp = client.get(f"{LIST}?{query}", headers=admin_headers)
        assert resp.status_code == 200, resp.get_json()
        return [i["id"] for i in resp.get_json()["items"]]

    assert listed("issueKey=ENG-1") == ids[::-1]
    assert listed("issueKey=ENG-1&limit=2") == ids[:0:-1]
    assert listed("state=pending") == [pending]
    assert listed("state=dead&issueKey=ENG-2") == [other]
    assert listed("state=sending") == []
    # what a shadow job would have written, for an operator trying shadow mode to read
    shadow = add_item("ENG-3", state="shadow")
    assert listed("state=shadow") == [shadow]
    # the counts are the issue's when it is given
    counts = client.get(f"{LIST}?issueKey=ENG-2", headers=admin_headers).get_json()["counts"]
    assert counts == {"dead": 1, "pending": 0, "sending": 0, "done": 0, "shadow": 0}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state=gone", "state must be one of: dead, pending, sending, done, shadow"),
        ("state=", "state must be one of: dead, pending, sending, done, shadow"),
        ("state=Dead", "state must be one of: dead, pending, sending, done, shadow"),
        ("issueKey=", "issueKey must be 1 to 64 characters"),
        ("issueKey=" + "x" * 65, "issueKey must be 1 to 64 characters"),
        ("issueKey=a%00b", "issueKey must be 1 to 64 characters"),
        ("limit=0", "limit must be an integer between 1 and 500"),
        ("limit=501", "limit must be an integer between 1 and 500"),
        ("limit=ten", "limit must be an integer between 1 and 500"),
        ("limit=-1", "limit must be an integer between 1 and 500"),
        ("limit=%205", "limit must be an integer between 1 and 500"),
        ("limit=%D9%A3", "limit must be an integer between 1 and 500"),
    ],
)
def test_bad_filters_answer_400_naming_the_parameter(client, admin_headers, query, message) -> None:
    resp = client.get(f"{LIST}?{query}", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (400, {"error": message})


@pytest.mark.parametrize("query", ["state=dead&state=pending", "issueKey=ENG-1&issueKey=ENG-2",
                                   "limit=5&limit=abc"])
def test_a_filter_given_more_than_once_is_refused(client, admin_headers, query) -> None:
    """A repeated filter was cut to its first value: ``state=dead&state=pending`` listed the dead
    items alone. It is refused, naming the filter."""
    resp = client.get(f"{LIST}?{query}", headers=admin_headers)
    name = query.split("=")[0]
    assert (resp.status_code, resp.get_json()) == (400, {"error": f"{name} given more than once"})


def test_the_limit_allows_500(client, admin_headers) -> None:
    assert client.get(f"{LIST}?limit=500&unknown=1", headers=admin_headers).status_code == 200


def test_a_long_body_is_only_previewed(client, admin_headers) -> None:
    body = "Plan:\n" + "step. " * 5000
    add_item(body=body)
    resp = client.get(LIST, headers=admin_headers)
    [shown] = resp.get_json()["items"]
    assert len(shown["bodyPreview"]) == 200 and shown["bodyPreview"].endswith("…")
    assert body[:199] == shown["bodyPreview"][:199]
    assert "step. " * 100 not in resp.get_data(as_text=True)


def test_the_orchestrators_own_secrets_are_masked(app, client, admin_headers) -> None:
    # a tracker's error message is remote text: one that quotes a credential is masked
    key = app.config["AIIMPL_SECRET_KEY"]
    add_item(last_error=f"fake-tracker: HTTP 400: bad token {key}", body=f"token {key}")
    text = client.get(LIST, headers=admin_headers).get_data(as_text=True)
    assert key not in text and "[REDACTED]" in text


@pytest.mark.parametrize(("method", "path"), [("GET", LIST), ("POST", "/api/outbox/1/retry")])
def test_an_admin_session_is_required(client, method, path) -> None:
    item_id = add_item()
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        resp = client.open(path.replace("/1/", f"/{item_id}/"), method=method, headers=headers)
        assert (resp.status_code, resp.get_json()) == (401, {"error": "Unauthorized"})
    assert item(item_id).state == "dead"


# -- retry -------------------------------------------------------------------------------------------


def _deliver_hourly(times: int) -> None:
    start = utcnow()
    for n in range(1, times + 1):
        outbox.deliver(issue_keys=["ENG-1"], now=start + timedelta(hours=n))


def test_a_retried_dead_comment_goes_out_on_the_next_delivery(
    client, admin_headers, adm_tracker, caplog
) -> None:
    adm_tracker.fail["post_comment"] = fail_with(422, "fake-tracker: HTTP 422: comment rejected")
    dead = add_item(state="pending", attempts=0, last_error=None, body="The pull request is open.")
    _deliver_hourly(outbox.MAX_ATTEMPTS_REFUSED)
    assert (item(dead).state, item(dead).attempts) == ("dead", outbox.MAX_ATTEMPTS_REFUSED)
    listed = client.get(LIST, headers=admin_headers).get_json()["items"]
    assert [i["id"] for i in listed] == [dead] and "comment rejected" in listed[0]["lastError"]

    del adm_tracker.fail["post_comment"]  # the tracker takes it now (the operator fixed the cause)
    before = utcnow()
    with caplog.at_level(logging.INFO, logger="aiimpl_core.api.admin_outbox"):
        resp = retry(client, admin_headers, dead)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert (body["id"], body["state"], body["attempts"]) == (dead, "pending", 0)
    assert "comment rejected" in body["lastError"]  # kept until it goes out
    assert body["createdAt"] == listed[0]["createdAt"]  # (when it was first queued)
    assert body["requeuedAt"].endswith("Z") and body["requeuedAt"] >= body["createdAt"]
    row = item(dead)
    assert (row.state, row.attempts) == ("pending", 0)
    assert row.requeued_at is not None and row.requeued_at >= before - timedelta(seconds=1)
    assert row.next_attempt_at >= before - timedelta(seconds=1)
    assert any(f"outbox item {dead} (comment ENG-1) re-queued" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)
    assert client.get(LIST, headers=admin_headers).get_json()["items"] == []

    assert outbox.deliver(now=utcnow())["sent"] == 1
    assert adm_tracker.comments["ENG-1"] == ["The pull request is open."]
    assert item(dead).state == "done"


def test_a_retried_stage_change_goes_out(client, admin_headers, adm_tracker) -> None:
    add_item(op="stage", stage=Stage.IMPLEMENTING.value, state="done")  # an earlier one, delivered
    dead = add_item(op="stage", stage=Stage.PR_OPENED.value)
    add_item(op="comment", state="done")  # a later comment does not hold it back
    assert retry(client, admin_headers, dead).status_code == 200
    assert outbox.deliver(now=utcnow())["sent"] == 1
    assert ("set_stage", ("ENG-1", Stage.PR_OPENED)) in adm_tracker.calls
    assert item(dead).state == "done"


@pytest.mark.parametrize("item_id", ["999", "abc", "0", "-1", "99999999999", "%C2%B2", "1e3"])
def test_an_unknown_item_is_not_found(client, admin_headers, item_id) -> None:
    resp = retry(client, admin_headers, item_id)
    assert (resp.status_code, resp.get_json()) == (404, {"error": "outbox item not found"})


@pytest.mark.parametrize("state", ["pending", "sending", "done", "shadow"])
def test_only_a_dead_item_can_be_retried(client, admin_headers, state) -> None:
    item_id = add_item(state=state, attempts=2)
    resp = retry(client, admin_headers, item_id)
    assert (resp.status_code, resp.get_json()) == (409, {"error": "only a dead item can be retried"})
    assert (item(item_id).state, item(item_id).attempts) == (state, 2)


def test_retrying_twice_answers_409_the_second_time(client, admin_headers) -> None:
    item_id = add_item()
    assert retry(client, admin_headers, item_id).status_code == 200
    resp = retry(client, admin_headers, item_id)
    assert (resp.status_code, resp.get_json()) == (409, {"error": "only a dead item can be retried"})


@pytest.mark.parametrize(
    ("dead_op", "later_op"), [("stage", "stage"), ("stage", "done"), ("done", "stage"), ("done", "done")]
)
def test_a_stage_change_older_than_a_delivered_one_is_not_resent(
    client, admin_headers, dead_op, later_op
) -> None:
    dead = add_item(op=dead_op, stage=Stage.IMPLEMENTING.value if dead_op == "stage" else None)
    add_item(op=later_op, stage=Stage.PR_OPENED.value if later_op == "stage" else None, state="done")
    resp = retry(client, admin_headers, dead)
    assert (resp.status_code, resp.get_json()) == (
        409, {"error": "a later stage change of this issue was delivered"})
    assert item(dead).state == "dead"


def test_a_stage_change_older_than_one_being_sent_waits_for_it(client, admin_headers) -> None:
    """Re-queued due at once, it could go out after the later one a sender is sending now, and move
    the issue back: refused until that one is done."""
    dead = add_item(op="stage", stage=Stage.IMPLEMENTING.value)
    sending = add_item(op="stage", stage=Stage.PR_OPENED.value, state="sending")
    resp = retry(client, admin_headers, dead)
    assert (resp.status_code, resp.get_json()) == (409, {
        "error": "a later stage change of this issue is being delivered: retry once it is done"})
    assert item(dead).state == "dead"
    db.session.execute(update(OutboxItem).where(OutboxItem.id == sending).values(state="pending"))
    db.session.commit()  # (its sender failed: it waits, queued after the one re-queued)
    assert retry(client, admin_headers, dead).status_code == 200


def test_what_does_not_block_a_stage_retry(client, admin_headers) -> None:
    dead = add_item(op="stage", stage=Stage.PR_OPENED.value)
    add_item(op="comment", state="done")  # a later comment
    add_item(op="stage", stage=Stage.DONE.value, state="pending")  # a later stage change not delivered
    add_item(op="stage", stage=Stage.DONE.value, state="dead")  # nor given up on
    add_item("ENG-2", op="stage", stage=Stage.DONE.value, state="done")  # another issue's
    assert retry(client, admin_headers, dead).status_code == 200


def test_a_comment_is_retried_whatever_was_delivered_after_it(client, admin_headers) -> None:
    dead = add_item()
    add_item(op="stage", stage=Stage.PR_OPENED.value, state="done")
    add_item(op="comment", state="done")
    assert retry(client, admin_headers, dead).status_code == 200


@pytest.mark.parametrize("tries", [2, 5])
def test_retries_at_once_requeue_the_item_once(app, cb_live_server, admin_headers, caplog, tries) -> None:
    import requests

    item_id = add_item()
    def send(_: None) -> tuple[int, Any]:
        r = requests.post(f"{cb_live_server}/api/outbox/{item_id}/retry", headers=admin_headers, timeout=60)
        return r.status_code, r.json()

    with caplog.at_level(logging.INFO, logger="aiimpl_core.api.admin_outbox"):
        answers = released_together(nullcontext, send, tries, timeout=60)
    assert sorted(code for code, _ in answers) == [200] + [409] * (tries - 1), answers
    refusals = [body for code, body in answers if code == 409]
    assert all(body == {"error": "only a dead item can be retried"} for body in refusals), refusals
    assert len([r for r in caplog.records if "re-queued" in r.getMessage()]) == 1
    assert (item(item_id).state, item(item_id).attempts) == ("pending", 0)
