"""A tracker write the tracker refuses for good (400, 404, 410, 422) is given up on after a few
attempts, so the issue's later comments go out; every other failure keeps being retried."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from aiimpl_core.errors import NotFound, ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import FakeTracker, fail_with

from .conftest import outbox_of

REFUSED = "first comment"
NEXT = "the pull request link"


def _queue(*bodies: str, issue_key: str = "ENG-1") -> None:
    now = utcnow()
    for n, body in enumerate(bodies):
        db.session.add(OutboxItem(dedupe_key=f"test:{issue_key}:{n}", op="comment", provider="fake-tracker",
                                  issue_key=issue_key, kind="outcome", body=body, state="pending", attempts=0,
                                  next_attempt_at=now, created_at=now))
    db.session.commit()


def _refuse(monkeypatch: pytest.MonkeyPatch, tracker: FakeTracker, error: Exception) -> None:
    """The tracker fails the comment ``REFUSED`` with ``error`` and takes every other one."""
    post = tracker.provider_class.post_comment

    def post_comment(self: Any, key: str, body: str) -> Any:
        if body == REFUSED:
            raise error
        return post(self, key, body)

    monkeypatch.setattr(tracker.provider_class, "post_comment", post_comment)


def _deliver_hourly(times: int) -> None:
    """``times`` deliveries an hour apart, each past the back-off of the one before."""
    start = utcnow()
    for n in range(1, times + 1):
        outbox.deliver(issue_keys=["ENG-1"], now=start + timedelta(hours=n))


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_a_comment_refused_for_good_is_given_up_and_the_next_one_goes_out(
    app, tracker, monkeypatch, caplog, status
):
    _refuse(monkeypatch, tracker, fail_with(status, f"HTTP {status}: comment rejected"))
    _queue(REFUSED, NEXT)
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        _deliver_hourly(outbox.MAX_ATTEMPTS_REFUSED)
    refused, _ = outbox_of("ENG-1")
    assert (refused.state, refused.attempts) == ("dead", outbox.MAX_ATTEMPTS_REFUSED)
    assert f"HTTP {status}: comment rejected" in refused.last_error
    [given_up] = [r for r in caplog.records if "given up" in r.getMessage()]
    assert f"outbox item {refused.id} (comment ENG-1)" in given_up.getMessage()
    assert f"HTTP {status}: comment rejected" in given_up.getMessage()

    outbox.deliver(issue_keys=["ENG-1"], now=utcnow() + timedelta(hours=10))
    assert tracker.comments["ENG-1"] == [NEXT]
    assert [i.state for i in outbox_of("ENG-1")] == ["dead", "done"]


@pytest.mark.parametrize(
    "error",
    [
        fail_with(503, "tracker unavailable"),
        fail_with(403, "credentials revoked"),  # credentials can be fixed
        fail_with(401, "not authenticated"),
        fail_with(400, "rate limited", retry_after=30),  # Linear's RATELIMITED may come as a 400
        ProviderError("tracker timed out"),  # no status: a timeout, a connection error
    ],
    ids=["503", "403", "401", "400-retry-after", "no-status"],
)
def test_any_other_failure_keeps_being_retried(app, tracker, monkeypatch, error):
    _refuse(monkeypatch, tracker, error)
    _queue(REFUSED, NEXT)
    _deliver_hourly(outbox.MAX_ATTEMPTS_REFUSED + 3)
    refused, waiting = outbox_of("ENG-1")
    assert (refused.state, refused.attempts) == ("pending", outbox.MAX_ATTEMPTS_REFUSED + 3)
    assert waiting.state == "pending" and tracker.comments["ENG-1"] == []  # still in order


def test_a_write_whose_issue_is_not_found_is_given_up_like_a_refused_one(app, tracker, monkeypatch, caplog):
    # Linear answers a deleted issue with HTTP 200 and "Entity not found": its plugin raises NotFound
    _refuse(monkeypatch, tracker, NotFound("Linear CreateComment: Entity not found: Issue"))
    _queue(REFUSED, NEXT)
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        _deliver_hourly(outbox.MAX_ATTEMPTS_REFUSED)
    refused, _ = outbox_of("ENG-1")
    assert (refused.state, refused.attempts) == ("dead", outbox.MAX_ATTEMPTS_REFUSED)
    [given_up] = [r for r in caplog.records if "given up" in r.getMessage()]
    assert "(refused: not found)" in given_up.getMessage()
    outbox.deliver(issue_keys=["ENG-1"], now=utcnow() + timedelta(hours=10))
    assert tracker.comments["ENG-1"] == [NEXT]
    assert [i.state for i in outbox_of("ENG-1")] == ["dead", "done"]


def test_a_failure_quoting_a_secret_is_stored_masked(app, tracker, monkeypatch):
    """A tracker (or a proxy) echoing the credential it was sent: the item's last error, and the
    connection's back-off, keep it masked in the database (and its backups), not only when shown."""
    from aiimpl_core import logs
    from aiimpl_core.orm import Setting
    from aiimpl_core.services import poller

    key = "tracker-token-6f1c0e9a7b"
    logs.mask(key)
    _refuse(monkeypatch, tracker, fail_with(503, f"HTTP 503: upstream refused token {key}"))
    _queue(REFUSED)
    _deliver_hourly(1)
    [item] = db.session.scalars(db.select(OutboxItem).where(OutboxItem.issue_key == "ENG-1")).all()
    assert key not in item.last_error and "[REDACTED]" in item.last_error
    poller.record_failure("ticketing", "fake-tracker", fail_with(503, f"down {key}"))
    stored = db.session.get(Setting, poller.backoff_key("ticketing", "fake-tracker"))
    assert key not in str(stored.value) and "[REDACTED]" in stored.value["error"]
