"""Two deliveries at once (the poller's pass and a callback's ``deliver_quietly``), racing for real
in threads of their own: the fake tracker holds a sender inside its call until the test lets it
go, so each interleaving is the same on every run.

An issue's comments go out in the order they were queued, each once: an item another sender holds
(or that failed) holds back the issue's later items, and a lease counts from the claim, so a long
pass never hands out one that has run out already.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import FakeTracker, fail_with, queue_outbox_item
from aiimpl_core.testing.orchestrator import fresh
from aiimpl_core.types import Stage

from .conftest import outbox_of

TIMEOUT = 30  # seconds a sender or the test waits for the other side before the test fails


class Gate:
    """Holds a sender inside the tracker call until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.opened.wait(TIMEOUT), "the gate was never opened"

    def wait_entered(self) -> None:
        assert self.entered.wait(TIMEOUT), "the sender never reached the gate"

    def open(self) -> None:
        self.opened.set()


class Clock:
    """The outbox's clock, moved by the test (a pass that lasts minutes, in no time). It starts a
    minute ahead, so the items the test queues (at the real time) are due."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Race:
    """Senders, each a ``deliver`` in a thread of its own named after it (with its own app context
    and database session), and what the tracker does before posting a comment of a given sender."""

    def __init__(self, app: Any, tracker: FakeTracker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.app = app
        self.threads: dict[str, threading.Thread] = {}
        self.results: dict[str, dict[str, int]] = {}
        self.errors: dict[str, BaseException] = {}
        self.gates: list[Gate] = []
        #: (sender, comment body) -> what runs, in turn, before the tracker posts it
        self.before_post: dict[tuple[str, str], list[Callable[[], None]]] = defaultdict(list)
        #: sender -> what runs before it first takes items
        self.before_claim: dict[str, Callable[[], None]] = {}
        post, claim_many = tracker.provider_class.post_comment, outbox._claim_many

        def post_comment(provider: Any, key: str, body: str) -> Any:
            for action in self.before_post.pop((threading.current_thread().name, body), ()):
                action()
            return post(provider, key, body)

        monkeypatch.setattr(tracker.provider_class, "post_comment", post_comment)

        def _claim_many(item_ids: list[int], now: datetime, **kw: Any) -> Any:
            action = self.before_claim.pop(threading.current_thread().name, None)
            if action is not None:
                action()
            return claim_many(item_ids, now, **kw)

        monkeypatch.setattr(outbox, "_claim_many", _claim_many)

    def gate(self, sender: str, body: str) -> Gate:
        gate = Gate()
        self.gates.append(gate)
        self.before_post[(sender, body)].append(gate)
        return gate

    def fail(self, sender: str, body: str, error: Exception) -> None:
        def raise_it() -> None:
            raise error

        self.before_post[(sender, body)].append(raise_it)

    def on(self, sender: str, body: str, action: Callable[[], None]) -> None:
        self.before_post[(sender, body)].append(action)

    def pause_before_claiming(self, sender: str) -> Gate:
        """Hold the sender between reading its pass's items and taking the first of them."""
        gate = Gate()
        self.gates.append(gate)
        self.before_claim[sender] = gate
        return gate

    def pause_before_second_claim(self, sender: str) -> Gate:
        """Hold the sender between its pass's first claim (the items it takes together at its
        start) and the next (an item taken on its own, just before it is sent)."""
        gate = Gate()
        self.gates.append(gate)
        self.before_claim[sender] = lambda: self.before_claim.__setitem__(sender, gate)
        return gate

    def start(self, sender: str, **kw: Any) -> None:
        def run() -> None:
            try:
                with self.app.app_context():
                    try:
                        self.results[sender] = outbox.deliver(**kw)
                    finally:
                        db.session.remove()
            except BaseException as exc:  # noqa: BLE001 - re-raised by join
                self.errors[sender] = exc

        thread = threading.Thread(target=run, name=sender, daemon=True)
        self.threads[sender] = thread
        thread.start()

    def join(self, sender: str) -> dict[str, int]:
        thread = self.threads[sender]
        thread.join(TIMEOUT)
        assert not thread.is_alive(), f"{sender} is stuck"
        if sender in self.errors:
            raise self.errors[sender]
        return self.results[sender]

    def end(self) -> None:
        """Let every sender go (a test that failed half-way) and wait for them."""
        for gate in self.gates:
            gate.open()
        for thread in self.threads.values():
            thread.join(TIMEOUT)


