"""Blockers: the product spec's order, the reference's messages, the Blockers view rows, the caps."""

from __future__ import annotations

from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.orchestrator import Worker, wait_until_blocked
from aiimpl_core.types import BlockingLink

from .conftest import jobs_of


def _cycle_and_its_statements() -> tuple[Any, list[str]]:
    """A poll cycle (no reconcile, no delivery), and the statements it sent, upper-cased on one line."""
    from sqlalchemy import event

    sent: list[str] = []

    def record(conn, cursor, statement, *args):  # noqa: ANN001, ANN002, ANN202
        sent.append(" ".join(statement.split()).upper())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        report = run_cycle(reconcile=False, deliver=False)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return report, sent


def blocker_rows() -> dict[str, tuple[str, str]]:
    db.session.expire_all()
    return {b.issue_key: (b.reason, b.message) for b in db.session.scalars(db.select(Blocker)).all()}


def test_no_mapping(app, tracker, add_mapping):
    add_mapping("ENG")
    tracker.add("OPS-3", title="Rotate keys")
    report = run_cycle()
    assert report.blocked["OPS-3"] == {
        "reason": "no-mapping",
        "message": "No mapping for team OPS. Add one in Projects.",
    }
    assert blocker_rows() == {"OPS-3": ("no-mapping", "No mapping for team OPS. Add one in Projects.")}
    assert jobs_of("OPS-3") == []


def test_paused(app, tracker, add_mapping):
    add_mapping("ENG", paused=True)
    tracker.add("ENG-1")
    run_cycle()
    assert blocker_rows() == {"ENG-1": ("paused", "Project ENG is paused.")}
    assert jobs_of("ENG-1") == []


def test_concurrency_cap_and_slot_freed(app, client, tracker, runner, add_mapping):
    add_mapping("ENG", max_in_progress=2)
    for n in (1, 2, 3):
        tracker.add(f"ENG-{n}")
    report = run_cycle()
    assert sorted(d.issue_key for d in report.dispatched) == ["ENG-1", "ENG-2"]
    assert blocker_rows() == {"ENG-3": ("concurrency", "at concurrency cap (2/2). Waiting for a slot.")}

    from .conftest import post_result

    [job] = jobs_of("ENG-1")
    post_result(client, runner, job.id, outcome="success", prUrl="https://github.com/acme/eng/pull/1")
    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == ["ENG-3"]
    assert blocker_rows() == {}


def test_dedup_when_the_trigger_is_applied_again_during_the_run(app, tracker, runner, add_mapping):
    add_mapping("ENG", max_in_progress=1)
    tracker.add("ENG-1")
    run_cycle()
    tracker.trigger("ENG-1")  # a person re-applies the trigger while the job runs
    report = run_cycle()
    # its own in-flight job takes no new slot, so this is dedup, not the concurrency cap
    assert report.blocked["ENG-1"] == {
        "reason": "dedup",
        "message": "Already dispatched recently. Waiting for the in-flight job.",
    }
    assert len(jobs_of("ENG-1")) == 1


@pytest.mark.parametrize("window", ["older", "none"])
def test_an_in_flight_job_older_than_the_dedup_window_still_holds_its_issue(
    app, tracker, runner, add_mapping, window
):
    """The checks count only jobs created inside the dedup window; an older job still in flight is
    caught by the unique index of active jobs: the whole claim is rolled back (no second job, no
    stage change queued for it) and the issue shows the dedup blocker. So is every job in flight
    with no window (``AIIMPL_DEDUP_WINDOW_SECONDS=0``, which was read as 24 hours)."""
    from datetime import timedelta

    from aiimpl_core.orm import Job, OutboxItem
    from aiimpl_core.services import blockers

    from .conftest import outbox_of

    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    [job] = jobs_of("ENG-1")
    if window == "older":
        db.session.execute(db.update(Job).values(created_at=job.created_at - timedelta(days=2)))
        db.session.commit()
    else:
        app.config["AIIMPL_DEDUP_WINDOW_SECONDS"] = 0
        assert blockers._dedup_window() == timedelta(0)
    queued = [(i.op, i.job_id) for i in outbox_of("ENG-1")]
    tracker.trigger("ENG-1")
    report = run_cycle()
    assert report.blocked["ENG-1"] == {
        "reason": "dedup",
        "message": "Already dispatched recently. Waiting for the in-flight job.",
    }
    assert [j.id for j in jobs_of("ENG-1")] == [job.id] and not report.errors
    assert [(i.op, i.job_id) for i in outbox_of("ENG-1")] == queued
    assert blocker_rows() == {
        "ENG-1": ("dedup", "Already dispatched recently. Waiting for the in-flight job.")
    }
    assert db.session.scalar(db.select(db.func.count(OutboxItem.id)).where(OutboxItem.job_id.is_(None))) == 0


