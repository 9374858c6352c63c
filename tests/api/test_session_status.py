"""``POST /api/status``: every row of the reference's table, and the progress comments it posts."""

from __future__ import annotations

import re
from contextlib import nullcontext
from typing import Any

import pytest
from sqlalchemy import select

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, OutboxItem
from aiimpl_core.testing.fakes import fail_with
from aiimpl_core.testing.orchestrator import released_together

URL = "/api/status"
STAMP = r"\n\n_\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def _fresh(job_id):
    db.session.commit()
    return db.session.get(Job, job_id)


ROWS = [
    # 400 event is required: event is missing or not a string
    (400, "event is required", lambda n: {"nonce": n}, None),
    (400, "event is required", lambda n: {"nonce": n, "event": 7}, None),
    (400, "event is required", lambda n: {"nonce": n, "event": None}, None),
    # 400 Invalid JSON body: Body could not be parsed as JSON
    (400, "Invalid JSON body", None, b"{nonce:"),
    (400, "Invalid JSON body", None, b""),
    (400, "Invalid JSON body", None, b"\x00\xff"),
    # 400 nonce is required: nonce is missing or not a string
    (400, "nonce is required", lambda n: {"event": "session_created"}, None),
    (400, "nonce is required", lambda n: {"nonce": 1, "event": "session_created"}, None),
    (400, "nonce is required", lambda n: ["session_created"], None),
    # 400 Unknown event type: {type}
    (400, "Unknown event type: rocket_launched", lambda n: {"nonce": n, "event": "rocket_launched"}, None),
    (400, "Unknown event type: ", lambda n: {"nonce": n, "event": ""}, None),
    # 403 Invalid or expired nonce: No active job matches the nonce
    (403, "Invalid or expired nonce", lambda n: {"nonce": "guess", "event": "session_created"}, None),
    # an empty nonce is a string (not "nonce is required", which was answered) that no job has
    (403, "Invalid or expired nonce", lambda n: {"nonce": "", "event": "session_created"}, None),
]


@pytest.mark.parametrize(("status", "error", "make_body", "raw"), ROWS)
def test_status_table_rows(client, cb_job, cb_tracker, status, error, make_body, raw):
    _, nonce = cb_job()
    if raw is not None:
        resp = client.post(URL, data=raw, content_type="application/json")
    else:
        resp = client.post(URL, json=make_body(nonce))
    assert resp.status_code == status
    assert resp.get_json() == {"error": error}
    assert cb_tracker.comments["ENG-1"] == []


def test_status_table_403_for_a_terminal_job(client, cb_job):
    _, nonce = cb_job(status="timed_out")
    resp = client.post(URL, json={"nonce": nonce, "event": "session_failed"})
    assert resp.status_code == 403
    assert resp.get_json() == {"error": "Invalid or expired nonce"}


def test_status_table_500_when_posting_fails_and_the_retry_posts_once(client, cb_job, cb_tracker):
    job_id, nonce = cb_job()
    cb_tracker.fail["post_comment"] = fail_with(503, "tracker unavailable")
    resp = client.post(URL, json={"nonce": nonce, "event": "verification_started"})
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "Internal server error"}
    item = db.session.scalar(
        select(OutboxItem).where(OutboxItem.dedupe_key == f"status:{job_id}:verification_started")
    )
    assert item.state == "pending"  # kept for the poller
    del cb_tracker.fail["post_comment"]
    retry = client.post(URL, json={"nonce": nonce, "event": "verification_started"})
    assert retry.status_code == 200
    assert retry.get_json() == {"ok": True, "event": "verification_started", "duplicate": True}
    assert len(cb_tracker.comments["ENG-1"]) == 1


def test_an_event_waits_behind_an_earlier_comment_of_the_issue(client, cb_job, cb_tracker):
    """Comments of an issue go out in order: with an earlier one still queued (the tracker failed
    it a moment ago), a new event is queued behind it, and answers 500 while neither can be posted;
    once the tracker is back, the retry posts both, the earlier first."""
    from aiimpl_core.services import outbox

    job_id, nonce = cb_job()
    cb_tracker.fail["post_comment"] = fail_with(503, "tracker unavailable")
    assert client.post(URL, json={"nonce": nonce, "event": "session_created"}).status_code == 500
    del cb_tracker.fail["post_comment"]
    # the earlier comment is not due yet (its backoff): the new one must not overtake it
    resp = client.post(URL, json={"nonce": nonce, "event": "environment_ready"})
    assert resp.status_code == 500
    assert cb_tracker.comments["ENG-1"] == []
    items = db.session.scalars(
        select(OutboxItem).where(OutboxItem.job_id == job_id).order_by(OutboxItem.id)
    ).all()
    assert [(i.kind, i.state) for i in items] == [
        ("progress:session_created", "pending"),
        ("progress:environment_ready", "pending"),
    ]
    retry = client.post(URL, json={"nonce": nonce, "event": "session_created"})  # due at once now
    assert retry.status_code == 200 and retry.get_json()["duplicate"] is True
    db.session.commit()
    outbox.deliver(issue_keys=["ENG-1"])
    assert [c.split("\n")[0] for c in cb_tracker.comments["ENG-1"]] == [
        "🚀 Session machine created. Cloning repo and running setup…",
        "✅ Environment ready. Claude is implementing…",
    ]