@pytest.fixture
def race(app: Any, tracker: FakeTracker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Race]:
    race = Race(app, tracker, monkeypatch)
    try:
        yield race
    finally:
        race.end()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(outbox, "utcnow", clock)
    return clock


def _items(issue_key: str) -> list[OutboxItem]:
    """The issue's items as the senders committed them."""
    fresh()
    items = outbox_of(issue_key)
    fresh()  # (no snapshot kept open while the senders write)
    return items


def _counts(sent: int = 0, failed: int = 0, skipped: int = 0) -> dict[str, int]:
    return {"sent": sent, "failed": failed, "skipped": skipped, "left": 0}


# -- order: an item another sender holds, or that failed, holds back the issue's later ones ------


def test_a_comment_another_sender_is_posting_holds_back_the_issues_later_comments(app, tracker, race):
    queue_outbox_item("ENG-2", body="X")
    for body in ("C1", "C2", "C3"):
        queue_outbox_item("ENG-1", body=body)
    in_x, in_c1 = race.gate("poller", "X"), race.gate("callback", "C1")

    race.start("poller")  # reads X and C1-C3, then posts X
    in_x.wait_entered()
    race.start("callback", issue_keys=["ENG-1"])  # deliver_quietly: takes C1, its tracker is slow
    in_c1.wait_entered()
    in_x.open()
    poller = race.join("poller")  # finds C1 taken: C2 and C3 wait for it
    assert tracker.comments["ENG-1"] == []
    assert poller == _counts(sent=1, skipped=3)

    in_c1.open()
    assert race.join("callback") == _counts(sent=3)
    assert tracker.comments["ENG-1"] == ["C1", "C2", "C3"]
    assert [i.state for i in _items("ENG-1")] == ["done"] * 3


def test_a_comment_that_failed_in_another_pass_holds_back_the_issues_later_comments(app, tracker, race):
    queue_outbox_item("ENG-2", body="X")
    for body in ("C1", "C2", "C3"):
        queue_outbox_item("ENG-1", body=body)
    in_x = race.gate("poller", "X")
    race.fail("callback", "C1", fail_with(503, "tracker unavailable"))

    race.start("poller")  # reads X and C1-C3, then posts X
    in_x.wait_entered()
    race.start("callback", issue_keys=["ENG-1"])  # C1 fails: due again after its back-off
    assert race.join("callback") == _counts(failed=1, skipped=2)
    in_x.open()
    poller = race.join("poller")  # finds C1 waiting: C2 and C3 wait for it
    assert tracker.comments["ENG-1"] == []
    assert poller == _counts(sent=1, skipped=3)
    assert [(i.body, i.state, i.attempts) for i in _items("ENG-1")] == [
        ("C1", "pending", 1), ("C2", "pending", 0), ("C3", "pending", 0)
    ]

    outbox.deliver(now=utcnow() + timedelta(hours=1))
    assert tracker.comments["ENG-1"] == ["C1", "C2", "C3"]


def test_a_stage_write_waits_for_a_comment_another_sender_is_posting(app, tracker, race):
    """A "done" queued after a comment another sender is posting is not sent before that comment;
    queued after that sender read the issue, it is left to the next pass."""
    tracker.add("ENG-1")
    queue_outbox_item("ENG-2", body="X")
    queue_outbox_item("ENG-1", body="C1")
    read = race.pause_before_claiming("callback")
    in_c1, in_x = race.gate("callback", "C1"), race.gate("poller", "X")

    race.start("callback", issue_keys=["ENG-1"])  # reads C1 (only)
    read.wait_entered()
    queue_outbox_item("ENG-1", op="done")
    race.start("poller")  # reads X, C1 and the "done" (to be taken after C1), then posts X
    in_x.wait_entered()
    read.open()  # the callback takes C1, its tracker is slow
    in_c1.wait_entered()
    in_x.open()
    poller = race.join("poller")  # finds C1 taken: the "done" waits for it
    assert not tracker.issues["ENG-1"].done
    assert poller == _counts(sent=1, skipped=2)

    in_c1.open()
    assert race.join("callback") == _counts(sent=1)
    assert outbox.deliver() == _counts(sent=1)
    assert [op for op, arg in tracker.calls if arg == "ENG-1"] == ["post_comment", "mark_done"]
    assert [i.state for i in _items("ENG-1")] == ["done", "done"]


