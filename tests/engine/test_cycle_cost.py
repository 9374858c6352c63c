"""What the poll-cycle benchmark found, kept as checks that count instead of timing:

- a reconcile pass over in-flight jobs whose runs did not change should cost the database a few
  queries, not several per job (with 500 in-flight jobs the reconciler made ~3,300 of the ~3,360
  queries of a steady-state cycle, and most of its CPU time);
- a cycle over issues that all stay blocked should not commit once per issue (each commit expires
  every row the session holds, which made the listing side cost ~0.4 ms of CPU per blocked issue).

See ``bench/README.md``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.sql import statements
from aiimpl_core.types import RunPhase

IN_FLIGHT = 40
BLOCKED = 120


@pytest.fixture
def tracker() -> FakeTracker:
    tracker = FakeTracker()
    for n in range(1, IN_FLIGHT + 1):
        tracker.add(f"ENG-{n}")
    return tracker


def test_reconcile_of_unchanged_runs_costs_fewer_queries_than_jobs(app: Any, runner: FakeRunner) -> None:
    db.session.add(Mapping(team_key="ENG", owner="acme", repo="eng", default_branch="main",
                           execution_mode="github-actions", ticketing={"provider": "fake-tracker"}))
    db.session.commit()
    assert len(run_cycle().dispatched) == IN_FLIGHT
    for job_id in list(runner.runs):
        runner.set_state(job_id, RunPhase.RUNNING)
    reconcile()  # links and moves every job to running once
    db.session.remove()

    with statements() as queries:
        report = reconcile()  # nothing changed since the last pass
    assert report.polled == {"github-actions": IN_FLIGHT}
    assert len(queries) < IN_FLIGHT, f"{len(queries)} queries for {IN_FLIGHT} unchanged in-flight jobs"


def test_linking_runs_costs_fewer_statements_than_jobs(app: Any, runner: FakeRunner) -> None:
    """Runs reported for the first time (a run id and URL to record, nothing else) are linked in
    one savepoint and one batched update, not a savepoint and an update per job."""
    runner.link_on_dispatch = False
    db.session.add(Mapping(team_key="ENG", owner="acme", repo="eng", default_branch="main",
                           execution_mode="github-actions", ticketing={"provider": "fake-tracker"}))
    db.session.commit()
    assert len(run_cycle(reconcile=False).dispatched) == IN_FLIGHT
    for job_id, run in list(runner.runs.items()):
        runner.set_state(job_id, RunPhase.PENDING, run_url=f"https://runs.test/{run.run_id}")
    db.session.remove()

    with statements() as queries:
        report = reconcile()
    assert report.linked == IN_FLIGHT
    assert len(queries) < IN_FLIGHT, f"{len(queries)} queries to link {IN_FLIGHT} runs"
    jobs = db.session.scalars(db.select(Job)).all()
    assert {(j.status, j.run_id, j.run_url) for j in jobs} == {
        ("dispatched", run.run_id, f"https://runs.test/{run.run_id}") for run in runner.runs.values()
    }


class TestBlockedIssues:
    @pytest.fixture
    def tracker(self) -> FakeTracker:
        tracker = FakeTracker(page_size=50)
        for n in range(1, BLOCKED + 2):
            tracker.add(f"OPS-{n}")
        return tracker

    def test_steady_cycle_over_blocked_issues_commits_fewer_times_than_issues(self, app: Any) -> None:
        db.session.add(Mapping(team_key="OPS", owner="acme", repo="ops", default_branch="main",
                               execution_mode="github-actions", max_in_progress=1,
                               ticketing={"provider": "fake-tracker"}))
        db.session.commit()
        first = run_cycle(reconcile=False)
        assert len(first.dispatched) == 1 and len(first.blocked) == BLOCKED
        db.session.remove()

        commits: list[object] = []

        def count(session: Any) -> None:
            commits.append(session)

        event.listen(Session, "after_commit", count)
        try:
            steady = run_cycle(reconcile=False, deliver=False)  # the same listing: all still blocked
        finally:
            event.remove(Session, "after_commit", count)
        assert not steady.dispatched and len(steady.blocked) == BLOCKED
        assert len(commits) < BLOCKED, f"{len(commits)} commits for {BLOCKED} issues that stayed blocked"

    def test_issues_that_stay_blocked_are_not_rewritten_every_cycle(self, app: Any) -> None:
        """Only a changed blocker is written at once; an unchanged one has its ``last_seen_at``
        moved at most once a minute (``SEEN_REFRESH``), in one statement for the page."""
        from datetime import timedelta

        from aiimpl_core.orm import Blocker, utcnow

        db.session.add(Mapping(team_key="OPS", owner="acme", repo="ops", default_branch="main",
                               execution_mode="github-actions", max_in_progress=1,
                               ticketing={"provider": "fake-tracker"}))
        db.session.commit()
        start = utcnow()
        run_cycle(now=start, reconcile=False)
        db.session.remove()

        def writes(now: Any) -> list[str]:
            with statements() as sent:
                report = run_cycle(now=now, reconcile=False, deliver=False)
            assert len(report.blocked) == BLOCKED
            db.session.remove()
            return [s for s in sent if s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]

        def last_seen() -> set[Any]:
            return set(db.session.scalars(db.select(Blocker.last_seen_at)).all())

        writes(start + timedelta(seconds=10))  # notes that the dispatched issue lost its trigger
        assert writes(start + timedelta(seconds=20)) == []
        assert last_seen() == {start}
        refreshed = writes(start + timedelta(seconds=61))
        page_updates = [w for w in refreshed if w.lstrip().upper().startswith("UPDATE BLOCKERS")]
        assert 1 <= len(page_updates) <= 3  # one per listing page, not one per issue
        assert last_seen() == {start + timedelta(seconds=61)}


PAGE = 4


class TestListingReads:
    """The first, lock-free check of a listing's pages reads the in-flight jobs, the mappings and
    the runner mode once per listing, not once per page (with 500 in-flight jobs and 40 pages a
    steady cycle read 20,000 job rows)."""

    @pytest.fixture
    def tracker(self) -> FakeTracker:
        tracker = FakeTracker(page_size=PAGE)
        for n in range(1, 41):
            tracker.add(f"{'OPS' if n % 2 else 'WEB'}-{n}")
        return tracker

    @pytest.fixture
    def mapped(self, app: Any) -> None:
        for team in ("OPS", "WEB"):
            db.session.add(Mapping(team_key=team, owner="acme", repo=team.lower(), default_branch="main",
                                   execution_mode="github-actions", max_in_progress=1,
                                   ticketing={"provider": "fake-tracker"}))
        db.session.commit()

    def test_jobs_and_settings_are_read_once_per_listing(self, app: Any, mapped: None) -> None:
        first = run_cycle(reconcile=False)
        assert len(first.dispatched) == 2 and len(first.blocked) == 38
        db.session.remove()
        with statements() as sent:
            steady = run_cycle(reconcile=False, deliver=False)  # ten pages, every issue blocked
        assert not steady.dispatched and len(steady.blocked) == 38

        def reads(table: str) -> int:
            selects = [s.upper() for s in sent if s.lstrip().upper().startswith("SELECT")]
            return sum(1 for s in selects if f"FROM {table}" in s)

        pages = 40 // PAGE
        # once for the listing, not once per page; and once a cycle, the rate-limited jobs due again
        assert reads("JOBS") == 2
        # the tracker's back-off, the runner mode and the tracker's success: none per page
        assert reads("SETTINGS") <= 3 < pages
        assert reads("MAPPINGS") <= 2 < pages  # the cycle's mappings by provider, the listing's views

    def test_each_team_s_backend_is_chosen_once_per_listing(
        self, app: Any, mapped: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first check of a listing's issues chooses each team's backend once (the mapping and
        the runner mode are the listing's), not once per issue."""
        from aiimpl_core.services import dispatch

        run_cycle(reconcile=False)
        db.session.remove()
        teams: list[str] = []
        original = dispatch.choose_backend

        def choose_backend(mapping: Any, *args: Any) -> Any:
            teams.append(mapping.team_key)
            return original(mapping, *args)

        monkeypatch.setattr(dispatch, "choose_backend", choose_backend)
        steady = run_cycle(reconcile=False, deliver=False)  # ten pages, every issue blocked
        assert not steady.dispatched and len(steady.blocked) == 38
        assert sorted(teams) == ["OPS", "WEB"]

    def test_the_cycle_holds_no_mapping_objects_across_its_commits(
        self, app: Any, mapped: None, add_mapping: Any
    ) -> None:
        """A cycle's many commits each expire every object its session holds: the listing works
        from the mappings' team keys and plain views, so idle mappings cost nothing per commit
        (100 mappings held through a 10,000-issue first cycle's 500 commits were 50,000
        expiries, a tenth of its CPU)."""
        for n in range(30):  # idle mappings beside the two busy teams
            add_mapping(f"IDLE{n}")
        db.session.remove()
        held: list[int] = []

        def count(session: Any) -> None:
            held.append(sum(1 for obj in session.identity_map.values() if isinstance(obj, Mapping)))

        event.listen(Session, "after_commit", count)
        try:
            first = run_cycle(reconcile=False, deliver=False)
        finally:
            event.remove(Session, "after_commit", count)
        assert len(first.dispatched) == 2 and len(first.blocked) == 38
        assert len(held) > 40 // PAGE
        # a claim loads its own mapping under the locks; nothing holds all of them
        assert max(held) <= 2, held

    def test_team_locks_of_a_page_are_one_statement(self, app: Any, mapped: None) -> None:
        """On PostgreSQL, recording a page's blockers takes its teams' locks in one statement (no
        locks on SQLite, where writers are serialized already)."""
        run_cycle(reconcile=False)
        db.session.remove()
        with statements() as sent:
            run_cycle(reconcile=False, deliver=False)
        locks = [s for s in sent if "pg_advisory_xact_lock" in s]
        pages = 40 // PAGE
        if db.engine.dialect.name == "postgresql":
            assert 1 <= len(locks) <= pages  # two teams on every page
        else:
            assert locks == []

    def test_a_job_whose_launch_failed_frees_its_slot_in_the_same_cycle(
        self, app: Any, mapped: None, runner: FakeRunner
    ) -> None:
        """The listing's counts forget a job its launch ended, as a fresh read would: the team's
        next issue is dispatched in the same cycle, not held by the listing's stale count."""
        from aiimpl_core.errors import ProviderError

        runner.next_dispatch_errors.append(
            ProviderError("workflow not found", provider="github-actions", status=404)
        )
        report = run_cycle(reconcile=False)
        assert not runner.next_dispatch_errors and len(report.errors) == 1
        dispatched = {d.issue_key: d.status for d in report.dispatched}
        ops = sorted((key for key in dispatched if key.startswith("OPS")), key=lambda k: int(k[4:]))
        # OPS-1 failed to launch; the team's next issue, OPS-3, takes the slot it left
        assert [dispatched[key] for key in ops] == ["failed", "dispatched"], dispatched
        assert ops == ["OPS-1", "OPS-3"]


