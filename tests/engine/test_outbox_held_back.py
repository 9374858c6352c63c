"""The writes an issue's failing write holds back never keep other issues' writes from going out."""

from __future__ import annotations

from datetime import timedelta

from aiimpl_core.orm import utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import queue_outbox_item


def _backing_off(issue_key: str) -> None:
    queue_outbox_item(issue_key, body="failed, backing off", attempts=3,
                      last_error="fake-tracker: HTTP 503", next_attempt_at=utcnow() + timedelta(minutes=10))


def test_an_issues_held_back_writes_do_not_fill_a_pass(app, tracker):
    """A pass reads at most 200 due items. The later writes of an issue whose write backs off are
    due, but wait for it: read and passed over, 200 of them filled every pass, and another issue's
    comment was never read while that issue's tracker failed (hours, at the back-off)."""
    _backing_off("ENG-1")
    for n in range(200):
        queue_outbox_item("ENG-1", body=f"later {n}")
    queue_outbox_item("ENG-2", body="another issue's comment")

    counts = outbox.deliver()

    assert counts["sent"] == 1, counts
    assert tracker.comments["ENG-1"] == []  # in order: held back
    assert tracker.comments["ENG-2"] == ["another issue's comment"]


def test_many_issues_held_back_do_not_keep_a_later_issue_waiting(app, tracker):
    for n in range(100, 200):
        _backing_off(f"ENG-{n}")
        queue_outbox_item(f"ENG-{n}", body="progress")
        queue_outbox_item(f"ENG-{n}", body="outcome")
    queue_outbox_item("ENG-2", body="another issue's comment")

    outbox.deliver()

    assert tracker.comments["ENG-2"] == ["another issue's comment"]
    assert all(tracker.comments[f"ENG-{n}"] == [] for n in range(100, 200))
