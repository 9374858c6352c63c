"""A configured tracker is read even when no mapping names it: on a fresh install, or once its last
mapping is deleted, its triggered issues are shown as ``no-mapping`` blockers, and the blockers
of a deleted mapping's team are checked again instead of keeping their old reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker, fail_with
from aiimpl_core.types import TriggeredPage

from .conftest import jobs_of, later

NO_MAPPING_OPS = "No mapping for team OPS. Add one in Projects."
NO_MAPPING_ENG = "No mapping for team ENG. Add one in Projects."


def blocker_rows() -> dict[str, tuple[str, str]]:
    db.session.expire_all()
    return {b.issue_key: (b.reason, b.message) for b in db.session.scalars(db.select(Blocker)).all()}


def listings(tracker: FakeTracker) -> list[tuple[str, ...]]:
    """The team lists the tracker's ``iter_triggered`` was called with, in order."""
    return [arg for op, arg in tracker.calls if op == "iter_triggered"]


def test_a_tracker_without_any_mapping_shows_its_triggered_issues_as_no_mapping(
    app, client, tracker, runner, add_mapping, admin_headers
):
    tracker.add("OPS-1", title="Rotate keys")
    report = run_cycle()
    assert listings(tracker) == [()]
    assert report.listed == {"fake-tracker": 1} and not report.providers_skipped
    assert report.blocked == {"OPS-1": {"reason": "no-mapping", "message": NO_MAPPING_OPS}}
    rows = client.get("/api/blockers", headers=admin_headers).get_json()
    assert [(b["issueKey"], b["teamKey"], b["reason"], b["message"]) for b in rows] == [
        ("OPS-1", "OPS", "no-mapping", NO_MAPPING_OPS)
    ]
    assert jobs_of("OPS-1") == []

    # the operator adds the mapping: the next cycle dispatches the issue and clears its blocker
    add_mapping("OPS")
    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == ["OPS-1"]
    assert blocker_rows() == {}


def test_deleting_the_last_mapping_turns_its_waiting_issues_into_no_mapping(
    app, client, tracker, runner, add_mapping, admin_headers
):
    add_mapping("ENG", max_in_progress=1)
    tracker.add("ENG-1")
    tracker.add("ENG-2")
    tracker.add("ENG-3")
    run_cycle()
    assert blocker_rows() == {
        "ENG-2": ("concurrency", "at concurrency cap (1/1). Waiting for a slot."),
        "ENG-3": ("concurrency", "at concurrency cap (1/1). Waiting for a slot."),
    }
    [before] = [b for b in client.get("/api/blockers", headers=admin_headers).get_json()
                if b["issueKey"] == "ENG-2"]

    assert client.delete("/api/mappings/ENG", headers=admin_headers).status_code == 200
    tracker.issues["ENG-3"].labels.clear()  # a person removed this one's trigger meanwhile
    report = run_cycle()
    assert listings(tracker)[-1] == ()
    # still triggered: the reason is the one that holds now; no longer triggered: pruned
    assert report.blocked == {"ENG-2": {"reason": "no-mapping", "message": NO_MAPPING_ENG}}
    assert blocker_rows() == {"ENG-2": ("no-mapping", NO_MAPPING_ENG)}
    [after] = client.get("/api/blockers", headers=admin_headers).get_json()
    assert after["since"] > before["since"]  # a new reason is a new wait
    assert len(jobs_of("ENG-2")) == 0

    tracker.issues["ENG-2"].labels.clear()
    run_cycle()
    assert blocker_rows() == {}


def test_a_tracker_listing_only_mapped_teams_drops_a_deleted_mapping_s_blockers(
    app, client, tracker, add_mapping, admin_headers, monkeypatch
):
    """Jira searches only mapped projects: with none left its listing is empty (and complete), so
    the deleted mapping's blockers are pruned rather than shown as ``no-mapping``."""
    listed_by_fake = tracker.provider_class.iter_triggered

    def only_mapped(self: Any, teams: Any) -> Iterator[TriggeredPage]:
        if not teams:
            yield TriggeredPage((), complete=True)
            return
        for page in listed_by_fake(self, teams):
            yield TriggeredPage(tuple(i for i in page.issues if i.team_key in teams), page.complete)

    monkeypatch.setattr(tracker.provider_class, "iter_triggered", only_mapped)
    add_mapping("ENG", paused=True)
    tracker.add("ENG-1")
    tracker.add("OPS-1")  # never listed: its project is not searched
    run_cycle()
    assert blocker_rows() == {"ENG-1": ("paused", "Project ENG is paused.")}

    assert client.delete("/api/mappings/ENG", headers=admin_headers).status_code == 200
    report = run_cycle()
    assert report.listed == {"fake-tracker": 0} and not report.providers_skipped
    assert blocker_rows() == {}


