"""What the core does with a plugin's bug in the writes and polls it makes: the log shows where
the bug is, and a comment the tracker posted is not posted again because the plugin answered
something other than the :class:`~aiimpl_core.types.Comment` it promised."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from aiimpl_core.services import outbox
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fakes import fail_with, queue_outbox_item

from .conftest import later, outbox_of


def _traceback_of(record: logging.LogRecord) -> str:
    """The traceback a log line carries (the secrets' mask formats it into ``exc_text``)."""
    text = record.exc_text or ""
    assert text.startswith("Traceback"), record.getMessage()
    return text.rstrip()


def test_a_comment_posted_without_a_comment_answered_is_posted_once(
    app, tracker, monkeypatch, caplog
) -> None:
    post = tracker.provider_class.post_comment

    def post_comment(self: Any, key: str, body: str) -> None:
        post(self, key, body)  # posted, and the answer forgotten

    monkeypatch.setattr(tracker.provider_class, "post_comment", post_comment)
    queue_outbox_item("ENG-1", body="🚀 Session started")
    start = later(seconds=0)
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        for n in range(3):
            outbox.deliver(issue_keys=["ENG-1"], now=start + timedelta(hours=n))

    assert tracker.comments["ENG-1"] == ["🚀 Session started"]
    [item] = outbox_of("ENG-1")
    assert (item.state, item.attempts, item.remote_id) == ("done", 0, None)
    [warned] = [r for r in caplog.records if "not a Comment" in r.getMessage()]
    assert "answered NoneType" in warned.getMessage() and "counted as posted" in warned.getMessage()


def test_a_tracker_writes_foreign_exception_is_logged_with_its_traceback(
    app, tracker, monkeypatch, caplog
) -> None:
    def post_comment(self: Any, key: str, body: str) -> None:
        raise KeyError("missing")

    monkeypatch.setattr(tracker.provider_class, "post_comment", post_comment)
    queue_outbox_item("ENG-1", body="a comment")
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        outbox.deliver(issue_keys=["ENG-1"], now=later(seconds=0))

    [item] = outbox_of("ENG-1")
    assert (item.state, item.last_error) == ("pending", "KeyError")  # the message only in the log
    [failed] = [r for r in caplog.records if "failed: KeyError" in r.getMessage()]
    assert _traceback_of(failed).endswith("KeyError: 'missing'")


def test_a_project_error_of_a_tracker_write_is_logged_without_a_traceback(
    app, tracker, monkeypatch, caplog
) -> None:
    def post_comment(self: Any, key: str, body: str) -> None:
        raise fail_with(503, "tracker unavailable")

    monkeypatch.setattr(tracker.provider_class, "post_comment", post_comment)
    queue_outbox_item("ENG-1", body="a comment")
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        outbox.deliver(issue_keys=["ENG-1"], now=later(seconds=0))
    [failed] = [r for r in caplog.records if "tracker unavailable" in r.getMessage()]
    assert failed.exc_info is None and not failed.exc_text


def test_a_poll_runs_bug_is_logged_with_its_traceback(app, tracker, runner, add_mapping, caplog) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    runner.poll_error = ZeroDivisionError("division by zero")
    with caplog.at_level(logging.WARNING):
        report = reconcile(now=later(seconds=60))
    assert report.skipped["github-actions"] == "poll failed: ZeroDivisionError"
    [logged] = [r for r in caplog.records if r.getMessage() == "polling the runs of github-actions failed"]
    assert _traceback_of(logged).endswith("ZeroDivisionError: division by zero")


def test_a_sweep_bug_is_logged_with_its_traceback(app, runner, caplog) -> None:
    runner.sweep_error = AttributeError("'NoneType' object has no attribute 'containers'")
    with caplog.at_level(logging.WARNING):
        reconcile(now=later(seconds=0))
    logged_as = "sweeping github-actions failed: AttributeError"
    [logged] = [r for r in caplog.records if r.getMessage() == logged_as]
    assert _traceback_of(logged).endswith(
        "AttributeError: 'NoneType' object has no attribute 'containers'"
    )