def test_a_done_after_a_comment_goes_out_with_it_when_two_senders_read_them_at_once(app, tracker, race):
    """A merged PR's comment and "done", queued together and read by two senders at once (the
    merge's deliveries on two workers): the one that posts the comment marks the issue done after
    it. Taken at the start of a pass, the "done" could be held by the other sender, which finds the
    comment taken and gives it back once the first has passed it by: left for the next poll cycle."""
    tracker.add("ENG-1")
    queue_outbox_item("ENG-1", body="C1")
    queue_outbox_item("ENG-1", op="done")
    first_read = race.pause_before_claiming("first")
    second_between = race.pause_before_second_claim("second")
    in_c1 = race.gate("first", "C1")

    race.start("first", issue_keys=["ENG-1"])  # reads C1 and the "done"
    first_read.wait_entered()
    race.start("second", issue_keys=["ENG-1"])  # reads them too, before either is taken
    second_between.wait_entered()
    first_read.open()  # takes C1, its tracker is slow
    in_c1.wait_entered()
    second_between.open()  # finds C1 taken: the issue's later items wait for it
    assert race.join("second") == _counts(skipped=2)
    in_c1.open()
    assert race.join("first") == _counts(sent=2)
    assert [op for op, arg in tracker.calls if arg == "ENG-1"] == ["post_comment", "mark_done"]
    assert [i.state for i in _items("ENG-1")] == ["done", "done"]


# -- leases: from the claim; a sender records its failure only while it holds the item ----------


def test_a_lease_counts_from_the_claim_not_from_the_start_of_a_long_pass(app, tracker, race, clock):
    queue_outbox_item("ENG-2", body="X")
    queue_outbox_item("ENG-1", body="C1")
    race.on("poller", "X", lambda: clock.advance(minutes=3))  # a tracker that answers in 3 minutes
    in_c1 = race.gate("poller", "C1")

    race.start("poller")
    in_c1.wait_entered()  # C1 taken 3 minutes into the pass
    [held] = [(i.state, i.next_attempt_at) for i in _items("ENG-1")]
    race.start("callback", issue_keys=["ENG-1"])
    callback = race.join("callback")
    in_c1.open()
    poller = race.join("poller")
    assert tracker.comments["ENG-1"] == ["C1"]  # posted once
    assert callback == _counts()  # C1 was the poller's, not due
    assert poller == _counts(sent=2)
    assert held == ("sending", clock.now + outbox.LEASE)  # (the clock stood still since)


def test_a_failure_after_the_lease_ran_out_leaves_what_the_next_sender_recorded(
    app, tracker, race, clock, caplog
):
    queue_outbox_item("ENG-1", body="C1")
    in_c1 = race.gate("poller", "C1")
    race.fail("poller", "C1", fail_with(503, "tracker unavailable"))  # once the gate opens

    race.start("poller")
    in_c1.wait_entered()
    clock.advance(minutes=3)  # the poller's tracker call outlasts its lease
    race.start("callback", issue_keys=["ENG-1"])  # takes C1 again and posts it
    assert race.join("callback") == _counts(sent=1)
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        in_c1.open()
        assert race.join("poller") == _counts(failed=1)
    [c1] = _items("ENG-1")
    # not set back to pending; why it was taken again is kept, and the poller's try, which ran out
    # of its lease, counted as an attempt when the callback took C1 again
    assert (c1.state, c1.attempts, c1.last_error) == ("done", 1, outbox.LEASE_RAN_OUT)
    assert any(f"outbox item {c1.id} (comment ENG-1) failed after its lease ran out, not recorded"
               in r.getMessage() for r in caplog.records)

    outbox.deliver(now=clock.now + timedelta(hours=1))
    assert tracker.comments["ENG-1"] == ["C1"]  # posted once