EVENTS = [
    ("session_created", {}, "🚀 Session machine created. Cloning repo and running setup…"),
    ("environment_ready", {}, "✅ Environment ready. Claude is implementing…"),
    (
        "pr_opened",
        {"prNumber": 42, "prUrl": "https://github.com/acme/api/pull/42"},
        "📝 Claude finished. PR #42 opened: https://github.com/acme/api/pull/42",
    ),
    ("verification_started", {}, "🧪 Running verification script…"),
    ("verification_passed", {}, "✅ Verification passed"),
    ("verification_failed", {"detail": "3 tests failed"}, "❌ Verification failed: 3 tests failed"),
    ("session_cleaned_up", {"duration": "12m 30s"}, "🧹 Session machine cleaned up. Duration: 12m 30s"),
    ("session_failed", {"reason": "OOM killed"}, "⚠️ Session failed: OOM killed. Machine will be cleaned up."),
    (
        "session_failed",
        {"reason": "Work so far is on branch `ai/ENG-1` (commit abc1234). "},
        "⚠️ Session failed: Work so far is on branch `ai/ENG-1` (commit abc1234). Machine will be cleaned up.",
    ),
    (
        "session_timed_out",
        {"reason": "60 minutes"},
        "⚠️ Session timed out: 60 minutes. Machine will be cleaned up.",
    ),
]


@pytest.mark.parametrize(("event", "fields", "text"), EVENTS)
def test_each_event_posts_the_reference_comment(client, cb_job, cb_tracker, event, fields, text):
    _, nonce = cb_job()
    resp = client.post(
        URL, json={"nonce": nonce, "event": event, "logUrl": "https://fly.test/logs/m1", **fields}
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"ok": True, "event": event, "duplicate": False}
    [posted] = cb_tracker.comments["ENG-1"]
    assert re.fullmatch(
        re.escape(text) + STAMP + re.escape(" · [Machine logs](https://fly.test/logs/m1)_"), posted
    ), posted


def test_log_link_falls_back_to_the_run_url_and_log_url_is_stored(client, cb_job, cb_tracker):
    job_id, nonce = cb_job()
    client.post(URL, json={"nonce": nonce, "event": "environment_ready"})
    assert cb_tracker.comments["ENG-1"][0].endswith("· [Machine logs](https://runs.test/run-1)_")
    client.post(URL, json={"nonce": nonce, "event": "verification_started", "logUrl": "https://logs.test/x"})
    assert _fresh(job_id).log_url == "https://logs.test/x"
    assert cb_tracker.comments["ENG-1"][1].endswith("· [Machine logs](https://logs.test/x)_")


def test_a_retried_event_is_never_posted_twice(client, cb_job, cb_tracker):
    _, nonce = cb_job()
    for _ in range(3):
        assert client.post(URL, json={"nonce": nonce, "event": "environment_ready"}).status_code == 200
    assert len(cb_tracker.comments["ENG-1"]) == 1


def test_an_event_costs_three_statements_as_does_its_retry(client, cb_job, cb_tracker):
    """The usual event reads its job, queues its comment already taken (one statement that also
    sees whether anything of the issue waits, and skips a key queued already), and records it
    sent after the post; a retry of a posted event queues nothing and finds its item by key. On
    PostgreSQL that record is a transaction of its own in autocommit (no ``BEGIN`` and ``COMMIT``
    to send), and the job's read and the queueing one transaction."""
    from sqlalchemy import event

    from aiimpl_core.services import outbox

    _, nonce = cb_job(status="running")
    outbox.install()  # the database's own id, read once per process (the first comment's identity)
    statements: list[str] = []
    autocommit: list[bool] = []

    def count(conn, cursor, statement, *args):
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            statements.append(" ".join(statement.split()).upper())
            autocommit.append(bool(getattr(cursor.connection, "autocommit", False)))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        first = client.post(URL, json={"nonce": nonce, "event": "environment_ready"})
        posted = list(statements)
        again = client.post(URL, json={"nonce": nonce, "event": "environment_ready"})
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert (first.get_json()["duplicate"], again.get_json()["duplicate"]) == (False, True)
    assert len(posted) == 3, posted
    assert posted[0].startswith("SELECT JOBS.") and posted[1].startswith("INSERT INTO OUTBOX")
    assert posted[2].startswith("UPDATE OUTBOX")
    if db.engine.dialect.name == "postgresql":
        assert autocommit[:3] == [False, False, True]
    retry = statements[len(posted):]
    assert len(retry) == 3 and retry[2].startswith("SELECT OUTBOX."), retry
    assert len(cb_tracker.comments["ENG-1"]) == 1


def test_session_created_moves_the_job_to_running(client, cb_job):
    job_id, nonce = cb_job(status="dispatched")
    client.post(URL, json={"nonce": nonce, "event": "session_created"})
    assert _fresh(job_id).status == "running"


