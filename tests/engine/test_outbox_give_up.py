"""When the outbox gives a tracker write up (``dead``): after its attempts, and no sooner than the
time they take at the back-off, however quickly its tracker asks to be retried; and an item whose
sender stops every time it is sent (killed, or past its lease) counts those tries and is given up
rather than taken forever, holding its issue's later writes back (and not the other issues' ones,
which go before it); an operator's retry gives a write a full series again."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from aiimpl_core.api import admin_outbox
from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import FakeTracker, fail_with, queue_outbox_item

STUCK = "the comment that cannot go out"
NEXT = "the pull request link"


class SenderKilled(BaseException):
    """The sender's process ends mid-send (killed, out of memory): nothing is recorded."""


def _fail(monkeypatch: pytest.MonkeyPatch, tracker: FakeTracker, error: BaseException,
          times: int | None = None) -> list[str]:
    """The tracker fails the comment ``STUCK`` with ``error`` (its first ``times`` tries, or every
    one) and takes every other one; the bodies it was asked to post, in turn."""
    post, asked = tracker.provider_class.post_comment, []

    def post_comment(self: Any, key: str, body: str) -> Any:
        asked.append(body)
        if body == STUCK and (times is None or asked.count(STUCK) <= times):
            raise error
        return post(self, key, body)

    monkeypatch.setattr(tracker.provider_class, "post_comment", post_comment)
    return asked


def _item(item_id: int) -> OutboxItem:
    db.session.expire_all()
    item = db.session.get(OutboxItem, item_id)
    assert item is not None
    return item


def _given_up(caplog: pytest.LogCaptureFixture, item_id: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(f"outbox item {item_id} (comment ENG-1) given up")]


def test_the_full_series_lasts_about_16_hours():
    # what the guides promise for 25 attempts
    assert outbox.MAX_ATTEMPTS == 25
    assert timedelta(hours=16) <= outbox.FULL_SERIES <= timedelta(hours=17)


# -- a rate limit does not use the attempts up sooner than an outage would ------------------------


def test_a_rate_limited_write_is_not_given_up_before_the_full_series_is_over(
    app, tracker, monkeypatch, caplog
):
    _fail(monkeypatch, tracker, fail_with(429, "fake-tracker: rate limited", retry_after=30))
    stuck = queue_outbox_item("ENG-1", body=STUCK)
    queue_outbox_item("ENG-1", body=NEXT)
    created = _item(stuck).created_at

    # retried each time the tracker asked to be, 30 s: the attempts are used up in minutes
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        for _ in range(outbox.MAX_ATTEMPTS + 5):
            outbox.deliver(issue_keys=["ENG-1"], now=max(utcnow(), _item(stuck).next_attempt_at))
        item = _item(stuck)
        assert item.next_attempt_at - created < timedelta(hours=1)
        assert (item.state, item.attempts) == ("pending", outbox.MAX_ATTEMPTS + 5)
        assert tracker.comments["ENG-1"] == []  # the issue's next comment waits, in order
        assert _given_up(caplog, stuck) == []

        # the time a series of back-offs takes is over: the next failure gives it up
        outbox.deliver(issue_keys=["ENG-1"], now=created + outbox.FULL_SERIES)
    item = _item(stuck)
    assert (item.state, item.attempts) == ("dead", outbox.MAX_ATTEMPTS + 6)
    assert "rate limited" in item.last_error
    [logged] = _given_up(caplog, stuck)
    assert f"after {outbox.MAX_ATTEMPTS + 6} attempts" in logged

    outbox.deliver(issue_keys=["ENG-1"], now=created + outbox.FULL_SERIES + timedelta(seconds=1))
    assert tracker.comments["ENG-1"] == [NEXT]


def test_an_outage_is_given_up_after_its_attempts_at_the_end_of_the_series(app, tracker, monkeypatch):
    _fail(monkeypatch, tracker, fail_with(503, "fake-tracker: unavailable"))
    stuck = queue_outbox_item("ENG-1", body=STUCK)
    created = _item(stuck).created_at
    for _ in range(outbox.MAX_ATTEMPTS - 1):
        outbox.deliver(issue_keys=["ENG-1"], now=_item(stuck).next_attempt_at)
    item = _item(stuck)
    assert (item.state, item.attempts) == ("pending", outbox.MAX_ATTEMPTS - 1)
    assert item.next_attempt_at - created >= outbox.FULL_SERIES  # (the series' back-offs add up)

    outbox.deliver(issue_keys=["ENG-1"], now=item.next_attempt_at)
    assert (_item(stuck).state, _item(stuck).attempts) == ("dead", outbox.MAX_ATTEMPTS)


def test_a_refused_write_that_was_rate_limited_before_is_still_given_up_after_a_few_attempts(
    app, tracker, monkeypatch
):
    _fail(monkeypatch, tracker, fail_with(422, "fake-tracker: comment rejected"))
    stuck = queue_outbox_item("ENG-1", body=STUCK, attempts=outbox.MAX_ATTEMPTS + 3)
    outbox.deliver(issue_keys=["ENG-1"])
    assert _item(stuck).state == "dead"  # (refused: no wait for the series)


