"""An operator cancels a job in flight: it ends failed with the failure comment and stage, its run
is stopped, a late session is told its job ended, and two cancels (or a cancel and a result) end
it once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import cli
from aiimpl_core.cli import jobs as _jobs_commands  # noqa: F401 - registers the commands
from aiimpl_core.extensions import db
from aiimpl_core.services.cancel import CANCELLED
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.orchestrator import at_once, each_at_once

from .conftest import claim_without_launch, jobs_of, post_result, post_status


def _running(client: Any, tracker: Any, runner: Any, add_mapping: Any, key: str = "ENG-1") -> int:
    add_mapping("ENG")
    tracker.add(key)
    run_cycle()
    [job] = jobs_of(key)
    assert post_status(client, runner, job.id, "session_created").status_code == 200
    return job.id


def test_cancel_ends_the_job_failed_posts_the_failure_and_stops_the_run(
    app, client, admin_headers, tracker, runner, add_mapping
):
    job_id = _running(client, tracker, runner, add_mapping)
    run_id = runner.runs[job_id].run_id
    resp = client.post(f"/api/jobs/{job_id}/cancel", headers=admin_headers)
    assert resp.status_code == 200, resp.get_json()
    assert (resp.get_json()["id"], resp.get_json()["status"]) == (job_id, "failed")
    [job] = jobs_of("ENG-1")
    assert (job.status, job.error) == ("failed", CANCELLED)
    assert runner.destroyed == [run_id]
    # the reference's failure comment, and the issue leaves the AI stages
    assert tracker.comments["ENG-1"][-1] == f"⚠️ Implementation failed: {CANCELLED}"
    # no error of the run: not the "⚠️ Session failed" a session that died unsaid gets
    assert not any(c.startswith("⚠️ Session") for c in tracker.comments["ENG-1"])
    assert tracker.stage_labels("ENG-1") == set()

    # the session reports late: its job has ended, its nonce no longer opens /api/status
    late = post_result(client, runner, job_id, outcome="success", prUrl="https://github.com/acme/eng/pull/9")
    assert late.status_code == 200 and late.get_json()["ended"] is False
    assert jobs_of("ENG-1")[0].status == "failed"
    assert post_status(client, runner, job_id, "pr_opened").status_code == 403

    again = client.post(f"/api/jobs/{job_id}/cancel", headers=admin_headers)
    assert (again.status_code, again.get_json()) == (409, {"error": "job already ended"})


def test_a_job_not_launched_yet_is_ended_without_a_backend_call(app, client, admin_headers, tracker, runner,
                                                                add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-2")
    job = claim_without_launch(tracker, "ENG-2")
    assert job.status == "unknown"
    assert client.post(f"/api/jobs/{job.id}/cancel", headers=admin_headers).status_code == 200
    assert jobs_of("ENG-2")[0].status == "failed" and runner.destroyed == []


def test_unknown_jobs_and_bad_ids_are_not_found(client, admin_headers):
    for job_id in ("12345", "abc", "-1"):
        resp = client.post(f"/api/jobs/{job_id}/cancel", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (404, {"error": "job not found"})
    assert client.post("/api/jobs/1/cancel").status_code == 401  # an admin session is required


def test_a_cancel_racing_the_result_ends_the_job_once(
    app, client, admin_headers, tracker, runner, add_mapping
):
    job_id = _running(client, tracker, runner, add_mapping)
    cancel, result = each_at_once(app, [
        lambda c: c.post(f"/api/jobs/{job_id}/cancel", headers=admin_headers),
        lambda c: post_result(c, runner, job_id, outcome="failure", error="the agent gave up"),
    ])
    db.session.rollback()  # a new snapshot: what the two requests committed
    [job] = jobs_of("ENG-1")
    cancel_won = cancel.status_code == 200
    assert result.status_code == 200
    assert result.get_json()["ended"] is (not cancel_won)
    if not cancel_won:
        assert cancel.get_json() == {"error": "job already ended"}
    assert job.error == (CANCELLED if cancel_won else "the agent gave up")
    # one failure comment, whoever won
    assert sum(c.startswith("⚠️ Implementation failed:") for c in tracker.comments["ENG-1"]) == 1
    assert [t.to_status for t in job.transitions].count("failed") == 1


def test_two_cancels_at_once_end_the_job_once(app, client, admin_headers, tracker, runner, add_mapping):
    """Two operators (or a double click through two workers) cancel the same job at the same moment:
    one cancel ends it and stops its run, the other is told it had ended, one failure comment."""
    job_id = _running(client, tracker, runner, add_mapping)
    answers = at_once(app, lambda c: c.post(f"/api/jobs/{job_id}/cancel", headers=admin_headers), 3)
    db.session.rollback()
    assert sorted(a.status_code for a in answers) == [200, 409, 409]
    [job] = jobs_of("ENG-1")
    assert (job.status, job.error) == ("failed", CANCELLED)
    assert [t.to_status for t in job.transitions].count("failed") == 1
    assert sum(c.startswith("⚠️ Implementation failed:") for c in tracker.comments["ENG-1"]) == 1
    assert len(runner.destroyed) == 1


@pytest.fixture
def run(app):
    def invoke(*args: str):
        return CliRunner().invoke(cli, ["jobs", "cancel", *args], obj=ScriptInfo(create_app=lambda: app))

    return invoke


def test_the_cancel_command(run, client, tracker, runner, add_mapping):
    job_id = _running(client, tracker, runner, add_mapping)
    result = run(str(job_id))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Job {job_id} (ENG-1) cancelled: it ended failed."
    result = run(str(job_id), "--json")
    assert result.exit_code == 1 and f"job {job_id}: job already ended" in result.output
    assert run("999").output.strip().endswith("job 999: job not found")
    db.session.rollback()
    shown = CliRunner().invoke(cli, ["jobs", "show", str(job_id), "--json"],
                               obj=ScriptInfo(create_app=lambda: client.application))
    assert json.loads(shown.output)["status"] == "failed"


@pytest.mark.parametrize("answer_lost", [False, True], ids=["answered", "answer-lost"])
def test_a_cancel_while_the_run_is_being_started_stops_that_run(
    app, client, admin_headers, tracker, runner, add_mapping, monkeypatch, answer_lost
):
    """The operator's cancel lands while the backend is starting the run: the cancel finds no run to
    stop yet, so the launch, which loses to it, records the run it started and stops it. When the
    dispatch's answer is lost (the run made all the same), the run is found by its name and stopped:
    the launch used to stop nothing then, and the reconciler never looks at an ended job."""
    from aiimpl_core.errors import DispatchUnanswered

    add_mapping("ENG")
    tracker.add("ENG-3")
    backend = app.extensions["aiimpl"].runner("github-actions")
    dispatch = type(backend).dispatch
    cancels = []

    def cancelled_meanwhile(self, request):  # noqa: ANN001, ANN202
        result = dispatch(self, request)
        cancels.append(client.post(f"/api/jobs/{request.job_id}/cancel", headers=admin_headers))
        if answer_lost:
            raise DispatchUnanswered("github-actions: POST … failed: read timed out",
                                     provider="github-actions")
        return result

    monkeypatch.setattr(type(backend), "dispatch", cancelled_meanwhile)
    runner.link_on_dispatch = True
    run_cycle()
    assert [c.status_code for c in cancels] == [200]
    db.session.expire_all()
    [job] = jobs_of("ENG-3")
    run = runner.runs[job.id]
    linked = None if answer_lost else run.run_id
    assert (job.status, job.error, job.run_id) == ("failed", CANCELLED, linked)
    assert runner.destroyed == [linked or str(job.id)]  # (the fake names a run not linked by its job)
    assert tracker.comments["ENG-3"][-1] == f"⚠️ Implementation failed: {CANCELLED}"