def test_a_post_after_the_lease_ran_out_is_recorded_though_the_next_sender_failed(app, tracker, race, clock):
    """A post is recorded whoever holds the item now: left pending, it would be posted again."""
    queue_outbox_item("ENG-1", body="C1")
    in_c1 = race.gate("poller", "C1")
    race.fail("callback", "C1", fail_with(503, "tracker unavailable"))

    race.start("poller")
    in_c1.wait_entered()
    clock.advance(minutes=3)
    race.start("callback", issue_keys=["ENG-1"])  # takes C1 again, fails: pending, backing off
    assert race.join("callback") == _counts(failed=1)
    in_c1.open()
    assert race.join("poller") == _counts(sent=1)
    [c1] = _items("ENG-1")
    # the poller's try whose lease ran out, and the callback's that failed
    assert (c1.state, c1.attempts) == ("done", 2)

    outbox.deliver(now=clock.now + timedelta(hours=1))
    assert tracker.comments["ENG-1"] == ["C1"]


# -- a stage change whose lease ran out during a long pass ----------------------------------------
# A delivery takes its due stage changes all at once, at the start of its pass. Should the pass
# outlast their lease (a slow tracker, a backlog after an outage), another sender may take one of them
# again and send it, and a later stage change of the same issue after it. The first pass must not send
# its copy then: the issue would move back to the earlier stage (a failed implementation shown as
# still being worked on). A stage change whose lease ran out is taken again before it is sent, as a
# comment is, and left alone once another sender has sent it.


def _stages(tracker: FakeTracker, key: str) -> list[Stage]:
    return [stage for op, arg in tracker.calls if op == "set_stage" and arg[0] == key for stage in arg[1:]]


def test_a_stage_change_another_sender_sent_after_the_lease_ran_out_is_not_sent_again(
    app, tracker: FakeTracker, race: Race, clock: Clock
):
    tracker.add("ENG-1")
    queue_outbox_item("ENG-2", body="X")
    queue_outbox_item("ENG-1", op="stage", stage=Stage.IMPLEMENTING.value, body=None)
    in_x = race.gate("poller", "X")

    race.start("poller")  # takes the stage change with its pass's items, then posts X, slowly
    in_x.wait_entered()
    clock.advance(minutes=3)  # the stage change's lease ran out meanwhile
    # the job ended: its issue's next stage change, which a callback delivers at once, with the
    # earlier one it finds waiting
    queue_outbox_item("ENG-1", op="stage", stage=Stage.IMPLEMENTATION_FAILED.value, body=None)
    race.start("callback", issue_keys=["ENG-1"])
    assert race.join("callback") == _counts(sent=2)
    assert _stages(tracker, "ENG-1") == [Stage.IMPLEMENTING, Stage.IMPLEMENTATION_FAILED]

    in_x.open()
    assert race.join("poller") == _counts(sent=1, skipped=1)
    assert _stages(tracker, "ENG-1") == [Stage.IMPLEMENTING, Stage.IMPLEMENTATION_FAILED]
    assert tracker.stage_labels("ENG-1") == set()  # a failed stage takes the AI labels off
    assert [i.state for i in _items("ENG-1")] == ["done", "done"]


def test_a_stage_change_whose_lease_ran_out_unnoticed_is_taken_again_and_sent(
    app, tracker: FakeTracker, race: Race, clock: Clock
):
    tracker.add("ENG-1")
    queue_outbox_item("ENG-2", body="X")
    queue_outbox_item("ENG-1", op="stage", stage=Stage.IMPLEMENTING.value, body=None)
    in_x = race.gate("poller", "X")

    race.start("poller")
    in_x.wait_entered()
    clock.advance(minutes=3)  # nobody else took it
    in_x.open()
    assert race.join("poller") == _counts(sent=2)
    assert _stages(tracker, "ENG-1") == [Stage.IMPLEMENTING]
    # taken again by the pass that held it, not tried in between: no attempt counted, no error
    assert [(i.state, i.attempts, i.last_error) for i in _items("ENG-1")] == [("done", 0, None)]