# -- a sender that stops mid-send ---------------------------------------------------------------


def _kill_each_time(stuck: int, times: int) -> datetime:
    """``times`` deliveries, each a lease after the one before; each one's sender is killed
    sending the item ``stuck``. The time of the last one."""
    now = utcnow()
    for _ in range(times):
        with pytest.raises(SenderKilled):
            outbox.deliver(now=now)
        db.session.rollback()
        item = _item(stuck)
        assert item.state == "sending"
        # past its lease, which runs from the claim: on a busy machine, a while after ``now``
        now = max(now + outbox.LEASE, item.next_attempt_at) + timedelta(seconds=1)
    return now


def test_a_write_that_kills_its_sender_every_time_is_given_up_after_its_attempts(
    app, tracker, monkeypatch, caplog
):
    asked = _fail(monkeypatch, tracker, SenderKilled())
    stuck = queue_outbox_item("ENG-1", body=STUCK)
    queue_outbox_item("ENG-1", body=NEXT)

    now = _kill_each_time(stuck, outbox.MAX_ATTEMPTS)
    item = _item(stuck)
    # each try taken again counted as an attempt, the last one not yet
    assert (item.attempts, item.last_error) == (outbox.MAX_ATTEMPTS - 1, outbox.LEASE_RAN_OUT)

    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        counts = outbox.deliver(issue_keys=["ENG-1"], now=now)
    # given up rather than sent again; the issue's next comment goes out
    assert asked.count(STUCK) == outbox.MAX_ATTEMPTS
    assert counts == {"sent": 1, "failed": 0, "skipped": 1, "left": 0}
    assert tracker.comments["ENG-1"] == [NEXT]
    item = _item(stuck)
    assert (item.state, item.attempts, item.last_error) == (
        "dead", outbox.MAX_ATTEMPTS, outbox.LEASE_RAN_OUT_DEAD
    )
    [logged] = _given_up(caplog, stuck)
    assert f"after {outbox.MAX_ATTEMPTS} attempts" in logged and outbox.LEASE_RAN_OUT_DEAD in logged


def test_a_stage_change_that_kills_its_sender_every_time_is_given_up_and_not_those_taken_with_it(
    app, tracker, monkeypatch
):
    """Stage changes and "done" are taken together, in one statement, at the start of a pass: those
    still waiting their turn when the sender stopped were not tried, and count no attempt. The
    first stop of the one that was being sent is not told apart from theirs: counted from its
    second on, as it is taken on its own from then on."""
    for key in ("ENG-1", "ENG-2"):
        tracker.add(key)
    monkeypatch.setitem(tracker.fail, "set_stage", SenderKilled())
    stuck = queue_outbox_item("ENG-1", op="stage", stage="implementing", body=None)
    later = queue_outbox_item("ENG-1", op="done")
    other = queue_outbox_item("ENG-2", op="done")

    now = _kill_each_time(stuck, outbox.MAX_ATTEMPTS + 1)
    # the other issue's "done", left taken by the first pass, went out before the stage change once
    # that one had stopped its sender twice (see the test below); the issue's own one waits
    calls = [op for op, _ in tracker.calls]
    assert calls.count("set_stage") == outbox.MAX_ATTEMPTS + 1
    assert [arg for op, arg in tracker.calls if op == "mark_done"] == ["ENG-2"]
    assert outbox.deliver(now=now)["sent"] == 1
    assert tracker.issues["ENG-1"].done and tracker.issues["ENG-2"].done
    assert (_item(stuck).state, _item(stuck).attempts, _item(stuck).last_error) == (
        "dead", outbox.MAX_ATTEMPTS, outbox.LEASE_RAN_OUT_DEAD
    )
    assert [(_item(i).state, _item(i).attempts) for i in (later, other)] == [("done", 0), ("done", 0)]


def test_a_rate_limited_write_past_its_attempts_is_not_given_up_for_one_stop_of_its_sender(
    app, tracker, monkeypatch
):
    """Its sender restarted once while it was being sent (a deploy): the series' time is not over,
    and it did not bring its sender down twice in a row."""
    _fail(monkeypatch, tracker, SenderKilled(), times=1)
    stuck = queue_outbox_item("ENG-1", body=STUCK, attempts=outbox.MAX_ATTEMPTS + 3,
                              last_error="fake-tracker: rate limited")
    now = _kill_each_time(stuck, 1)
    assert outbox.deliver(issue_keys=["ENG-1"], now=now)["sent"] == 1
    assert tracker.comments["ENG-1"] == [STUCK]
    assert (_item(stuck).state, _item(stuck).attempts) == ("done", outbox.MAX_ATTEMPTS + 4)