def test_pr_opened_records_the_pull_request(client, cb_job):
    job_id, nonce = cb_job(status="running")
    client.post(
        URL,
        json={
            "nonce": nonce,
            "event": "pr_opened",
            "prNumber": "42",
            "prUrl": "https://github.com/acme/api/pull/42",
        },
    )
    job = _fresh(job_id)
    assert (job.pr_number, job.pr_url) == (42, "https://github.com/acme/api/pull/42")


@pytest.mark.parametrize("number", [None, ""], ids=["left-out", "empty"])
def test_pr_opened_without_a_number_takes_the_urls(client, cb_job, cb_tracker, number):
    _, nonce = cb_job(status="running")
    event = {"nonce": nonce, "event": "pr_opened", "prUrl": "https://github.com/acme/api/pull/7"}
    if number is not None:
        event["prNumber"] = number
    assert client.post(URL, json=event).status_code == 200
    assert cb_tracker.comments["ENG-1"][-1].split("\n")[0] == (
        "📝 Claude finished. PR #7 opened: https://github.com/acme/api/pull/7"
    )


@pytest.mark.parametrize(("recorded", "said"), [
    (None, "📝 Claude finished. PR #abc opened"),
    ("https://github.com/acme/api/pull/9", "📝 Claude finished. PR #abc opened: https://github.com/acme/api/pull/9"),
], ids=["none-recorded", "recorded"])
def test_pr_opened_without_a_url_takes_the_recorded_one_or_ends_without_a_colon(
    client, cb_job, cb_tracker, recorded, said
):
    """A runner that sends only the number (any text): the comment ended ``opened: `` with nothing
    after the colon; the URL is the job's recorded one, else the sentence ends at the number."""
    _, nonce = cb_job(status="running", pr_url=recorded)
    assert client.post(URL, json={"nonce": nonce, "event": "pr_opened", "prNumber": "abc"}).status_code == 200
    assert cb_tracker.comments["ENG-1"][-1].split("\n")[0] == said


def test_shadow_jobs_record_and_post_nothing(client, cb_job, cb_tracker):
    job_id, nonce = cb_job(shadow=True)
    resp = client.post(URL, json={"nonce": nonce, "event": "session_created"})
    assert resp.status_code == 200
    assert cb_tracker.comments["ENG-1"] == []
    assert db.session.scalar(select(OutboxItem.state).where(OutboxItem.job_id == job_id)) == "shadow"


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("logUrl", "javascript:alert(1)", "logUrl must be an http(s) URL of at most 2000 characters"),
        ("prNumber", {"n": 1}, "prNumber must be a string or a number"),
        ("prUrl", 42, "prUrl must be a string of at most 2000 characters"),
        # a string, but too long: the message says what is wrong, not "must be a string"
        (
            "prUrl",
            "https://github.com/acme/api/pull/1?" + "x" * 1966,
            "prUrl must be a string of at most 2000 characters",
        ),
        (
            "logUrl",
            "https://logs.test/run?" + "x" * 1979,
            "logUrl must be an http(s) URL of at most 2000 characters",
        ),
    ],
    ids=["logUrl-not-http", "prNumber-object", "prUrl-number", "prUrl-2001-chars", "logUrl-2001-chars"],
)
def test_wrongly_typed_optional_fields(client, cb_job, cb_tracker, field, value, error):
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "event": "pr_opened", field: value})
    assert resp.status_code == 400
    assert resp.get_json() == {"error": error}
    assert cb_tracker.comments["ENG-1"] == []


def test_an_unknown_event_type_is_quoted_whole(client, cb_job, cb_tracker):
    """``Unknown event type: {type}`` quoted only the first 200 characters of a longer type, so the
    answer named a type that was not sent; the reference's row is for any type not allowed."""
    _, nonce = cb_job()
    for event in ("x" * 64, "x" * 300, "session_created" + " " * 50):
        resp = client.post(URL, json={"nonce": nonce, "event": event})
        assert (resp.status_code, resp.get_json()) == (400, {"error": f"Unknown event type: {event}"})
    assert cb_tracker.comments["ENG-1"] == []


@pytest.mark.parametrize("field", ["prUrl", "logUrl"])
def test_urls_of_2000_characters_are_accepted(client, cb_job, field):
    _, nonce = cb_job()
    url = "https://github.com/acme/api/pull/1?" + "x" * 1965
    assert len(url) == 2000
    resp = client.post(URL, json={"nonce": nonce, "event": "pr_opened", "prNumber": 1, field: url})
    assert resp.status_code == 200, resp.get_json()


def test_the_same_event_five_times_at_once_posts_once(app, cb_live_server, cb_job, cb_tracker):
    import requests

    _, nonce = cb_job()
    def send(_: None) -> tuple[int, Any]:
        r = requests.post(cb_live_server + URL, json={"nonce": nonce, "event": "environment_ready"},
                          timeout=60)
        return r.status_code, r.json()

    answers = released_together(nullcontext, send, 5, timeout=60)
    assert [code for code, _ in answers] == [200] * 5, answers
    assert sorted(body["duplicate"] for _, body in answers) == [False, True, True, True, True]
    assert len(cb_tracker.comments["ENG-1"]) == 1
