"""A ``Retry-After`` far in the future (a date years ahead, an epoch time sent as seconds, ``inf``)
is honoured up to a bound: a tracker write is tried again within the outbox's longest back-off and a
connection within an hour, instead of never, and a wait no date can hold fails nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox, poller
from aiimpl_core.testing.fakes import fail_with, queue_outbox_item

#: an epoch time given as seconds to wait (57 years), more than a date can hold, and infinity
HUGE_WAITS = [1.8e9, 1e12, float("inf")]


@pytest.mark.parametrize("wait", HUGE_WAITS)
def test_a_huge_retry_after_holds_a_tracker_write_back_at_most_the_longest_back_off(app, tracker, wait):
    tracker.fail["post_comment"] = fail_with(429, "rate limited", retry_after=wait)
    first = queue_outbox_item("ENG-1", body="first")
    queue_outbox_item("ENG-2", body="another issue's")
    before = utcnow()

    counts = outbox.deliver()

    # recorded as a failure like any other, and the pass goes on (the tracker asked to wait: the
    # other issue's write waits for the next pass)
    assert counts == {"sent": 0, "failed": 1, "skipped": 1, "left": 0}
    db.session.expire_all()
    item = db.session.get(OutboxItem, first)
    assert (item.state, item.attempts) == ("pending", 1)
    assert item.next_attempt_at <= utcnow() + outbox.MAX_BACKOFF
    assert item.next_attempt_at >= before + outbox.MAX_BACKOFF - timedelta(minutes=1)

    del tracker.fail["post_comment"]
    assert outbox.deliver(now=utcnow() + outbox.MAX_BACKOFF + timedelta(seconds=1))["sent"] == 2
    assert tracker.comments["ENG-1"] == ["first"]


def test_a_retry_after_within_the_bound_is_honoured_as_given(app, tracker):
    tracker.fail["post_comment"] = fail_with(429, "rate limited", retry_after=600)
    item_id = queue_outbox_item("ENG-1")
    before = utcnow()
    outbox.deliver()
    db.session.expire_all()
    due = db.session.get(OutboxItem, item_id).next_attempt_at
    assert before + timedelta(seconds=600) <= due <= utcnow() + timedelta(seconds=600)


@pytest.mark.parametrize("wait", HUGE_WAITS)
def test_a_huge_retry_after_leaves_a_connection_alone_for_an_hour_at_most(app, wait):
    now = utcnow()
    backoff = poller.record_failure("ticketing", "fake-tracker", fail_with(429, retry_after=wait), now)
    assert backoff.until == now + poller.MAX_RETRY_AFTER
    assert poller.backoff_of("ticketing", "fake-tracker", now + timedelta(minutes=59)) is not None
    assert poller.backoff_of("ticketing", "fake-tracker", now + timedelta(hours=1)) is None


def test_a_retry_after_within_the_bound_leaves_a_connection_alone_as_long_as_it_says(app):
    now = utcnow()
    backoff = poller.record_failure("runner", "github-actions", fail_with(429, retry_after=1800), now)
    assert backoff.until == now + timedelta(seconds=1800)


@pytest.mark.parametrize("value", [
    {"until": "2999-01-01T00:00:00", "failures": 2, "error": "a time without its offset"},
    {"until": "2999-01-01T00:00:00+00:00", "failures": "many", "error": "a count that is no number"},
    {"until": "2999-01-01T00:00:00+00:00", "failures": [1], "error": "a count that is a list"},
])
def test_a_back_off_edited_by_hand_is_read_or_left_not_a_failure(value):
    """A connection's back-off row as an operator may have edited it: a time without its offset is
    UTC (as the poller writes it), a count no number means no back-off; neither raises (a cycle, the
    connections' listing and /metrics read it)."""
    now = utcnow()
    backoff = poller.backoff_from(value, now)
    if value["failures"] == 2:
        assert backoff is not None and backoff.until.tzinfo is not None and backoff.failures == 2
    else:
        assert backoff is None
