"""A runner's retry of a status event whose comment failed, while a poller sends that comment."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, OutboxItem, utcnow
from aiimpl_core.services import callbacks, outbox
from aiimpl_core.testing.fakes import fail_with

TIMEOUT = 30


@pytest.mark.postgres
def test_a_status_retry_leaves_a_pollers_lease_alone(app, tracker, add_mapping, monkeypatch):
    """The retry brings the waiting comment forward (``next_attempt_at = now``). A poller that took
    the comment between the retry's read of it and that write holds its lease in the same column:
    the write, keyed on the id alone, overwrote the lease, the retry's own delivery took the
    comment as one whose sender had stopped, and posted it while the poller posted it too."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite: status_event's BEGIN IMMEDIATE keeps the poller's claim out")
    tracker.add("ENG-1", title="t")
    mapping = add_mapping("ENG")
    nonce, digest = tokens.new_nonce()
    job = Job(issue_key="ENG-1", team_key="ENG", mapping_id=mapping.id, provider="fake-tracker",
              phase="implementation", status="running", backend="github-actions", owner="acme",
              repo="eng", base_branch="main", branch="ai/ENG-1", nonce_hash=digest,
              run_url="https://runs.test/run-1")
    db.session.add(job)
    db.session.commit()

    # the first report's comment fails: queued, backing off
    tracker.fail["post_comment"] = fail_with(503, "tracker unavailable")
    with pytest.raises(callbacks.CallbackError):
        callbacks.status_event(nonce, {"nonce": nonce, "event": "verification_started"})
    del tracker.fail["post_comment"]
    item = db.session.scalar(select(OutboxItem).where(OutboxItem.issue_key == "ENG-1"))
    assert item.state == "pending" and item.next_attempt_at > utcnow()
    db.session.commit()

    # the poller's post is held inside the tracker call until the retry is done
    entered, opened = threading.Event(), threading.Event()
    post = tracker.provider_class.post_comment

    def post_comment(provider: Any, key: str, body: str) -> Any:
        if threading.current_thread().name == "poller":
            entered.set()
            assert opened.wait(TIMEOUT)
        return post(provider, key, body)

    monkeypatch.setattr(tracker.provider_class, "post_comment", post_comment)
    errors: list[BaseException] = []

    def poller() -> None:
        try:
            with app.app_context():
                try:
                    outbox.deliver(now=utcnow() + timedelta(minutes=1))  # past the back-off
                finally:
                    db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=poller, name="poller", daemon=True)
    fired: list[bool] = []

    def after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        # right after the retry read its queued comment (callbacks._QUEUED), the poller takes it
        if (not fired and threading.current_thread() is threading.main_thread()
                and statement.lstrip().startswith("SELECT outbox.id, outbox.state, outbox.next_attempt_at")):
            fired.append(True)
            thread.start()
            assert entered.wait(TIMEOUT), "the poller never took the comment"

    event.listen(db.engine, "after_cursor_execute", after)
    try:
        answer = callbacks.status_event(nonce, {"nonce": nonce, "event": "verification_started"})
    except callbacks.CallbackError as exc:
        answer = {"error": exc.status}  # (a post still under way when the retry stops waiting)
    finally:
        event.remove(db.engine, "after_cursor_execute", after)
        opened.set()
        thread.join(TIMEOUT)
    assert fired and not errors, errors
    posted = [b for b in tracker.comments["ENG-1"] if b.startswith("🧪 Running verification script")]
    assert len(posted) == 1, (answer, tracker.comments["ENG-1"])
    db.session.rollback()
    assert db.session.get(OutboxItem, item.id).state == "done"
