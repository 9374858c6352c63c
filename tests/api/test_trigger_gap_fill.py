"""``POST /trigger/gap-fill``: every row of the reference's table, and the gap-analysis job it starts."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job
from aiimpl_core.testing.fakes import FakeRunner, dispatch_refused

URL = "/trigger/gap-fill"
SECRET = "gap-fill-trigger-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}
BAD_BODY = "issueKey and positive integer prNumber required"


@pytest.fixture
def aiimpl_config():
    return {"AIIMPL_TRIGGER_SECRET": SECRET}


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


def post(client, body=None, raw=None, headers=AUTH):
    if raw is not None:
        return client.post(URL, data=raw, headers=headers, content_type="application/json")
    return client.post(URL, json=body, headers=headers)


def _jobs():
    db.session.commit()
    return db.session.scalars(select(Job).order_by(Job.id)).all()


BAD_BODIES = [
    {"prNumber": 5},
    {"issueKey": "", "prNumber": 5},
    {"issueKey": 7, "prNumber": 5},
    # not an issue key: a team key, a dash and the issue's number
    {"issueKey": "ENG-", "prNumber": 5},
    {"issueKey": "nohyphen", "prNumber": 5},
    {"issueKey": "ENG-0", "prNumber": 5},
    {"issueKey": "ENG-1a", "prNumber": 5},
    {"issueKey": "ENG-1\n", "prNumber": 5},
    {"issueKey": " ENG-1", "prNumber": 5},
    {"issueKey": "ENG-\u0661", "prNumber": 5},
    {"issueKey": "-1", "prNumber": 5},
    {"issueKey": "ENG-1"},
    {"issueKey": "ENG-1", "prNumber": 0},
    {"issueKey": "ENG-1", "prNumber": -3},
    {"issueKey": "ENG-1", "prNumber": "5"},
    {"issueKey": "ENG-1", "prNumber": 2.5},
    {"issueKey": "ENG-1", "prNumber": True},
    {"issueKey": "ENG-1", "prNumber": None},
    {"issueKey": "ENG-0", "prNumber": 10**30},  # the key's rule comes first
    [{"issueKey": "ENG-1", "prNumber": 5}],
    None,
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_gap_fill_table_400_bad_body(client, cb_mapping, body):
    cb_mapping()
    resp = post(client, body) if body is not None else post(client, raw=b"{not json")
    assert resp.status_code == 400
    assert resp.get_json() == {"error": BAD_BODY}
    assert _jobs() == []


@pytest.mark.parametrize("number", [2**31, 10**30])
def test_gap_fill_a_pr_number_beyond_what_is_stored_is_named(client, cb_mapping, number):
    cb_mapping()
    resp = post(client, {"issueKey": "ENG-1", "prNumber": number})
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "prNumber must be at most 2147483647"}
    assert _jobs() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": f"Bearer {SECRET}x"},
        {"Authorization": SECRET},
    ],
)
def test_gap_fill_table_401_unauthorized(client, cb_mapping, headers):
    cb_mapping()
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5}, headers=headers)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "unauthorized"}


def test_gap_fill_table_404_mapping_not_found(client, cb_mapping):
    cb_mapping("ENG")
    for key in ("OPS-9", "ENGX-1", "EN-1"):
        resp = post(client, {"issueKey": key, "prNumber": 5})
        assert resp.status_code == 404
        assert resp.get_json() == {"error": "mapping_not_found"}


def test_gap_fill_table_423_project_paused(client, cb_mapping):
    cb_mapping("ENG", paused=True)
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
    assert resp.status_code == 423
    assert resp.get_json() == {"error": "project_paused", "teamKey": "ENG"}
    assert _jobs() == []


def test_gap_fill_for_a_project_paused_while_the_tracker_was_asked_is_423(
    client, cb_mapping, cb_runner, cb_tracker, monkeypatch
):
    """The pause was checked before the tracker was asked whether the issue exists (seconds, at
    times), and not again: a pause committed meanwhile was answered 202 and the run started."""
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from aiimpl_core.orm import Mapping

    cb_mapping("ENG")
    original = cb_tracker.provider_class.get_issue

    def get_issue(self, key):
        with Session(db.engine) as other:  # the operator's pause, on another worker
            other.execute(update(Mapping).where(Mapping.team_key == "ENG").values(paused=True))
            other.commit()
        return original(self, key)

    monkeypatch.setattr(cb_tracker.provider_class, "get_issue", get_issue)
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 42})
    assert (resp.status_code, resp.get_json()) == (423, {"error": "project_paused", "teamKey": "ENG"})
    assert _jobs() == [] and cb_runner.runs == {}


@pytest.mark.parametrize("aiimpl_config", [{}, {"AIIMPL_TRIGGER_SECRET": ""}])
def test_gap_fill_table_501_not_configured(client, cb_mapping, aiimpl_config):
    cb_mapping()
    for headers in ({}, AUTH):
        resp = post(client, {"issueKey": "ENG-1", "prNumber": 5}, headers=headers)
        assert resp.status_code == 501
        assert resp.get_json() == {"error": "Gap fill trigger not configured"}


def test_gap_fill_table_502_dispatch_failed(client, cb_mapping, cb_runner, cb_tracker):
    cb_mapping()
    cb_runner.dispatch_error = dispatch_refused(422, "Workflow does not have 'workflow_dispatch' trigger")
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
    assert resp.status_code == 502
    assert resp.get_json() == {
        "error": "dispatch_failed",
        "detail": "Workflow does not have 'workflow_dispatch' trigger",
        "dispatchStatus": 422,
    }
    [job] = _jobs()
    assert job.status == "failed"


def test_gap_fill_502_detail_from_githubs_error_body(client, cb_mapping, cb_runner):
    from aiimpl_core.errors import DispatchError

    cb_mapping()
    cb_runner.dispatch_error = DispatchError(
        "github: POST /repos/acme/api/actions/workflows/ai.yml/dispatches failed with HTTP 404: Not Found",
        status=404,
        detail={"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
    )
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
    assert resp.get_json() == {"error": "dispatch_failed", "detail": "Not Found", "dispatchStatus": 404}


def test_gap_fill_502_when_the_dispatch_got_no_answer(client, cb_mapping, cb_runner):
    """Its caller is answered at once: a gap fill whose dispatch got no answer fails as on any
    other error (a cycle's dispatch would wait for its run instead)."""
    from aiimpl_core.errors import DispatchUnanswered

    cb_mapping()
    cb_runner.dispatch_error = DispatchUnanswered("no answer", status=502, detail="Bad Gateway")
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
    assert resp.status_code == 502
    assert resp.get_json() == {"error": "dispatch_failed", "detail": "Bad Gateway", "dispatchStatus": 502}
    [job] = _jobs()
    assert job.status == "failed"
    # the run may have been made all the same: its job has ended, so it is looked for and stopped
    assert cb_runner.destroyed == [str(job.id)]


def test_gap_fill_502_names_the_backend_that_supports_it_but_is_not_configured(
    client, cb_mapping, cb_runner, monkeypatch
):
    """The mapping's backend takes no gap fill, and GitHub Actions, which does, is installed but
    not configured: it is named as such (the answer said no installed backend supported gap-fill,
    and an operator looked for a missing plugin)."""
    monkeypatch.setattr(cb_runner.backend_class, "is_configured", lambda _self: False)
    cb_mapping(execution_mode="fly-machines")
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
    assert resp.status_code == 502
    assert resp.get_json() == {
        "error": "dispatch_failed",
        "detail": "no configured runner backend supports gap-fill dispatch (github-actions: not configured)",
        "dispatchStatus": None,
    }
    assert _jobs() == []


@pytest.mark.parametrize("cb_runner", [FakeRunner(gap_fill=False)])
def test_gap_fill_502_when_no_backend_supports_it(client, cb_mapping, cb_runner):
    cb_mapping()
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
    assert resp.status_code == 502
    assert resp.get_json() == {
        "error": "dispatch_failed",
        "detail": "no installed runner backend supports gap-fill dispatch",
        "dispatchStatus": None,
    }
    assert _jobs() == []


def test_gap_fill_409_already_running(client, cb_mapping, cb_job):
    cb_job(status="running")
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
    assert resp.status_code == 409
    assert resp.get_json()["error"] == "already_running"
    assert len(_jobs()) == 1


def test_gap_fill_dispatches_a_gap_analysis_job_on_the_prs_branch(client, cb_job, cb_runner):
    opener, _ = cb_job(status="completed", pr_number=42, branch="ai/ENG-1-retry")
    resp = post(client, {"issueKey": "ENG-1", "prNumber": 42})
    assert resp.status_code == 202
    jobs = _jobs()
    job = jobs[-1]
    assert resp.get_json() == {"jobId": job.id, "status": "dispatched"}
    assert (job.phase, job.pr_number, job.base_branch, job.backend) == (
        "gap-analysis",
        42,
        "ai/ENG-1-retry",
        "github-actions",
    )
    run = cb_runner.runs[job.id]
    assert run.request.pr_number == 42
    assert run.request.base_branch == "ai/ENG-1-retry"
    assert run.request.env["AIIMPL_PR_NUMBER"] == "42"
    assert run.request.env["AIIMPL_PHASE"] == "gap-analysis"


def test_gap_fill_triggered_three_times_at_once_starts_one_job(app, cb_job, cb_runner):
    """Automation retrying a trigger (or three hosts receiving it): one 202, the others 409, one job."""
    from aiimpl_core.testing.orchestrator import at_once

    cb_job(status="completed", pr_number=42)
    answers = at_once(app, lambda c: post(c, {"issueKey": "ENG-1", "prNumber": 42}), 3)
    assert sorted(a.status_code for a in answers) == [202, 409, 409]
    assert [a.get_json()["error"] for a in answers if a.status_code == 409] == ["already_running"] * 2
    assert [j.phase for j in _jobs()] == ["implementation", "gap-analysis"]
    assert len(cb_runner.runs) == 1


def test_gap_fill_for_a_mapping_deleted_as_its_job_is_made_is_mapping_not_found(app, cb_mapping, cb_runner):
    """On PostgreSQL the job's INSERT waits for the deletion's row lock and then breaks the foreign
    key, which was answered 409 `already_running` (no job runs); on SQLite the trigger waits for
    the deletion and finds no mapping. Either way: 404 `mapping_not_found`, nothing started."""
    from sqlalchemy.orm import Session

    from aiimpl_core.orm import Mapping
    from aiimpl_core.testing.orchestrator import Worker, wait_until_blocked

    cb_mapping("ENG")
    other = Session(db.engine)
    other.execute(db.delete(Mapping).where(Mapping.team_key == "ENG"))
    trigger = Worker(app, "trigger", lambda: post(app.test_client(), {"issueKey": "ENG-1", "prNumber": 42}))
    try:
        wait_until_blocked(app, trigger)
    finally:
        other.commit()
        other.close()
    resp = trigger.join()
    assert (resp.status_code, resp.get_json()) == (404, {"error": "mapping_not_found"})
    assert _jobs() == [] and cb_runner.runs == {}


def test_gap_fill_of_an_issue_its_tracker_does_not_have_is_issue_not_found(client, cb_mapping, cb_runner,
                                                                          cb_tracker):
    """A typo in the automation's key: the run was dispatched all the same (a runner's minutes),
    and its comments were refused by the tracker one after another. A tracker that cannot say
    (it fails) does not hold the trigger up."""
    from aiimpl_core.testing.fakes import fail_with

    cb_mapping("ENG")
    resp = post(client, {"issueKey": "ENG-99", "prNumber": 9})
    assert (resp.status_code, resp.get_json()) == (404, {"error": "issue_not_found"})
    assert _jobs() == [] and cb_runner.runs == {}
    cb_tracker.fail["get_issue"] = fail_with(503, "tracker unavailable")
    assert post(client, {"issueKey": "ENG-99", "prNumber": 9}).status_code == 202


def test_gap_fill_base_branch_defaults_to_prefix_and_key(client, cb_mapping, cb_runner, cb_tracker):
    cb_mapping("ENG", branch_prefix="bot/")
    cb_tracker.add("ENG-3")
    resp = post(client, {"issueKey": "ENG-3", "prNumber": 9})
    assert resp.status_code == 202
    assert _jobs()[-1].base_branch == "bot/ENG-3"


class TestMappingBackendWithoutGapFill:
    """The mapping runs on fly-machines, which cannot dispatch gap-fill; github-actions can."""

    @pytest.fixture
    def fly_runner(self):
        return FakeRunner("fly-machines", "fly", gap_fill=False)

    @pytest.fixture
    def aiimpl_plugins(self, cb_tracker, cb_runner, fly_runner):
        return [cb_tracker.plugin, cb_runner.plugin, fly_runner.plugin]

    def test_gap_fill_falls_back_to_a_backend_that_supports_it(
        self, client, cb_mapping, fly_runner, cb_runner
    ):
        cb_mapping("ENG", execution_mode="fly-machines")
        resp = post(client, {"issueKey": "ENG-1", "prNumber": 5})
        assert resp.status_code == 202, resp.get_json()
        job = _jobs()[-1]
        assert job.backend == "github-actions"
        assert fly_runner.runs == {}
        assert job.id in cb_runner.runs