def test_a_tracker_without_mapping_is_read_once_per_cycle_and_respects_back_off(app, tracker):
    tracker.add("OPS-1")
    tracker.fail["iter_triggered"] = fail_with(503, "tracker unavailable")
    report = run_cycle()
    assert report.providers_skipped["fake-tracker"].startswith("listing failed")
    assert poller.backoff_of("ticketing", "fake-tracker") is not None
    assert blocker_rows() == {}

    # recovered, but the back-off holds until its time: not even asked
    del tracker.fail["iter_triggered"]
    report = run_cycle()
    assert len(listings(tracker)) == 1 and report.providers_skipped["fake-tracker"].startswith("backing off")

    report = run_cycle(now=later(seconds=40))
    assert len(listings(tracker)) == 2 and report.blocked["OPS-1"]["reason"] == "no-mapping"


def test_a_tracker_without_mapping_respects_the_listing_lease(app, tracker):
    tracker.add("OPS-1")
    first = run_cycle(lease_seconds=60, holder="poller-a")
    second = run_cycle(lease_seconds=60, holder="poller-b")
    assert first.blocked["OPS-1"]["reason"] == "no-mapping"
    assert second.providers_skipped["fake-tracker"] == "another poller read it this interval"
    assert len(listings(tracker)) == 1


def test_an_unconfigured_tracker_is_not_read_and_is_reported_only_when_mapped(
    app, tracker, add_mapping, monkeypatch
):
    monkeypatch.setattr(tracker.provider_class, "is_configured", lambda self: False)
    tracker.add("OPS-1")
    report = run_cycle()
    assert listings(tracker) == [] and report.providers_skipped == {} and report.listed == {}

    add_mapping("ENG")
    report = run_cycle()
    assert listings(tracker) == [] and report.providers_skipped == {"fake-tracker": "not configured"}


class TestTwoTrackers:
    @pytest.fixture
    def other(self) -> FakeTracker:
        return FakeTracker("fake-other")

    @pytest.fixture
    def aiimpl_plugins(self, tracker: FakeTracker, other: FakeTracker, runner: FakeRunner) -> list[object]:
        return [tracker.plugin, other.plugin, runner.plugin]

    def test_each_tracker_is_read_with_its_own_mapped_teams(self, app, tracker, other, add_mapping):
        add_mapping("ENG")
        tracker.add("ENG-1")
        other.add("OPS-1")
        report = run_cycle()
        assert listings(tracker) == [("ENG",)] and listings(other) == [()]
        assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
        assert report.blocked == {"OPS-1": {"reason": "no-mapping", "message": NO_MAPPING_OPS}}
        assert report.listed == {"fake-tracker": 1, "fake-other": 1}

    def test_a_tracker_plugin_failing_to_say_whether_it_is_configured_stops_only_itself(
        self, app, tracker, other, add_mapping, monkeypatch
    ):
        def broken(self: Any) -> bool:
            raise RuntimeError("the plugin crashed")

        monkeypatch.setattr(other.provider_class, "is_configured", broken)
        add_mapping("ENG")
        tracker.add("ENG-1")
        other.add("OPS-1")
        report = run_cycle()
        assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
        assert report.providers_skipped == {"fake-other": "RuntimeError"} and listings(other) == []


class TestManyUnmappedIssues:
    COUNT = 120

    @pytest.fixture
    def tracker(self) -> FakeTracker:
        tracker = FakeTracker(page_size=50)
        for n in range(1, self.COUNT + 1):
            tracker.add(f"OPS-{n}")
        return tracker

    def test_a_steady_cycle_costs_fewer_statements_than_issues(self, app: Any) -> None:
        """Issues of unmapped teams take the same batched path as other waiting issues: no query
        per issue, cycle after cycle."""
        first = run_cycle(reconcile=False)
        assert len(first.blocked) == self.COUNT
        db.session.remove()

        sent: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            sent.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            steady = run_cycle(reconcile=False, deliver=False)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(steady.blocked) == self.COUNT
        assert len(sent) < self.COUNT // 4, f"{len(sent)} statements for {self.COUNT} unmapped issues"
