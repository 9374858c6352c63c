"""A tracker webhook's dispatch check answers within ``AIIMPL_WEBHOOK_ANSWER_SECONDS``.

Linear counts a delivery not answered within 5 s as failed and sends it again later; a dispatch
can take longer (a Docker runner pulling its image, a slow
backend). :func:`aiimpl_core.webhooks.check_issues` runs the check in a thread of its own and,
when the answer is due, returns what it had done so far, marked ``running``; the check goes on to
its end: one job, launched once, its stage change sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiimpl_core.errors import AiimplError
from aiimpl_core.services import dispatch
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.orchestrator import answer_due_after, fresh, held
from aiimpl_core.types import Stage
from aiimpl_core.webhooks import check_issues, checks_running, wait_for_checks

from .conftest import jobs_of, outbox_of

KEY = "ENG-1"
ANSWER_SECONDS = 1


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_WEBHOOK_ANSWER_SECONDS": ANSWER_SECONDS}


@pytest.fixture(autouse=True)
def no_check_left() -> Iterator[None]:
    """Every check a test started has ended before its database is emptied."""
    yield
    assert wait_for_checks(30), "a webhook's check still running 30 s after its test"


@pytest.fixture
def triggered(tracker: FakeTracker, add_mapping: Callable[..., Any]) -> str:
    """Team ENG mapped, and its issue that a person just gave the trigger."""
    add_mapping("ENG")
    tracker.add(KEY, labels={"AI-Implement"})
    return KEY


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def test_a_check_that_ends_in_time_answers_what_it_did(app, runner: FakeRunner, triggered) -> None:
    app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"] = 60  # in time, however loaded the machine
    report = check_issues("fake-tracker", [KEY])
    assert not report.running
    [job] = jobs_of(KEY)
    assert report.dispatched_of(KEY).status == job.status == "dispatched"
    assert checks_running() == 0


def test_a_launch_that_outlasts_the_answer_goes_on_after_it(
    app, tracker: FakeTracker, runner: FakeRunner, triggered, monkeypatch
) -> None:
    called, release = held(monkeypatch, runner.backend_class, "dispatch")
    answer_due_after(monkeypatch, called)
    report, took = timed(lambda: check_issues("fake-tracker", [KEY]))
    try:
        # due the answer's time after the launch was reached (however long getting there took)
        since_reached = time.monotonic() - called.at
        assert ANSWER_SECONDS <= took and since_reached < ANSWER_SECONDS + 2, (took, since_reached)
        assert called.is_set() and report.running and report.as_dict()["running"] is True
        entry = report.dispatched_of(KEY)
        # the job is claimed, its launch not over: its status so far
        [job] = jobs_of(KEY)
        assert (entry.job_id, entry.status, job.status) == (job.id, "unknown", "unknown")
        assert runner.runs == {} and checks_running() == 1
    finally:
        release.set()
    assert wait_for_checks(30)
    fresh()
    [job] = jobs_of(KEY)
    assert job.status == "dispatched" and list(runner.runs) == [job.id]
    # the check went on to its end: the stage change sent, once
    assert [(i.op, i.stage, i.state) for i in outbox_of(KEY)] == [("stage", "implementing", "done")]
    assert [arg for op, arg in tracker.calls if op == "set_stage"] == [(KEY, Stage.IMPLEMENTING)]
    # what was answered is a copy: the check's later work did not change it
    assert report.dispatched_of(KEY).status == "unknown"


def test_a_tracker_read_that_outlasts_the_answer_answers_no_outcome_yet(
    app, tracker: FakeTracker, runner: FakeRunner, triggered, monkeypatch
) -> None:
    called, release = held(monkeypatch, tracker.provider_class, "get_issue")
    answer_due_after(monkeypatch, called)
    try:
        report, took = timed(lambda: check_issues("fake-tracker", [KEY]))
        since_reached = time.monotonic() - called.at
        assert ANSWER_SECONDS <= took and since_reached < ANSWER_SECONDS + 2, (took, since_reached)
        assert called.is_set() and report.running
        assert (report.dispatched, report.blocked, report.skipped, report.errors) == ([], {}, {}, [])
    finally:
        release.set()
    assert wait_for_checks(30)
    [job] = jobs_of(KEY)
    assert job.status == "dispatched" and list(runner.runs) == [job.id]


def test_a_check_that_fails_in_time_raises_and_one_that_fails_later_is_logged(
    app, tracker: FakeTracker, runner: FakeRunner, triggered, monkeypatch, caplog
) -> None:
    release = threading.Event()

    def failing(provider_id: str, keys: list[str], report: Any = None) -> Any:
        assert release.wait(30)
        raise AiimplError("database unavailable")

    monkeypatch.setattr(dispatch, "run_cycle_for_issues", failing)
    release.set()
    app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"] = 60  # in time, however loaded the machine
    with pytest.raises(AiimplError, match="database unavailable"):
        check_issues("fake-tracker", [KEY])

    release.clear()
    app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"] = ANSWER_SECONDS
    caplog.set_level(logging.INFO, logger="aiimpl_core.webhooks")
    report = check_issues("fake-tracker", [KEY])  # answered before the failure
    assert report.running
    release.set()
    assert wait_for_checks(30)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        f"dispatch check of {KEY}, still running when its webhook answered, failed"
    ]
    assert "AiimplError: database unavailable" in caplog.text  # with its traceback


def test_a_late_check_s_end_is_logged_with_what_it_did(
    app, tracker: FakeTracker, runner: FakeRunner, triggered, monkeypatch, caplog
) -> None:
    called, release = held(monkeypatch, runner.backend_class, "dispatch")
    answer_due_after(monkeypatch, called)
    caplog.set_level(logging.INFO, logger="aiimpl_core.webhooks")
    try:
        assert check_issues("fake-tracker", [KEY]).running
    finally:
        release.set()
    assert wait_for_checks(30)
    said = [r.getMessage() for r in caplog.records if r.name == "aiimpl_core.webhooks"]
    assert said == [
        f"dispatch check of {KEY} still running after {ANSWER_SECONDS} s: the webhook answers, the check"
        " goes on",
        f"dispatch check of {KEY} ended after its webhook answered: 1 triggered issue(s) read, 1 dispatched,"
        " 0 blocked, outbox 1 sent / 0 failed",
    ], said


def test_a_check_with_no_thread_to_be_had_runs_in_the_request(
    app, runner: FakeRunner, triggered, monkeypatch, caplog
) -> None:
    """A process at its thread limit cannot start the check's thread: the check runs in the
    request, as it did before it had a thread of its own, instead of failing the delivery."""
    from aiimpl_core import webhooks

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(webhooks.threading.Thread, "start", refused)
        report = check_issues("fake-tracker", [KEY])
    [job] = jobs_of(KEY)
    assert (report.running, report.dispatched_of(KEY).status) == (False, "dispatched")
    assert job.status == "dispatched"
    assert checks_running() == 0
    assert "no thread could be started" in caplog.text


@pytest.mark.parametrize("value", ["0", "61", "four"])
def test_the_answer_s_time_is_checked_at_start(value: str) -> None:
    from aiimpl_core import config
    from aiimpl_core.errors import ConfigError

    with pytest.raises(ConfigError, match="AIIMPL_WEBHOOK_ANSWER_SECONDS: must be"):
        config.load({"AIIMPL_WEBHOOK_ANSWER_SECONDS": value})