def test_open_blocking_issues(app, tracker, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1", blocked_by=[BlockingLink("ENG-9", open=True), BlockingLink("ENG-8", open=False)])
    tracker.add("ENG-2", blocked_by=[BlockingLink("ENG-5"), BlockingLink("ENG-6")])
    run_cycle()
    assert blocker_rows() == {
        "ENG-1": ("blocked-by", "Blocked by open issue ENG-9. Waiting until done."),
        "ENG-2": ("blocked-by", "Blocked by open issues ENG-5, ENG-6. Waiting until done."),
    }
    tracker.issues["ENG-1"].blocked_by = [BlockingLink("ENG-9", open=False)]
    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
    assert set(blocker_rows()) == {"ENG-2"}


def test_order_no_mapping_paused_concurrency_dedup_blocked(app, tracker, add_mapping):
    # paused beats concurrency and blocking links
    add_mapping("ENG", paused=True, max_in_progress=1)
    tracker.add("ENG-1", blocked_by=[BlockingLink("ENG-2")])
    run_cycle()
    assert blocker_rows()["ENG-1"][0] == "paused"


def test_concurrency_before_blocking_links(app, tracker, add_mapping):
    add_mapping("ENG", max_in_progress=1)
    tracker.add("ENG-1")
    tracker.add("ENG-2", blocked_by=[BlockingLink("ENG-9")])
    run_cycle()
    assert blocker_rows()["ENG-2"] == ("concurrency", "at concurrency cap (1/1). Waiting for a slot.")


def test_blockers_not_seen_again_are_removed(app, tracker, add_mapping):
    add_mapping("ENG", paused=True)
    tracker.add("ENG-1")
    tracker.add("ENG-2")
    run_cycle()
    assert set(blocker_rows()) == {"ENG-1", "ENG-2"}
    tracker.issues["ENG-2"].labels.clear()  # the trigger was removed by a person
    run_cycle()
    assert set(blocker_rows()) == {"ENG-1"}


def test_an_incomplete_listing_removes_no_blocker(app, tracker, add_mapping):
    from aiimpl_core.testing.fakes import fail_with

    tracker.page_size = 1
    add_mapping("ENG", paused=True)
    tracker.add("ENG-1")
    tracker.add("ENG-2")
    run_cycle()
    tracker.issues["ENG-2"].labels.clear()
    tracker.issues["ENG-1"].labels.clear()
    tracker.add("ENG-3")
    tracker.add("ENG-4")
    tracker.fail["iter_triggered_page"] = fail_with(500)  # the second page fails
    run_cycle()
    assert set(blocker_rows()) == {"ENG-1", "ENG-2", "ENG-3"}


class TestCaps:
    @pytest.fixture
    def aiimpl_plugins(self, tracker: FakeTracker, runner: FakeRunner, fly: FakeRunner) -> list[object]:
        return [tracker.plugin, runner.plugin, fly.plugin]

    @pytest.fixture
    def aiimpl_config(self) -> dict[str, object]:
        return {"AIIMPL_GLOBAL_CAP": 3, "AIIMPL_BACKEND_CAPS": {"fly-machines": 1}}

    def test_global_cap(self, app, tracker, add_mapping):
        add_mapping("ENG", max_in_progress=5)
        add_mapping("WEB", max_in_progress=5)
        for key in ("ENG-1", "ENG-2", "WEB-1", "WEB-2"):
            tracker.add(key)
        report = run_cycle()
        assert len(report.dispatched) == 3
        [held] = [k for k in ("ENG-1", "ENG-2", "WEB-1", "WEB-2") if k in report.blocked]
        assert blocker_rows()[held] == ("global-cap", "at global concurrency cap (3/3). Waiting for a slot.")

    def test_backend_cap(self, app, tracker, fly, add_mapping):
        add_mapping("ENG", max_in_progress=5, execution_mode="fly-machines")
        add_mapping("WEB", max_in_progress=5)
        for key in ("ENG-1", "ENG-2", "WEB-1"):
            tracker.add(key)
        report = run_cycle()
        assert sorted(d.issue_key for d in report.dispatched) == ["ENG-1", "WEB-1"]
        assert blocker_rows()["ENG-2"] == (
            "backend-cap",
            "at runner backend cap for fly-machines (1/1). Waiting for a slot.",
        )
        assert len(fly.runs) == 1


def test_a_listing_read_before_our_own_stage_change_is_stale(app, client, tracker, runner, add_mapping):
    from datetime import timedelta

    from aiimpl_core.services.dispatch import CycleReport, consider

    from .conftest import post_result, tracked

    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    [job] = jobs_of("ENG-1")
    post_result(client, runner, job.id, outcome="failure", error="git clone failed (exit 128): x")
    cleared_at = tracked("ENG-1").trigger_cleared_at
    assert cleared_at is not None and not tracked("ENG-1").trigger_consumed
    # a listing that began before our stage change still shows the old trigger
    stale = tracker.provider_class(None).get_issue("ENG-1")  # type: ignore[arg-type]
    stale = type(stale)(**{**stale.__dict__, "triggered": True})
    report = CycleReport(started_at=cleared_at)
    assert consider(stale, fetched_at=cleared_at - timedelta(seconds=1), report=report) is None
    assert report.skipped == {"ENG-1": "listing older than our last stage change"}
    assert len(jobs_of("ENG-1")) == 1
    # a listing that began afterwards and shows the trigger is a new trigger
    assert consider(stale, fetched_at=cleared_at + timedelta(seconds=1), report=report) is not None
    assert len(jobs_of("ENG-1")) == 2


class TestRecordingAPageOfWaitingIssues:
    """The waiting issues of a page where some issue is dispatched are recorded after its claims,
    with the rows its snapshot read before them; under the locks only which triggers are consumed
    is read again."""

    @pytest.fixture
    def page(self, app, tracker, runner, add_mapping):
        add_mapping("ENG", max_in_progress=1)
        add_mapping("OPS")
        for n in (1, 2, 3):
            tracker.add(f"ENG-{n}")
        run_cycle()  # ENG-1 runs; ENG-2 and ENG-3 wait at the cap, rows and blockers exist now
        assert set(blocker_rows()) == {"ENG-2", "ENG-3"}
        tracker.add("OPS-1")  # dispatched in the next cycle's page, before its waiting issues are recorded
        return tracker

    def _between_snapshot_and_recording(self, monkeypatch, meanwhile):
        from aiimpl_core.services import dispatch

        original = dispatch.hold_all

        def hold_all(held, *args, **kw):
            meanwhile()  # another poller, after this page's snapshot
            return original(held, *args, **kw)

        monkeypatch.setattr(dispatch, "hold_all", hold_all)

    def test_an_issue_dispatched_meanwhile_is_not_recorded_as_waiting(self, page, monkeypatch):
        from aiimpl_core.orm import TrackedIssue

        def consume() -> None:
            db.session.execute(
                db.update(TrackedIssue).where(TrackedIssue.issue_key == "ENG-2").values(trigger_consumed=True)
            )
            db.session.execute(db.delete(Blocker).where(Blocker.issue_key == "ENG-2"))
            db.session.commit()

        self._between_snapshot_and_recording(monkeypatch, consume)
        report = run_cycle()
        assert [d.issue_key for d in report.dispatched] == ["OPS-1"]
        assert report.skipped["ENG-2"] == "trigger already dispatched" and "ENG-2" not in report.blocked
        assert set(blocker_rows()) == {"ENG-3"} and not report.errors

    def test_a_blocker_another_poller_wrote_meanwhile_is_read_again(self, page, monkeypatch):
        def rewrite() -> None:
            # another poller's view: ENG-3 waits for another reason (the blocker rows are read
            # under the locks, not taken from the snapshot)
            db.session.execute(db.delete(Blocker).where(Blocker.issue_key == "ENG-3"))
            db.session.add(Blocker(issue_key="ENG-3", team_key="ENG", reason="paused", message=PAUSED))
            db.session.commit()

        self._between_snapshot_and_recording(monkeypatch, rewrite)
        report = run_cycle()
        assert not report.errors and [d.issue_key for d in report.dispatched] == ["OPS-1"]
        assert blocker_rows()["ENG-3"] == ("concurrency", "at concurrency cap (1/1). Waiting for a slot.")

    def test_a_row_inserted_meanwhile_makes_the_recording_read_afresh(
        self, app, tracker, runner, add_mapping, monkeypatch
    ):
        from aiimpl_core.orm import TrackedIssue

        add_mapping("ENG", max_in_progress=1)
        for n in (1, 2):
            tracker.add(f"ENG-{n}", title=f"Issue {n}")

        def insert() -> None:
            # the snapshot saw no row for ENG-2; another poller inserts one before this one does
            row = TrackedIssue(issue_key="ENG-2", team_key="ENG", provider="fake-tracker", title="old")
            db.session.add(row)
            db.session.commit()

        self._between_snapshot_and_recording(monkeypatch, insert)
        report = run_cycle()
        assert not report.errors and [d.issue_key for d in report.dispatched] == ["ENG-1"]
        assert blocker_rows() == {"ENG-2": ("concurrency", "at concurrency cap (1/1). Waiting for a slot.")}
        title = db.session.scalar(db.select(TrackedIssue.title).where(TrackedIssue.issue_key == "ENG-2"))
        assert title == "Issue 2"


class TestAPageWithNothingToDispatch:
    """A page whose issues all wait (or were dispatched already) is read under its teams' locks and
    recorded in the same transaction: nothing is read twice, and another poller's dispatch that
    took the locks first is seen."""

    @pytest.fixture
    def page(self, app, tracker, runner, add_mapping):
        add_mapping("ENG", max_in_progress=1)
        for n in (1, 2, 3):
            tracker.add(f"ENG-{n}", title=f"Issue {n}")
        run_cycle()  # ENG-1 runs; ENG-2 and ENG-3 wait at the cap
        db.session.remove()
        return tracker

    def test_its_rows_are_read_once_and_recorded_in_the_same_transaction(self, page, monkeypatch):
        from aiimpl_core.orm import TrackedIssue
        from aiimpl_core.services import dispatch

        page.issues["ENG-3"].title = "Issue 3, renamed"  # a change to write, besides the waits
        monkeypatch.setattr(dispatch, "hold_all", lambda *a, **kw: pytest.fail("recorded after the checks"))
        report, sent = _cycle_and_its_statements()
        assert not report.dispatched and set(report.blocked) == {"ENG-2", "ENG-3"} and not report.errors
        by_keys = [s for s in sent if s.startswith("SELECT") and ("TRACKED_ISSUES.ISSUE_KEY IN" in s
                                                                   or "TRACKED_ISSUES.ISSUE_KEY = ANY" in s)]
        assert len(by_keys) == 1, by_keys  # the page's read, under the locks: not again to record it
        assert blocker_rows() == {
            "ENG-2": ("concurrency", "at concurrency cap (1/1). Waiting for a slot."),
            "ENG-3": ("concurrency", "at concurrency cap (1/1). Waiting for a slot."),
        }
        title = db.session.scalar(db.select(TrackedIssue.title).where(TrackedIssue.issue_key == "ENG-3"))
        assert title == "Issue 3, renamed"

    def test_its_blocker_rows_are_read_with_its_tracked_rows(self, page):
        """The page's blocker rows come with its tracked rows, in one statement under the locks,
        also one without a tracked row; a changed reason starts a new wait."""
        from datetime import timedelta

        from aiimpl_core.orm import TrackedIssue, utcnow

        earlier = utcnow() - timedelta(hours=1)
        db.session.execute(db.delete(TrackedIssue).where(TrackedIssue.issue_key == "ENG-3"))
        db.session.execute(
            db.update(Blocker).where(Blocker.issue_key == "ENG-2")
            .values(reason="paused", message=PAUSED, first_seen_at=earlier)
        )
        db.session.execute(
            db.update(Blocker).where(Blocker.issue_key == "ENG-3").values(first_seen_at=earlier)
        )
        db.session.commit()
        report, sent = _cycle_and_its_statements()
        assert not report.dispatched and set(report.blocked) == {"ENG-2", "ENG-3"} and not report.errors
        by_keys = [s for s in sent if "BLOCKERS.ISSUE_KEY IN" in s or "BLOCKERS.ISSUE_KEY = ANY" in s]
        assert len(by_keys) == 1 and "TRACKED_ISSUES" in by_keys[0], by_keys
        waiting = "at concurrency cap (1/1). Waiting for a slot."
        assert blocker_rows() == {"ENG-2": ("concurrency", waiting), "ENG-3": ("concurrency", waiting)}
        first_seen = dict(db.session.execute(db.select(Blocker.issue_key, Blocker.first_seen_at)).all())
        assert first_seen["ENG-3"] == earlier and first_seen["ENG-2"] > earlier
        title = db.session.scalar(db.select(TrackedIssue.title).where(TrackedIssue.issue_key == "ENG-3"))
        assert title == "Issue 3"

    def test_a_dispatch_that_held_the_team_s_lock_first_is_seen(self, app, page):
        """PostgreSQL: another poller claims ENG-2 under the team's lock while this cycle waits for
        it; the page is read after, so ENG-2 is not recorded as waiting."""
        from sqlalchemy.orm import Session

        from aiimpl_core.database import advisory_lock
        from aiimpl_core.orm import TrackedIssue

        if db.engine.dialect.name != "postgresql":
            pytest.skip("SQLite serializes writers: no other poller holds a lock meanwhile")
        other = Session(db.engine)
        advisory_lock("team:ENG", other)
        eng_2 = TrackedIssue.issue_key == "ENG-2"
        other.execute(db.update(TrackedIssue).where(eng_2).values(trigger_consumed=True))
        other.execute(db.delete(Blocker).where(Blocker.issue_key == "ENG-2"))
        cycle = Worker(app, "cycle", lambda: run_cycle(reconcile=False, deliver=False))
        try:
            wait_until_blocked(app, cycle)  # waiting for the team's lock
        finally:
            other.commit()  # (also when the check fails: the cycle and the teardown go on)
            other.close()
        report = cycle.join()
        assert report.skipped["ENG-2"] == "trigger already dispatched" and "ENG-2" not in report.blocked
        assert set(blocker_rows()) == {"ENG-3"} and not report.errors


PAUSED = "Project ENG is paused."


def test_a_blocker_refreshed_while_the_prune_waits_for_its_row_is_kept(app):
    """PostgreSQL: a webhook's check refreshes a blocker after the listing began and holds its row
    while the listing's prune, which read it as stale, comes to delete it: it is kept."""
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from aiimpl_core.orm import utcnow
    from aiimpl_core.services import blockers

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes writers: the prune never waits on a row")
    listed_since = utcnow()
    for key in ("ENG-8", "ENG-9"):
        db.session.add(Blocker(issue_key=key, team_key="ENG", provider="fake-tracker", reason="paused",
                               message=PAUSED, last_seen_at=listed_since - timedelta(minutes=5)))
    db.session.commit()
    other = Session(db.engine)
    other.execute(db.update(Blocker).where(Blocker.issue_key == "ENG-9")
                  .values(last_seen_at=listed_since + timedelta(seconds=1)))

    def prune() -> int:
        removed = blockers.prune("fake-tracker", set(), listed_since)
        db.session.commit()
        return removed

    pruning = Worker(app, "prune", prune)
    try:
        wait_until_blocked(app, pruning)  # waiting for ENG-9's row
    finally:
        other.commit()
        other.close()
    assert pruning.join() == 1 and set(blocker_rows()) == {"ENG-9"}


def test_an_issue_whose_mapping_is_deleted_as_it_is_claimed_is_not_said_dispatched(app, tracker, add_mapping):
    """The mapping is deleted while the claim is under way: on PostgreSQL the job's INSERT waits for
    the deletion's row lock and then breaks the foreign key, which was taken for the unique index
    of jobs in flight ("Already dispatched recently" for an issue without a job). It is the
    reference's no-mapping, as the next cycle says (on SQLite the claim waits for the deletion and
    then reads no mapping)."""
    from sqlalchemy.orm import Session

    from aiimpl_core.orm import Mapping

    add_mapping("ENG")
    tracker.add("ENG-1")
    other = Session(db.engine)
    other.execute(db.delete(Mapping).where(Mapping.team_key == "ENG"))
    cycle = Worker(app, "cycle", lambda: run_cycle(reconcile=False, deliver=False))
    try:
        wait_until_blocked(app, cycle)  # the claim's INSERT waits for the deleted row (SQLite: its lock)
    finally:
        other.commit()
        other.close()
    report = cycle.join()
    gone = {"reason": "no-mapping", "message": "No mapping for team ENG. Add one in Projects."}
    assert report.blocked["ENG-1"] == gone and not report.dispatched and not report.errors
    assert blocker_rows() == {"ENG-1": ("no-mapping", "No mapping for team ENG. Add one in Projects.")}
    assert jobs_of("ENG-1") == []
