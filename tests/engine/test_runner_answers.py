"""What the core does with a runner backend's answers that it cannot take: a ``DispatchResult`` or a
``RunState`` whose run id or URL a job cannot keep, states for jobs the backend was not asked
about, and two states for one job. Each is refused as the backend's broken contract, with a message
that names the backend and what was wrong, before anything is written: such an answer once failed
the database write (after the session had started, or on every cycle) and left the job waiting."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from aiimpl_core.errors import DispatchError
from aiimpl_core.orm import Job
from aiimpl_core.services import poller
from aiimpl_core.services import reconcile as reconcile_mod
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.launch import launch
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.types import RunPhase, RunState

from .conftest import claim_without_launch, jobs_of, later

LONGEST = Job.__table__.c.run_id.type.length
BACKEND = "Fake github-actions"


def _answering(runner: FakeRunner, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    """The backend starts its run as usual and answers ``fields`` in its ``DispatchResult``."""
    dispatch = runner.backend_class.dispatch

    def answering(self: Any, request: Any) -> Any:
        return replace(dispatch(self, request), **fields)

    monkeypatch.setattr(runner.backend_class, "dispatch", answering)


def _started(runner: FakeRunner, tracker: FakeTracker, add_mapping: Any) -> Job:
    """One job, dispatched and linked to its run."""
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-1")
    assert job.status == "dispatched" and job.run_id
    return job


def _polling(runner: FakeRunner, monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    monkeypatch.setattr(runner.backend_class, "poll_runs", lambda self, runs: answer(list(runs)))


# -- DispatchResult ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        (dict(run_url={"href": "https://runs.test/1"}),
         "the backend answered a run_url that is a dict, not a string"),
        (dict(run_id=["run-1"]), "the backend answered a run_id that is a list, not a string"),
        (dict(run_id="r" * (LONGEST + 45)),
         f"the backend answered a run_id that is {LONGEST + 45} characters long, more than the "
         f"{LONGEST} a job keeps"),
        (dict(run_id="run\x00-1"), "the backend answered a run_id that holds a NUL character"),
    ],
    ids=["url-dict", "id-list", "id-too-long", "id-nul"],
)
def test_a_dispatch_result_a_job_cannot_keep_fails_the_job_and_cancels_the_run(
    app, tracker, runner, add_mapping, monkeypatch, caplog, fields, said
) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")
    _answering(runner, monkeypatch, **fields)
    with caplog.at_level(logging.INFO):
        report = run_cycle(reconcile=False)

    message = f"dispatch to {BACKEND} failed: {said}"
    assert report.errors == [f"ENG-1: {said}"]
    [job] = jobs_of("ENG-1")
    assert (job.status, job.error, job.run_id, job.run_url) == ("failed", message, None, None)
    # the run it started is stopped (its session would otherwise run out its lifetime for nothing):
    # with the id it answered when that is a string, else found as a run not linked yet
    [run] = runner.runs.values()
    answered = fields.get("run_id", run.run_id)
    assert runner.destroyed == [answered if isinstance(answered, str) else str(job.id)]
    # the backend is left alone for a while, as for any other wrong answer
    assert poller.backoff_of("runner", "github-actions", later(seconds=1)) is not None


def test_a_dispatch_answering_no_dispatch_result_cancels_the_run_it_may_have_started(
    app, tracker, runner, add_mapping, monkeypatch
) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")
    dispatch = runner.backend_class.dispatch

    def answering(self: Any, request: Any) -> Any:
        result = dispatch(self, request)
        return {"run_id": result.run_id}

    monkeypatch.setattr(runner.backend_class, "dispatch", answering)
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-1")
    assert (job.status, job.error) == (
        "failed", f"dispatch to {BACKEND} failed: the backend answered dict, not a DispatchResult"
    )
    assert runner.destroyed == [str(job.id)]  # no run id to give: found by its name, as one not linked


def test_a_cancel_that_fails_after_a_refused_answer_is_logged(
    app, tracker, runner, add_mapping, monkeypatch, caplog
) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")
    _answering(runner, monkeypatch, run_url=42)

    def cancel(self: Any, run: Any) -> None:
        raise RuntimeError("no such run")

    monkeypatch.setattr(runner.backend_class, "cancel", cancel)
    with caplog.at_level(logging.WARNING):
        report = run_cycle(reconcile=False)
    assert report.errors == ["ENG-1: the backend answered a run_url that is a int, not a string"]
    [job] = jobs_of("ENG-1")
    assert job.status == "failed"
    [logged] = [r for r in caplog.records if "cancelling the run" in r.getMessage()]
    assert logged.getMessage() == (
        f"cancelling the run of job {job.id}, whose dispatch answer was refused, failed"
    )


def test_a_numeric_run_id_is_kept_as_its_digits(app, tracker, runner, add_mapping, monkeypatch) -> None:
    """As ``poll_runs``'s: GitHub's run ids are numbers."""
    add_mapping("ENG")
    tracker.add("ENG-1")
    _answering(runner, monkeypatch, run_id=123456789012)
    report = run_cycle(reconcile=False)
    assert report.errors == []
    [job] = jobs_of("ENG-1")
    assert (job.status, job.run_id) == ("dispatched", "123456789012")


def test_a_run_id_of_the_longest_length_a_job_keeps_is_taken(
    app, tracker, runner, add_mapping, monkeypatch
) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")
    _answering(runner, monkeypatch, run_id="r" * LONGEST)
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-1")
    assert (job.status, job.run_id) == ("dispatched", "r" * LONGEST)
    assert runner.destroyed == []


def test_a_gap_fill_dispatch_result_a_job_cannot_keep_fails_the_same_way(
    app, tracker, runner, add_mapping, monkeypatch
) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")
    job = claim_without_launch(tracker, "ENG-1")
    _answering(runner, monkeypatch, run_id="r" * (LONGEST + 1))
    with pytest.raises(DispatchError, match="a run_id that is 256 characters long"):
        launch(job, gap_fill=True)
    [job] = jobs_of("ENG-1")
    assert job.status == "failed" and job.run_id is None
    assert runner.destroyed == ["r" * (LONGEST + 1)]


# -- poll_runs ------------------------------------------------------------------------------------


def test_a_polled_run_id_longer_than_a_job_keeps_refuses_the_poll(
    app, tracker, runner, add_mapping, monkeypatch, caplog
) -> None:
    job = _started(runner, tracker, add_mapping)
    job_id, run_id = job.id, job.run_id
    long_id = "r" * (LONGEST + 45)
    _polling(runner, monkeypatch,
             lambda runs: [RunState(r.job_id, RunPhase.RUNNING, run_id=long_id) for r in runs])
    with caplog.at_level(logging.WARNING):
        report = reconcile(now=later(seconds=60))
    assert report.skipped["github-actions"] == (
        f"poll failed: poll_runs of 'github-actions' answered a run_id for job {job_id} that is "
        f"{LONGEST + 45} characters long, more than the {LONGEST} a job keeps"
    )
    [job] = jobs_of("ENG-1")
    assert (job.status, job.run_id) == ("dispatched", run_id)
    assert not [r for r in caplog.records if "reconciling job" in r.getMessage()]
    assert poller.backoff_of("runner", "github-actions", later(seconds=61)) is not None


@pytest.mark.parametrize("field", ["run_id", "run_url"])
def test_a_polled_run_id_or_url_with_a_nul_character_refuses_the_poll(
    app, tracker, runner, add_mapping, monkeypatch, field
) -> None:
    _started(runner, tracker, add_mapping)
    _polling(runner, monkeypatch,
             lambda runs: [RunState(r.job_id, RunPhase.RUNNING, **{field: "run\x00-1"}) for r in runs])
    report = reconcile(now=later(seconds=60))
    assert report.skipped["github-actions"] == (
        f"poll failed: poll_runs of 'github-actions' answered the {field} 'run\\x00-1', "
        "not a string without a NUL character"
    )
    assert jobs_of("ENG-1")[0].status == "dispatched"


@pytest.mark.parametrize(
    ("job_id", "shown"), [(lambda i: str(i), "'{id}' (str)"), (lambda i: True, "True (bool)")],
    ids=["str", "bool"],
)
def test_a_job_id_that_is_no_int_refuses_the_poll(
    app, tracker, runner, add_mapping, monkeypatch, job_id, shown
) -> None:
    """``"7"`` for ``7`` was never matched to its job, which stayed ``dispatched`` until its overrun
    without a word; ``True`` would have been taken for job 1."""
    job = _started(runner, tracker, add_mapping)
    _polling(runner, monkeypatch, lambda runs: [RunState(job_id(r.job_id), RunPhase.FAILED) for r in runs])
    report = reconcile(now=later(seconds=60))
    assert report.skipped["github-actions"] == (
        "poll failed: poll_runs of 'github-actions' answered the job_id "
        f"{shown.format(id=job.id)}, not an int (the InFlightRun's job_id)"
    )
    assert jobs_of("ENG-1")[0].status == "dispatched"


def test_states_for_jobs_not_asked_about_are_warned_about_once_in_a_while(
    app, tracker, runner, add_mapping, monkeypatch, caplog
) -> None:
    job = _started(runner, tracker, add_mapping)
    stranger = job.id + 1000
    _polling(runner, monkeypatch, lambda runs: [
        *(RunState(r.job_id, RunPhase.RUNNING) for r in runs),
        RunState(stranger, RunPhase.FAILED),
        RunState(stranger + 1, RunPhase.RUNNING),
    ])

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == reconcile_mod.__name__ and "not asked about" in r.getMessage()]

    start = later(seconds=60)
    with caplog.at_level(logging.WARNING):
        first = reconcile(now=start)
        again = reconcile(now=start + reconcile_mod.IGNORED_WARN_EVERY / 2)
        assert warnings() == [
            f"poll_runs of 'github-actions' answered states for jobs it was not asked about: {stranger}, "
            f"{stranger + 1} (a RunState's job_id is its InFlightRun's); they are ignored"
        ]
        reconcile(now=start + reconcile_mod.IGNORED_WARN_EVERY)
        assert len(warnings()) == 2
    # the job asked about is reconciled all the same; each report says what was ignored
    assert jobs_of("ENG-1")[0].status == "running"
    assert first.ignored == again.ignored == {"github-actions": [stranger, stranger + 1]}
    assert first.as_dict()["ignored"] == {"github-actions": [stranger, stranger + 1]}


def test_two_different_states_for_one_job_refuse_the_poll(
    app, tracker, runner, add_mapping, monkeypatch
) -> None:
    """Running then failed once ended the job failed (the last won): which one is true cannot be told."""
    job = _started(runner, tracker, add_mapping)
    _polling(runner, monkeypatch, lambda runs: [
        RunState(r.job_id, phase) for r in runs for phase in (RunPhase.RUNNING, RunPhase.FAILED)
    ])
    report = reconcile(now=later(seconds=60))
    assert report.skipped["github-actions"] == (
        f"poll failed: poll_runs of 'github-actions' answered 2 different states for job {job.id} "
        "(running, failed): answer one per run"
    )
    assert jobs_of("ENG-1")[0].status == "dispatched"


def test_the_same_state_twice_for_one_job_is_taken_once(
    app, tracker, runner, add_mapping, monkeypatch
) -> None:
    """A listing that overlapped itself (a page read twice) says nothing contradictory."""
    _started(runner, tracker, add_mapping)
    _polling(runner, monkeypatch, lambda runs: [
        RunState(r.job_id, RunPhase.RUNNING, run_id="run-x") for r in runs for _ in range(2)
    ])
    report = reconcile(now=later(seconds=60))
    assert "github-actions" not in report.skipped and report.linked == 1
    [job] = jobs_of("ENG-1")
    assert (job.status, job.run_id) == ("running", "run-x")



def test_a_nul_character_in_a_failed_runs_detail_or_log_does_not_hold_its_job(
    app, tracker, runner, add_mapping, monkeypatch
) -> None:
    """A log may hold any byte. PostgreSQL's text takes no NUL: the job's ending failed on every cycle,
    and a run reported ``FAILED`` is never stopped as an overrun, so the job waited for good."""
    _started(runner, tracker, add_mapping)
    _polling(runner, monkeypatch, lambda runs: [
        RunState(r.job_id, RunPhase.FAILED, detail="exit\x002", log_excerpt="fatal:\x00 core dumped")
        for r in runs
    ])
    report = reconcile(now=later(seconds=60))
    assert "github-actions" not in report.skipped
    [job] = jobs_of("ENG-1")
    assert (job.status, job.error, job.log_excerpt) == ("failed", "exit\ufffd2", "fatal:\ufffd core dumped")