class TestOneLaunch:
    @pytest.fixture
    def tracker(self) -> FakeTracker:
        tracker = FakeTracker()
        tracker.add("ENG-1")
        return tracker

    def test_claim_and_launch_write_each_row_once(self, app: Any, add_mapping: Any) -> None:
        """A dispatched issue's claim and launch (most of a first cycle's statements: about 28 per
        launch) update its tracked row once and its job's status once, read its mapping once, and
        never read the job they created."""
        add_mapping()
        db.session.remove()
        with statements() as sent:
            report = run_cycle(reconcile=False, deliver=False)
        assert [d.status for d in report.dispatched] == ["dispatched"]

        def starting(prefix: str) -> list[str]:
            return [s for s in sent if " ".join(s.split()).upper().startswith(prefix)]

        def containing(fragment: str) -> list[str]:
            return [s for s in sent if fragment in " ".join(s.split()).upper()]

        # a transition's guarded update is the only update of the status (the ORM sends it no more)
        assert len(containing("UPDATE JOBS SET STATUS")) == 1, containing("UPDATE JOBS")
        # an issue seen for the first time: the claim inserts its tracked row once, with the stage
        # and the consumed trigger, and updates it never; it had no blocker row, so deletes none
        [inserted] = starting("INSERT INTO TRACKED_ISSUES")
        assert "STAGE" in inserted.upper() and "TRIGGER_CONSUMED" in inserted.upper(), inserted
        assert starting("UPDATE TRACKED_ISSUES") == [] and starting("DELETE FROM BLOCKERS") == [], sent
        # the claim's row is handed to the stage change, not read again by key
        by_key = [q for q in containing("TRACKED_ISSUES.ISSUE_KEY = ") if "ANY" not in q.upper()]
        [claim_read] = by_key  # (the listing page's snapshot reads its keys at once)
        # with whether a blocker row exists and the team's mapping, the one read of it: the claim
        # builds the session's request with the mapping it checked, so the launch reads neither
        # the mapping nor the job before calling the backend. The claim's job stays loaded past
        # its commit, so recording the run (a compare-and-set) and the report's status read
        # nothing either
        assert "FROM BLOCKERS" in claim_read.upper() and "MAPPINGS.TEAM_KEY" in claim_read.upper(), claim_read
        mapping_reads = [s for s in containing("FROM MAPPINGS") if "WHERE" in s.upper()]
        assert mapping_reads == [], mapping_reads
        # (the listing's snapshot and the claim's checks read jobs by status, not this job; the
        # cycle's look for rate-limited jobs due again reads none of it either)
        job_reads = [s for s in starting("SELECT JOBS.")
                     if "JOBS.STATUS IN" not in s.upper() and "LAUNCH_AFTER <=" not in s.upper()]
        assert job_reads == [], job_reads
        # the new job is one INSERT, with its nonce's hash (its run name is derived): the status
        # change that records the run is the one update of it
        [created] = starting("INSERT INTO JOBS")
        assert "NONCE_HASH" in created.upper() and len(containing("UPDATE JOBS")) == 1, sent
        # each transition is recorded; on PostgreSQL the status change and its record are one
        # statement (the record inserted from what the update returns)
        records = containing("INSERT INTO JOB_TRANSITIONS")
        assert len(records) == 2, records
        if db.engine.dialect.name == "postgresql":
            assert "UPDATE JOBS SET STATUS" in " ".join(records[1].split()).upper(), records
        # the stage change of a job created in this claim is new: nothing looks for it first
        assert starting("SELECT OUTBOX") == [], starting("SELECT OUTBOX")

    def test_a_known_issue_with_a_blocker_row_is_updated_once_and_its_blocker_deleted(
        self, app: Any, add_mapping: Any
    ) -> None:
        """An issue the database knows (held in an earlier cycle): its claim updates its tracked row
        once, with the tracker's view, the stage and the consumed trigger, and deletes its
        blocker row."""
        from aiimpl_core.orm import Blocker, TrackedIssue, utcnow

        add_mapping()
        db.session.add(TrackedIssue(issue_key="ENG-1", team_key="ENG", provider="fake", title="old",
                                    triggered=True, last_seen_at=utcnow()))
        db.session.add(Blocker(issue_key="ENG-1", team_key="ENG", provider="fake", reason="paused",
                               message="Project is paused"))
        db.session.commit()
        db.session.remove()
        with statements() as sent:
            report = run_cycle(reconcile=False, deliver=False)
        assert [d.status for d in report.dispatched] == ["dispatched"]
        words = [" ".join(s.split()).upper() for s in sent]
        [updated] = [s for s in words if s.startswith("UPDATE TRACKED_ISSUES")]
        assert "STAGE=" in updated and "TRIGGER_CONSUMED=" in updated and "TITLE=" in updated, updated
        assert [s for s in words if s.startswith("INSERT INTO TRACKED_ISSUES")] == []
        assert len([s for s in words if s.startswith("DELETE FROM BLOCKERS")]) == 1
        db.session.remove()
        row = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == "ENG-1"))
        assert row.trigger_consumed and row.stage is not None and row.title != "old"
        assert db.session.scalar(select(Blocker).where(Blocker.issue_key == "ENG-1")) is None

    def test_the_check_under_the_locks_reads_with_the_claim_s_row(
        self, app: Any, add_mapping: Any, monkeypatch: Any
    ) -> None:
        """The claim's check of an issue of a team with a cap reads nothing of its own: the issue's
        row, its mapping with the runner mode and the back-off of the mapping's backend, and the
        team's count with the issue's recent job are one statement after the locks."""
        from aiimpl_core.services import dispatch

        add_mapping(max_in_progress=3)
        db.session.remove()
        verdict, read_for_claim = dispatch._verdict, dispatch._read_for_claim
        live: list[list[str]] = []
        claim_reads: list[list[str]] = []

        def recording(issue: Any, reads: Any, **kw: Any) -> Any:
            if type(reads) is not dispatch._Live:
                return verdict(issue, reads, **kw)
            with statements() as sent:
                answer = verdict(issue, reads, **kw)
            live.append([s for s in sent if s.lstrip().upper().startswith("SELECT")])
            return answer

        def reading(*args: Any) -> Any:
            with statements() as sent:
                answer = read_for_claim(*args)
            claim_reads.append([" ".join(s.split()).upper() for s in sent])
            return answer

        monkeypatch.setattr(dispatch, "_verdict", recording)
        monkeypatch.setattr(dispatch, "_read_for_claim", reading)
        report = run_cycle(reconcile=False, deliver=False)
        assert [d.status for d in report.dispatched] == ["dispatched"]
        assert live == [[]], live
        [[read]] = claim_reads
        assert "FROM BLOCKERS" in read and "MAPPINGS.TEAM_KEY" in read, read
        assert read.count("FROM SETTINGS") == 2 and "COUNT(DISTINCT" in read and "EXISTS" in read, read

    def test_the_claim_s_check_holds_an_issue_over_the_cap_and_with_a_recent_job(
        self, app: Any, add_mapping: Any
    ) -> None:
        """The counts read with the claim's row decide as a query of their own would: a team at its
        cap holds the issue; an issue with a job in flight is not counted against itself but
        held by the dedup rule."""
        from aiimpl_core.orm import utcnow
        from aiimpl_core.services import blockers, dispatch
        from aiimpl_core.services.launch import choose_backend, create_job
        from aiimpl_core.types import Phase, TrackerIssue

        mapping = add_mapping(max_in_progress=1)
        create_job(mapping, "ENG-1", phase=Phase.IMPLEMENTATION, provider="fake-tracker",
                   choice=choose_backend(mapping, "default"))
        db.session.commit()
        now = utcnow()

        def check(key: str) -> Any:
            issue = TrackerIssue(key=key, team_key="ENG", provider="fake-tracker", title="t", triggered=True)
            _, _, reads = dispatch._read_for_claim(issue, now)
            answer = dispatch._verdict(issue, reads, fetched_at=now, now=now, force=False)
            db.session.rollback()
            return answer

        held = check("ENG-2")
        assert isinstance(held, blockers.Blocked) and held.reason == blockers.CONCURRENCY, held
        assert held.message == "at concurrency cap (1/1). Waiting for a slot."
        again = check("ENG-1")
        assert isinstance(again, blockers.Blocked) and again.reason == blockers.DEDUP, again

    def test_a_delivery_takes_its_stage_changes_in_one_statement(
        self, app: Any, tracker: FakeTracker, add_mapping: Any
    ) -> None:
        """A first cycle queues a stage change per dispatched issue; the delivery takes them all
        for sending with one update (they are idempotent), then records each as it is sent, with
        the trigger the change cleared."""
        for n in (2, 3):
            tracker.add(f"ENG-{n}")
        add_mapping()
        db.session.remove()
        with statements() as sent:
            report = run_cycle(reconcile=False)
        assert len(report.dispatched) == 3 and report.outbox["sent"] == 3
        words = [" ".join(s.split()).upper() for s in sent]
        updates = [s for s in words if s.startswith("UPDATE OUTBOX")]
        taking = [u for u in updates if "SET STATE=" in u and "NEXT_ATTEMPT_AT" in u]
        assert len(taking) == 1 and (" IN " in taking[0] or "= ANY" in taking[0]), updates
        # each sent change is recorded with the trigger it cleared: on PostgreSQL in one statement
        records = [s for s in words if "UPDATE OUTBOX SET" in s and "DONE_AT" in s]
        assert len(records) == 3, words
        if db.engine.dialect.name == "postgresql":
            assert all("UPDATE TRACKED_ISSUES SET TRIGGER_CONSUMED" in r for r in records), records
            assert [s for s in words if s.startswith("UPDATE TRACKED_ISSUES")] == []

    def test_a_request_the_claim_could_not_build_is_built_by_the_launch(
        self, app: Any, add_mapping: Any, monkeypatch: Any
    ) -> None:
        """Building the session's request within the claim only spares statements: when it fails
        there, the claim still commits and the launch builds the request itself, as it did before."""
        from aiimpl_core.services import launch as launch_mod

        real = launch_mod.build_request
        calls: list[int] = []

        def fails_once(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("the claim could not build it")
            return real(*args, **kwargs)

        monkeypatch.setattr(launch_mod, "build_request", fails_once)
        add_mapping()
        report = run_cycle(reconcile=False, deliver=False)
        assert [d.status for d in report.dispatched] == ["dispatched"] and not report.errors
        assert len(calls) == 2
        assert db.session.scalar(db.select(Job.nonce_hash)) is not None
