"""Text a tracker answers that the database cannot store as it is (a NUL, which PostgreSQL's text
refuses; a lone surrogate, which no encoding holds) is stored with those characters replaced, not
failed with the whole page it came on; a key longer than the database keeps is left out alone."""

from __future__ import annotations

from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.types import BlockingLink

from .conftest import jobs_of, tracked


def test_a_title_with_a_nul_or_a_lone_surrogate_is_stored_replaced(app, tracker, add_mapping) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1", title="Fix the\x00 parser", description="bad \ud800 byte")
    tracker.add("ENG-2", title="An ordinary issue")
    report = run_cycle()
    assert report.errors == []
    assert {d.issue_key for d in report.dispatched} == {"ENG-1", "ENG-2"}
    assert tracked("ENG-1").title == "Fix the\ufffd parser"
    assert len(jobs_of("ENG-1")) == 1


def test_one_blocked_issue_with_such_a_title_holds_no_other_blocker_back(app, tracker, add_mapping) -> None:
    add_mapping("ENG")
    tracker.add("ENG-100", title="The blocker", labels=set())
    for n in range(1, 6):
        tracker.add(f"ENG-{n}", title="bad\x00title" if n == 3 else f"Issue {n}",
                    blocked_by=[BlockingLink(key="ENG-100", title="The \x00blocker")])
    report = run_cycle()
    assert report.errors == []
    assert sorted(report.blocked) == [f"ENG-{n}" for n in range(1, 6)]


def test_a_key_longer_than_the_database_keeps_is_left_out_alone(app, tracker, add_mapping) -> None:
    add_mapping("ENG")
    long_key = "ENG-" + "1" * 80
    tracker.add(long_key, title="A key from a tracker that allows long ones")
    tracker.add("ENG-2", title="An ordinary issue")
    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == ["ENG-2"]
    assert report.errors == [f"{long_key[:64]}…: an issue key longer than 64 characters is not dispatched"]
