"""A poll loop asked to stop ends its cycle after the step it is in (a tracker's listing, a
dispatch, a backend's reconcile, the outbox's delivery); the next cycle, of the poller that takes
over, does the rest, each step once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Lease, Setting
from aiimpl_core.services.poller import LAST_CYCLE_KEY, Poller
from aiimpl_core.services.scheduler import give_back_leases
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker, queue_outbox_item
from aiimpl_core.types import InFlightRun, RunState, TriggeredPage

from .conftest import jobs_of, outbox_of

#: the name in lease rows of the poller that takes over (another process)
NEXT = "next-host:1:1"


@pytest.fixture
def aiimpl_plugins(
    tracker: FakeTracker, jira: FakeTracker, runner: FakeRunner, fly: FakeRunner
) -> list[object]:
    return [tracker.plugin, jira.plugin, runner.plugin, fly.plugin]


def _stop_in(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, poller: Poller) -> None:
    """``poller`` asked to stop while ``cls.name`` runs (its first call; the call itself goes on)."""
    original = getattr(cls, name)

    def stopping(self: Any, *args: Any) -> Any:
        poller.stop()
        return original(self, *args)

    monkeypatch.setattr(cls, name, stopping)


def _next_cycle(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The report of the cycle the next poll loop (another holder) runs, the stop's patches undone."""
    monkeypatch.undo()
    following = Poller(interval=60)
    following.holder = NEXT
    return following.run_once()


def _loop_leases() -> set[str]:
    db.session.expire_all()
    names = db.session.scalars(db.select(Lease.name))
    return {name for name in names if name.startswith(("poll:", "reconcile:"))}


def _jobs_per_issue(*keys: str) -> Counter[str]:
    return Counter({key: len(jobs_of(key)) for key in keys})


def test_a_stop_during_a_dispatch_ends_the_cycle_after_it(app, tracker, runner, add_mapping, monkeypatch):
    add_mapping("ENG")
    keys = [f"ENG-{n}" for n in range(1, 7)]
    for key in keys:
        tracker.add(key)
    poller = Poller(interval=60)
    _stop_in(monkeypatch, runner.backend_class, "dispatch", poller)

    report = poller.run_once()
    assert report.stopped and "stopped before its end" in report.summary()
    assert report.as_dict()["stopped"] is True
    # the dispatch under way when the stop came was made and recorded; no other was started
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
    assert len(runner.runs) == 1
    [job] = jobs_of("ENG-1")
    assert (job.status, job.run_id) == ("dispatched", runner.runs[job.id].run_id)
    assert _jobs_per_issue(*keys) == Counter({"ENG-1": 1})
    # nor were the later steps: the reconcile and the outbox's delivery (its stage change waits)
    assert runner.poll_calls == [] and report.reconciled == {} and report.outbox == {}
    assert [item.state for item in outbox_of("ENG-1")] == ["pending"]
    assert [op for op, _ in tracker.calls if op == "set_stage"] == []
    # the cycle is recorded, and the loop gives back its listing lease as it ends
    last = db.session.get(Setting, LAST_CYCLE_KEY)
    assert last is not None and last.value["dispatched"] == 1
    assert _loop_leases() == {"poll:fake-jira", "poll:fake-tracker"}
    give_back_leases(poller.holder)
    assert _loop_leases() == set()

    report = _next_cycle(monkeypatch)
    assert not report.stopped and "stopped" not in report.summary()
    assert [d.issue_key for d in report.dispatched] == keys[1:]
    assert _jobs_per_issue(*keys) == Counter(dict.fromkeys(keys, 1))
    assert len(runner.runs) == len(keys)
    assert all(tracker.stage_labels(key) == {"AI-Working"} for key in keys)
    stage_changes = Counter(arg[0] for op, arg in tracker.calls if op == "set_stage")
    assert stage_changes == Counter(dict.fromkeys(keys, 1))


