"""A delivery takes its due stage changes all at once, at the start of its pass. Should the pass
outlast their lease (a slow tracker, a backlog after an outage), another sender may take one of them
again and send it, and a later stage change of the same issue after it. The first pass must not send
its copy then: the issue would move back to the earlier stage (a failed implementation shown as
still being worked on). A stage change whose lease ran out is taken again before it is sent, as a
comment is, and left alone once another sender has sent it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import FakeTracker, queue_outbox_item
from aiimpl_core.types import Stage

from .test_outbox_concurrent import Clock, Race, _counts, _items


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
    assert [i.state for i in _items("ENG-1")] == ["done"]
