"""``POST /api/github/webhook``: every row of the reference's table, fed with GitHub's real payloads.

Payloads come from ``shared/specs/github/webhooks`` (octokit's captured examples and the derived
merged example); every payload a test builds from them is validated against the octokit JSON
schemas first, so the handler is only ever shown deliveries GitHub could send.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import uuid
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from aiimpl_core.auth.signatures import github_signature
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, OutboxItem, TrackedIssue, WebhookDelivery, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.orchestrator import held, released_together
from aiimpl_core.webhooks import checks_running, wait_for_checks

URL = "/api/github/webhook"
SECRET = "webhook-secret-for-tests"


@pytest.fixture
def aiimpl_config():
    return {"AIIMPL_GITHUB_WEBHOOK_SECRET": SECRET}


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    cb_tracker.add("HW-7", title="Hello world change")
    return [cb_tracker.plugin, cb_runner.plugin]


@pytest.fixture
def webhooks_dir(cb_webhooks_dir):
    return cb_webhooks_dir


@pytest.fixture
def validate(cb_validate_webhook):
    return cb_validate_webhook


def load(webhooks_dir, relative):
    with open(os.path.join(webhooks_dir, relative), encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture
def merged_payload(webhooks_dir, validate):
    payload = load(webhooks_dir, "derived/pull_request.closed.merged.payload.json")
    validate(payload, "pull_request$closed")
    return payload


def deliver(
    client, payload=None, *, raw=None, event="pull_request", delivery=None, secret=SECRET, signature=None
):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["X-Hub-Signature-256"] = github_signature(secret, body)
    return client.post(URL, data=body, headers=headers, content_type="application/json")


def hello_world_job(cb_job, **kw):
    values = dict(
        owner="Codertocat",
        repo="Hello-World",
        status="completed",
        pr_number=2,
        pr_url="https://github.com/Codertocat/Hello-World/pull/2",
        branch="changes",
    )
    values.update(kw)
    return cb_job("HW-7", **values)[0]


# -- the reference's table ---------------------------------------------------------------------


def test_webhook_table_400_invalid_json_payload(client):
    for raw in (b"{not json", b"", b"\xff\xfe", b"[" * 100000):
        resp = deliver(client, raw=raw)
        assert resp.status_code == 400
        assert resp.get_json() == {"error": "Invalid JSON payload"}


def _parent(payload, path):
    node = payload
    for key in path[:-1]:
        node = node[key]
    return node


def _drop(path):
    def mutate(payload):
        del _parent(payload, path)[path[-1]]

    return mutate


def _set(path, value):
    def mutate(payload):
        _parent(payload, path)[path[-1]] = value

    return mutate


def _null(path):
    return _set(path, None)


@pytest.mark.parametrize(
    "mutate",
    [
        _drop(("pull_request", "html_url")),
        _null(("pull_request", "merge_commit_sha")),
        _drop(("pull_request", "head", "ref")),
        _drop(("pull_request", "head")),
        _drop(("repository",)),
        _drop(("repository", "full_name")),
        _drop(("pull_request", "number")),
        _set(("pull_request", "html_url"), "   "),
        _set(("pull_request", "html_url"), "not a URL"),
        _set(("pull_request", "head", "ref"), " "),
    ],
    ids=["url", "merge-sha", "branch", "head", "repository", "repository-name", "number", "url-blank",
         "url-not-a-url", "branch-blank"],
)
def test_webhook_table_400_missing_required_pr_fields(client, cb_job, merged_payload, mutate):
    hello_world_job(cb_job)
    payload = copy.deepcopy(merged_payload)
    if mutate.__closure__[0].cell_contents == ("pull_request", "number"):
        payload.pop("number")
    mutate(payload)
    resp = deliver(client, payload)
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "Missing required PR fields"}
    assert db.session.scalar(select(func.count()).select_from(OutboxItem)) == 0


@pytest.mark.parametrize(
    "signature",
    [
        "sha256=" + "0" * 64,
        "sha1=abc",
        "",
        "garbage",
        github_signature("another-secret", b"{}"),
    ],
)
def test_webhook_table_401_invalid_signature(client, merged_payload, signature):
    resp = deliver(client, merged_payload, signature=signature)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "Invalid signature"}


def test_webhook_table_401_without_signature_header(client, merged_payload):
    resp = deliver(client, merged_payload, secret=None)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "Invalid signature"}


def test_webhook_table_401_signature_of_a_different_body(client, merged_payload):
    body = json.dumps(merged_payload).encode()
    resp = deliver(client, raw=body + b" ", signature=github_signature(SECRET, body))
    assert resp.status_code == 401


@pytest.mark.parametrize("aiimpl_config", [{"AIIMPL_GITHUB_WEBHOOK_SECRET": None}])
def test_webhook_refuses_everything_while_the_secret_is_unset(client, merged_payload, caplog):
    with caplog.at_level(logging.ERROR):
        resp = deliver(client, merged_payload, secret="")
        resp2 = deliver(client, merged_payload, secret="anything")
    assert resp.status_code == resp2.status_code == 401
    assert resp.get_json() == {"error": "Invalid signature"}
    assert "AIIMPL_GITHUB_WEBHOOK_SECRET is not set" in caplog.text


# -- events that are not a merged PR are ignored -----------------------------------------------

IGNORED = [
    ("pull_request", "examples/pull_request/closed.payload.json", "pull_request$closed"),
    ("pull_request", "examples/pull_request/closed.with-organization.payload.json", "pull_request$closed"),
    ("pull_request", "examples/pull_request/opened.payload.json", "pull_request$opened"),
    ("pull_request", "examples/pull_request/synchronize.payload.json", "pull_request$synchronize"),
    ("pull_request", "examples/pull_request/reopened.payload.json", "pull_request$reopened"),
    ("issue_comment", "examples/issue_comment/created.payload.json", "issue_comment$created"),
    ("workflow_run", "examples/workflow_run/completed.payload.json", "workflow_run$completed"),
]


@pytest.mark.parametrize(("event", "relative", "schema_id"), IGNORED)
def test_other_events_are_ignored(
    client, cb_job, webhooks_dir, validate, cb_tracker, event, relative, schema_id
):
    hello_world_job(cb_job)
    payload = load(webhooks_dir, relative)
    validate(payload, schema_id)
    resp = deliver(client, payload, event=event)
    assert resp.status_code == 200
    assert resp.get_json()["ignored"] is True
    assert cb_tracker.comments["HW-7"] == []


def test_merged_payload_under_another_event_name_is_ignored(client, cb_job, merged_payload, cb_tracker):
    hello_world_job(cb_job)
    assert deliver(client, merged_payload, event="pull_request_review").get_json()["ignored"] is True
    assert cb_tracker.comments["HW-7"] == []


# -- a merged PR closes the issue out ----------------------------------------------------------


def _merge_effects(cb_tracker, job_id):
    db.session.commit()
    job = db.session.get(Job, job_id)
    tracked = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == "HW-7"))
    return job, tracked


def test_merged_pr_found_by_repository_and_number(client, cb_job, merged_payload, cb_tracker):
    job_id = hello_world_job(cb_job, branch="something-else")
    resp = deliver(client, merged_payload)
    assert resp.status_code == 200
    assert resp.get_json() == {"ignored": False, "duplicate": False, "matched": True, "jobId": job_id}
    job, tracked = _merge_effects(cb_tracker, job_id)
    assert job.merge_sha == "c4295bd74fb0f4fda03689c3df3f2803b658fd85"
    assert tracked.stage == "done" and tracked.done_at is not None
    assert cb_tracker.comments["HW-7"] == ["🎉 PR #2 merged (c4295bd). Closing this issue out."]
    assert cb_tracker.issues["HW-7"].done is True


@pytest.mark.parametrize("text", ["fixes a bug\u0000", "half a pair \ud83d", "\udc00 at the start"])
def test_a_merge_whose_people_written_text_holds_nul_or_a_lone_surrogate_is_taken(
    client, cb_job, merged_payload, cb_tracker, text
):
    """A pull request's description (or a commit title) is people's text: a NUL or half a
    surrogate pair in it made the whole signed delivery "Invalid JSON payload", so the merge was
    lost, on every redelivery too. Such text is taken with U+FFFD in its place."""
    job_id = hello_world_job(cb_job)
    payload = copy.deepcopy(merged_payload)
    payload["pull_request"]["body"] = text
    payload["pull_request"]["title"] = text
    raw = json.dumps(payload).encode()  # (json escapes both: \u0000, \ud83d)
    resp = deliver(client, raw=raw)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"ignored": False, "duplicate": False, "matched": True, "jobId": job_id}
    assert _merge_effects(cb_tracker, job_id)[1].stage == "done"


def test_merged_pr_found_by_branch(client, cb_job, merged_payload, cb_tracker):
    job_id = hello_world_job(cb_job, pr_number=None, pr_url=None)
    deliver(client, merged_payload)
    job, _ = _merge_effects(cb_tracker, job_id)
    assert job.merge_sha == "c4295bd74fb0f4fda03689c3df3f2803b658fd85"
    assert job.pr_number == 2
    assert cb_tracker.issues["HW-7"].done is True


def test_a_merged_pr_from_a_fork_is_never_matched_by_its_branch(client, cb_job, merged_payload, validate,
                                                                 cb_tracker):
    """A fork copies the repository's branches (ai/… too): a stranger's merged PR from a branch of
    the same name must not close the issue or take the job's PR number."""
    job_id = hello_world_job(cb_job, pr_number=None, pr_url=None)
    payload = copy.deepcopy(merged_payload)
    payload["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World"
    validate(payload, "pull_request$closed")
    resp = deliver(client, payload)
    assert resp.get_json() == {"ignored": False, "duplicate": False, "matched": False, "jobId": None}
    job = db.session.get(Job, job_id)
    assert (job.pr_number, job.merge_sha) == (None, None)
    assert cb_tracker.issues["HW-7"].done is False and cb_tracker.comments.get("HW-7", []) == []


def test_merged_pr_in_a_constructed_repository(client, cb_job, merged_payload, validate, cb_tracker):
    """The merged example moved to acme/api (validated), matched case-insensitively."""
    payload = copy.deepcopy(merged_payload)
    payload["repository"]["full_name"] = "ACME/API"
    payload["repository"]["name"] = "API"
    payload["number"] = payload["pull_request"]["number"] = 77
    payload["pull_request"]["html_url"] = "https://github.com/ACME/API/pull/77"
    validate(payload, "pull_request$closed")
    job_id, _ = cb_job("ENG-1", status="completed", pr_number=77)
    assert deliver(client, payload).get_json()["jobId"] == job_id
    assert cb_tracker.issues["ENG-1"].done is True


def test_a_tracker_slower_than_the_answer_gets_the_writes_after_it(
    app, client, cb_job, merged_payload, cb_tracker, monkeypatch
):
    """GitHub counts a delivery not answered within 10 s as failed: the tracker writes the merge
    queued wait for at most AIIMPL_WEBHOOK_ANSWER_SECONDS, then go on after the answer."""
    job_id = hello_world_job(cb_job)
    app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"] = 1
    called, release = held(monkeypatch, cb_tracker.provider_class, "post_comment")
    try:
        started = time.monotonic()
        resp = deliver(client, merged_payload)
        took = time.monotonic() - started
        assert resp.status_code == 200 and resp.get_json()["jobId"] == job_id
        assert took < 1 + 10, took  # (the writes held 30 s when the answer waited for them)
        assert called.wait(30) and cb_tracker.comments.get("HW-7", []) == [] and checks_running() == 1
        _, tracked = _merge_effects(cb_tracker, job_id)
        assert tracked.stage == "done"  # the merge is recorded before the answer
    finally:
        release.set()
    assert wait_for_checks(30)
    assert cb_tracker.comments["HW-7"] == ["🎉 PR #2 merged (c4295bd). Closing this issue out."]
    assert cb_tracker.issues["HW-7"].done is True
    db.session.commit()
    assert {i.state for i in db.session.scalars(select(OutboxItem))} == {"done"}


def test_with_no_thread_to_be_had_the_writes_are_sent_in_the_request(
    client, cb_job, merged_payload, cb_tracker, monkeypatch
):
    """A process at its thread limit sends the merge's tracker writes in the request, as before
    they had a thread of their own, rather than leaving them to the poller."""
    from aiimpl_core import webhooks

    def refused(self):
        raise RuntimeError("can't start new thread")

    hello_world_job(cb_job)
    with monkeypatch.context() as patched:
        patched.setattr(webhooks.threading.Thread, "start", refused)
        assert deliver(client, merged_payload).get_json()["matched"] is True
    assert cb_tracker.comments["HW-7"] == ["🎉 PR #2 merged (c4295bd). Closing this issue out."]
    assert cb_tracker.issues["HW-7"].done is True and checks_running() == 0


def test_merged_pr_of_no_job_is_acknowledged(client, merged_payload, cb_tracker):
    resp = deliver(client, merged_payload)
    assert resp.status_code == 200
    assert resp.get_json()["matched"] is False
    assert not any(cb_tracker.comments.values())


def test_redelivery_acts_once(client, cb_job, merged_payload, cb_tracker):
    hello_world_job(cb_job)
    first = deliver(client, merged_payload, delivery="d-1")
    again = deliver(client, merged_payload, delivery="d-1")
    assert first.get_json()["duplicate"] is False
    assert again.get_json()["duplicate"] is True
    assert len(cb_tracker.comments["HW-7"]) == 1


@pytest.mark.parametrize("event, example", [
    ("pull_request", "pull_request/opened.payload.json"),
    ("issue_comment", "issue_comment/created.payload.json"),
])
def test_redelivery_of_an_ignored_event_is_said_a_duplicate(client, webhooks_dir, validate, event, example):
    """GitHub's Redeliver of an event that needs nothing: the same answer as a merge's redelivery
    (a 500 would count as a failed delivery)."""
    payload = load(webhooks_dir, f"examples/{example}")
    validate(payload, f"{event}${example.split('/')[1].split('.')[0]}")
    first = deliver(client, payload, event=event, delivery="d-ignored")
    again = deliver(client, payload, event=event, delivery="d-ignored")
    assert first.status_code == 200 and first.get_json()["ignored"] is True
    assert again.status_code == 200 and again.get_json() == {"ignored": True, "duplicate": True}
    assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1


def test_same_delivery_five_times_at_once_acts_once(app, cb_live_server, cb_job, merged_payload, cb_tracker):
    hello_world_job(cb_job)
    body = json.dumps(merged_payload).encode()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": github_signature(SECRET, body),
        "Content-Type": "application/json",
    }
    def send(_: None) -> tuple[int, Any]:
        r = requests.post(cb_live_server + URL, data=body, headers=headers, timeout=60)
        return r.status_code, r.json()

    answers = released_together(nullcontext, send, 5, timeout=60)
    assert [code for code, _ in answers] == [200] * 5, answers
    assert sorted(a["duplicate"] for _, a in answers) == [False, True, True, True, True]
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    assert db.session.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.op == "done")) == 1
    # under this much write contention SQLite may refuse the immediate delivery; the comment
    # then waits in the outbox for the poller, which is what runs here
    outbox.deliver(now=utcnow() + timedelta(hours=2))
    assert cb_tracker.comments["HW-7"] == ["🎉 PR #2 merged (c4295bd). Closing this issue out."]
    assert cb_tracker.issues["HW-7"].done is True


def test_a_body_larger_than_github_sends_is_no_payload(client, merged_payload):
    """Over 25 MB, GitHub's limit: answered as the tracker webhooks answer a body over theirs."""
    payload = copy.deepcopy(merged_payload)
    payload["pull_request"]["body"] = "x" * (25 * 1024 * 1024)
    resp = deliver(client, payload)
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "Invalid JSON payload"}


def test_a_delivery_larger_than_other_bodies_is_accepted(client, cb_job, merged_payload, cb_tracker):
    """GitHub sends up to 25 MB; the API's usual body limit (2 MB) does not apply here."""
    job_id = hello_world_job(cb_job)
    payload = copy.deepcopy(merged_payload)
    payload["pull_request"]["body"] = "x" * (3 * 1024 * 1024)
    resp = deliver(client, payload)
    assert resp.status_code == 200
    assert resp.get_json()["jobId"] == job_id
