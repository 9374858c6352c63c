"""The row in which the reconciler keeps when it first saw a run over without its result
(``run-ended:<job>``, the start of the grace the result gets) goes when the job ends, however it
ends: not only when the reconciler ends it, but also when the result comes within the grace or an
operator cancels the job. Nothing prunes settings: a row left behind would stay for good."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aiimpl_core.extensions import db
from aiimpl_core.orm import Setting
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.orchestrator import reconcile
from aiimpl_core.types import RunPhase

from .conftest import jobs_of, later, post_result


def _grace_rows() -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(select(Setting.key).where(Setting.key.like("run-ended:%"))))


def _run_over(tracker, runner, add_mapping) -> int:  # noqa: ANN001
    """A job dispatched (not yet reconciled) whose run is over, its result still to come."""
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-1")
    runner.set_state(job.id, RunPhase.SUCCEEDED)
    return job.id


def _run_seen_over(tracker, runner, add_mapping) -> int:  # noqa: ANN001
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    [job] = jobs_of("ENG-1")
    runner.set_state(job.id, RunPhase.SUCCEEDED)
    reconcile()  # the run is over and no result came yet: the grace starts
    assert _grace_rows() == [f"run-ended:{job.id}"]
    return job.id


def test_a_result_within_the_grace_takes_the_grace_row_with_it(app, client, tracker, runner, add_mapping):
    job_id = _run_seen_over(tracker, runner, add_mapping)
    resp = post_result(client, runner, job_id, outcome="success", prUrl="https://github.com/acme/eng/pull/3")
    assert resp.get_json()["ended"] is True
    assert _grace_rows() == []
    reconcile(later(minutes=30))
    assert _grace_rows() == []
    assert jobs_of("ENG-1")[0].status == "completed"


def test_a_cancel_within_the_grace_takes_the_grace_row_with_it(
    app, client, admin_headers, tracker, runner, add_mapping
):
    job_id = _run_seen_over(tracker, runner, add_mapping)
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=admin_headers).status_code == 200
    assert _grace_rows() == []


def test_a_late_result_leaves_what_the_reconciler_ended(app, client, tracker, runner, add_mapping):
    job_id = _run_seen_over(tracker, runner, add_mapping)
    reconcile(later(minutes=10))  # the grace is over: the job ends without its result
    assert _grace_rows() == []
    resp = post_result(client, runner, job_id, outcome="success", prUrl="https://github.com/acme/eng/pull/3")
    assert resp.get_json()["ended"] is False
    assert jobs_of("ENG-1")[0].status == "failed"


def test_a_result_that_ends_the_job_as_the_grace_starts_leaves_no_grace_row(
    app, tracker, runner, add_mapping, monkeypatch
):
    """The pass read the job in flight; the result ended it (finding no grace row to take with
    it) before the pass wrote the row, which then stayed for good (PostgreSQL: SQLite's pass
    holds the writer's lock from its read to its commit)."""
    from aiimpl_core.services import reconcile as reconcile_mod
    from aiimpl_core.testing import orchestrator

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite: the reconciler holds the write lock from its read to its commit")
    job_id = _run_over(tracker, runner, add_mapping)  # the run is over; its result is on its way
    original = reconcile_mod._after_success_without_result
    answers = []

    def result_lands_first(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not answers:  # another worker: the session's result, after the pass read the job
            answers.append(orchestrator.Worker(app, "result", lambda: post_result(
                app.test_client(), runner, job_id, outcome="success",
                prUrl="https://github.com/acme/eng/pull/3")).join())
        return original(*args, **kwargs)

    monkeypatch.setattr(reconcile_mod, "_after_success_without_result", result_lands_first)
    db.session.commit()
    reconcile()

    [answer] = answers
    assert answer.status_code == 200 and answer.get_json()["ended"] is True
    assert jobs_of("ENG-1")[0].status == "completed"
    assert _grace_rows() == []


def test_two_passes_that_see_the_run_over_at_once_begin_one_grace(
    app, tracker, runner, add_mapping, monkeypatch, caplog
):
    """Two reconcile passes without the lease (an operator's ``poll --once`` beside a poll loop)
    both found no grace row; the second waited for the first's hold on the job, then added the row
    again, and its pass of the job failed with a traceback in the log (PostgreSQL)."""
    from aiimpl_core.services import reconcile as reconcile_mod
    from aiimpl_core.testing import orchestrator

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite: the reconciler holds the write lock from its read to its commit")
    job_id = _run_over(tracker, runner, add_mapping)
    db.session.commit()
    pause = orchestrator.Pause(monkeypatch, reconcile_mod, "_after_success_without_result", "first")
    first = orchestrator.Worker(app, "first", reconcile)
    assert pause.entered.wait(30)
    second = orchestrator.Worker(app, "second", reconcile)
    orchestrator.wait_until_blocked(app, second)
    pause.release()
    first.join()
    second.join()
    assert "reconciling job" not in caplog.text
    assert _grace_rows() == [f"run-ended:{job_id}"]
    assert jobs_of("ENG-1")[0].status == "dispatched"  # within the grace the result gets