def test_a_stop_during_a_trackers_listing_ends_the_cycle_after_it(
    app, tracker, jira, runner, add_mapping, monkeypatch
):
    add_mapping("ENG")
    add_mapping("OPS", provider="fake-jira")
    jira.add("OPS-1")
    jira.add("OPS-2")
    tracker.add("ENG-1")
    poller = Poller(interval=60)
    original = jira.provider_class.iter_triggered

    def listing_while_stopped(self: Any, teams: Sequence[str]) -> Iterator[TriggeredPage]:
        poller.stop()
        yield from original(self, teams)

    monkeypatch.setattr(jira.provider_class, "iter_triggered", listing_while_stopped)

    report = poller.run_once()
    assert report.stopped
    # the listing under way (fake-jira's, the first) ended; its issues wait for the next cycle's
    # checks, and the other tracker was not read
    assert report.listed == {"fake-jira": 2} and report.dispatched == []
    assert [op for op, _ in tracker.calls] == []
    assert runner.runs == {}
    give_back_leases(poller.holder)

    report = _next_cycle(monkeypatch)
    assert not report.stopped
    assert report.listed == {"fake-jira": 2, "fake-tracker": 1}
    assert sorted(d.issue_key for d in report.dispatched) == ["ENG-1", "OPS-1", "OPS-2"]
    assert _jobs_per_issue("ENG-1", "OPS-1", "OPS-2") == Counter({"ENG-1": 1, "OPS-1": 1, "OPS-2": 1})


def test_a_stop_during_a_backends_reconcile_ends_the_cycle_after_it(
    app, tracker, jira, runner, fly, add_mapping, monkeypatch
):
    add_mapping("ENG")
    add_mapping("OPS", provider="fake-jira", execution_mode="fly-machines")
    tracker.add("ENG-1")
    jira.add("OPS-1")
    first = Poller(interval=60)
    first.run_once()
    give_back_leases(first.holder)
    assert len(fly.runs) == 1 and len(runner.runs) == 1
    fly.poll_calls.clear()
    runner.poll_calls.clear()
    # a tracker write queued meanwhile (a session's comment), due now
    queue_outbox_item("ENG-1")

    poller = Poller(interval=60)
    original = fly.backend_class.poll_runs

    def poll_while_stopped(self: Any, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        poller.stop()
        return original(self, runs)

    monkeypatch.setattr(fly.backend_class, "poll_runs", poll_while_stopped)
    report = poller.run_once()
    assert report.stopped
    # fly-machines (the first backend) was asked; github-actions was not, nor was the outbox sent
    assert len(fly.poll_calls) == 1 and runner.poll_calls == []
    assert report.reconciled["polled"] == {"fly-machines": 1}
    assert report.outbox == {} and tracker.comments["ENG-1"] == []
    assert _loop_leases() == {"poll:fake-jira", "poll:fake-tracker", "reconcile:fly-machines"}
    give_back_leases(poller.holder)

    report = _next_cycle(monkeypatch)
    assert not report.stopped
    assert len(fly.poll_calls) == 2 and len(runner.poll_calls) == 1
    assert report.outbox["sent"] == 1 and len(tracker.comments["ENG-1"]) == 1



def test_a_stop_during_the_outbox_delivery_ends_it_after_the_write_under_way(
    app, tracker, add_mapping, monkeypatch
):
    add_mapping("ENG")
    keys = [f"ENG-{n}" for n in range(1, 5)]
    for key in keys:
        tracker.add(key, labels=set())  # not triggered: only the outbox has work
        queue_outbox_item(key)  # comments of four issues, due now
    queue_outbox_item("ENG-1", op="stage", stage="implementing", body=None)  # taken at the start
    poller = Poller(interval=60)
    _stop_in(monkeypatch, tracker.provider_class, "post_comment", poller)

    report = poller.run_once()
    assert report.stopped
    # the comment under way when the stop came was posted and recorded; no other write was sent
    assert report.outbox["sent"] == 1 and report.outbox["left"] == 4
    assert [key for key in keys if tracker.comments[key]] == ["ENG-1"]
    assert [item.state for item in outbox_of("ENG-1")] == ["done", "pending"]  # the stage given back
    assert [outbox_of(key)[0].state for key in keys[1:]] == ["pending"] * 3

    report = _next_cycle(monkeypatch)
    assert not report.stopped and report.outbox["sent"] == 4
    assert {key: len(tracker.comments[key]) for key in keys} == dict.fromkeys(keys, 1)
    assert [item.state for item in outbox_of("ENG-1")] == ["done", "done"]


def test_a_stop_during_the_cycles_last_write_leaves_nothing_to_the_next(
    app, tracker, add_mapping, monkeypatch
):
    add_mapping("ENG")
    tracker.add("ENG-1", labels=set())
    queue_outbox_item("ENG-1")  # the one write of the cycle
    poller = Poller(interval=60)
    _stop_in(monkeypatch, tracker.provider_class, "post_comment", poller)

    report = poller.run_once()
    assert report.outbox == {"sent": 1, "failed": 0, "skipped": 0, "left": 0}
    assert not report.stopped and "stopped" not in report.summary()