def test_a_write_whose_series_is_over_is_given_up_when_its_sender_stopped(app, tracker, monkeypatch):
    """A stop counts as a failure would: once the attempts and the series' time are used up."""
    asked = _fail(monkeypatch, tracker, SenderKilled(), times=1)
    long_ago = utcnow() - outbox.FULL_SERIES - timedelta(hours=1)
    stuck = queue_outbox_item("ENG-1", body=STUCK, attempts=outbox.MAX_ATTEMPTS - 1,
                              last_error="fake-tracker: unavailable", created_at=long_ago)
    now = _kill_each_time(stuck, 1)
    assert outbox.deliver(issue_keys=["ENG-1"], now=now)["sent"] == 0
    assert asked == [STUCK]
    assert (_item(stuck).state, _item(stuck).attempts) == ("dead", outbox.MAX_ATTEMPTS)


def test_a_write_that_kills_its_sender_goes_after_the_other_issues_writes(app, tracker, monkeypatch):
    """Once it stopped its sender, a pass takes it (and its issue's later writes, which wait for it)
    after the other issues' writes: should it stop this sender too, those went out first rather than
    waiting the passes until it is given up on."""
    asked = _fail(monkeypatch, tracker, SenderKilled())
    stuck = queue_outbox_item("ENG-1", body=STUCK)
    queue_outbox_item("ENG-1", body=NEXT)
    now = _kill_each_time(stuck, 1)  # (its first stop: nothing told it apart from the others yet)

    for n in range(3):  # stopped once, then twice and more in a row
        queue_outbox_item("ENG-2", body=f"other {n}")  # (queued after it)
        with pytest.raises(SenderKilled):
            outbox.deliver(now=now)
        db.session.rollback()
        assert tracker.comments["ENG-2"] == [f"other {i}" for i in range(n + 1)]
        assert tracker.comments["ENG-1"] == []  # in order: its issue's next one waits for it
        assert _item(stuck).state == "sending"
        now += outbox.LEASE + timedelta(seconds=1)
    assert asked.count(STUCK) == 4
    assert _item(stuck).attempts == 3  # (each take after a stop counted, as before)


# -- an operator's retry ---------------------------------------------------------------------------


def _queued_long_ago_and_retried() -> tuple[int, datetime, datetime]:
    """A comment first queued a day more than a series ago, given up on, and re-queued by an
    operator now (``POST /api/outbox/<id>/retry``); its id, when it was first queued, and when
    it was re-queued."""
    long_ago = utcnow() - outbox.FULL_SERIES - timedelta(days=1)
    stuck = queue_outbox_item("ENG-1", body=STUCK, state="dead", attempts=outbox.MAX_ATTEMPTS + 40,
                              last_error="fake-tracker: rate limited", created_at=long_ago,
                              next_attempt_at=long_ago)
    queued, retried = _item(stuck).created_at, utcnow()
    assert admin_outbox._requeue(stuck, retried)
    return stuck, queued, retried


def test_a_write_retried_past_its_series_gets_a_full_series_again(app, tracker, monkeypatch, caplog):
    """Its tracker still rate-limits it: its new attempts are not used up in minutes, as its first
    ones would have been had the series' time counted from when it was first queued."""
    _fail(monkeypatch, tracker, fail_with(429, "fake-tracker: rate limited", retry_after=30))
    stuck, queued, retried = _queued_long_ago_and_retried()

    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        for _ in range(outbox.MAX_ATTEMPTS + 5):
            outbox.deliver(issue_keys=["ENG-1"], now=max(utcnow(), _item(stuck).next_attempt_at))
        item = _item(stuck)
        assert item.next_attempt_at - retried < timedelta(hours=1)
        assert (item.state, item.attempts) == ("pending", outbox.MAX_ATTEMPTS + 5)
        assert (item.created_at, item.requeued_at) == (queued, retried)  # (shown as first queued)
        assert _given_up(caplog, stuck) == []

        # the series' time is over, counted from the retry: the next failure gives it up
        outbox.deliver(issue_keys=["ENG-1"], now=retried + outbox.FULL_SERIES)
    assert (_item(stuck).state, _item(stuck).attempts) == ("dead", outbox.MAX_ATTEMPTS + 6)
    assert len(_given_up(caplog, stuck)) == 1


def test_a_write_retried_past_its_series_is_not_given_up_for_one_stop_of_its_sender(
    app, tracker, monkeypatch
):
    """As a new write rate-limited past its attempts: a stop counts as a failure would, from the
    retry's series."""
    asked = _fail(monkeypatch, tracker, SenderKilled(), times=1)
    stuck, *_ = _queued_long_ago_and_retried()
    # rate-limited since the retry, to its last attempt
    db.session.execute(update(OutboxItem).where(OutboxItem.id == stuck).values(
        attempts=outbox.MAX_ATTEMPTS - 1, last_error="fake-tracker: rate limited"))
    db.session.commit()
    now = _kill_each_time(stuck, 1)
    assert outbox.deliver(issue_keys=["ENG-1"], now=now)["sent"] == 1
    assert asked == [STUCK, STUCK]
    assert (_item(stuck).state, _item(stuck).attempts) == ("done", outbox.MAX_ATTEMPTS)
