"""How the reconciler ends jobs whose run vanished or was left out of a backend's answer, and
what it does with the text a backend reports.

* A run that was linked and is no longer found did exist: the job ends ``failed`` (the run
  disappeared), or as the lifetime timeout once the lifetime has passed, never ``run_not_found``
  (which the reference keeps for "a run was never linked").
* A run the backend left out of its answer was not looked at (``poll_runs``: "omitted runs are
  left as they are"): its job keeps its status, until 10 minutes past its lifetime.
* A backend's log excerpt and failure detail are masked of the team's secrets in every form.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from aiimpl_core.errors import ProviderError
from aiimpl_core.orm import Job
from aiimpl_core.services import outbox
from aiimpl_core.services import secrets as secrets_service
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.fakes import FakeRunner
from aiimpl_core.types import InFlightRun, LogLabel, RunPhase, RunState

from .conftest import jobs_of, later, post_status


def _dispatched(tracker: Any, add_mapping: Callable[..., Any], key: str) -> Job:
    """``key`` (of team ENG) dispatched by a poll cycle."""
    add_mapping("ENG")
    tracker.add(key)
    run_cycle(reconcile=False)
    [job] = jobs_of(key)
    return job


def _omitting(runner: FakeRunner, monkeypatch: pytest.MonkeyPatch, left_out: set[int]) -> None:
    """The backend answers for every run except ``left_out`` (as when a listing failed)."""
    answer = runner.backend_class.poll_runs

    def poll_runs(self: Any, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        return [s for s in answer(self, runs) if s.job_id not in left_out]

    monkeypatch.setattr(runner.backend_class, "poll_runs", poll_runs)


# -- a linked run that is no longer found ---------------------------------------------------------


def test_a_linked_run_that_disappears_ends_failed_not_run_not_found(app, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping, "ENG-1")
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    [job] = jobs_of("ENG-1")
    assert job.status == "running" and job.run_id

    runner.set_state(job.id, RunPhase.NOT_FOUND)  # its session was destroyed
    run_cycle(now=later(minutes=20))

    [job] = jobs_of("ENG-1")
    assert (job.status, job.timeout_reason, job.log_label) == ("failed", None, "session_failed")
    reason = (
        f"the run {job.run_id} disappeared before it reported a result "
        "(its session was destroyed or removed)"
    )
    assert job.error == reason
    assert tracker.comments["ENG-1"][0] == f"⚠️ Implementation failed: {reason}"
    assert not any("run_not_found" in c for c in tracker.comments["ENG-1"])


def test_a_linked_run_not_found_inside_the_window_is_left_as_it_is(app, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping, "ENG-2")
    runner.set_state(job.id, RunPhase.NOT_FOUND)  # not listed yet
    run_cycle(now=later(minutes=5))
    [job] = jobs_of("ENG-2")
    assert job.status == "dispatched" and job.run_id


def test_a_linked_run_gone_after_its_lifetime_ends_as_the_lifetime_timeout(app, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping, "ENG-3")
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    runner.set_state(job.id, RunPhase.NOT_FOUND)
    run_cycle(now=later(minutes=62))
    [job] = jobs_of("ENG-3")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    comments = tracker.comments["ENG-3"]
    assert comments[0] == (
        "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)"
    )
    assert comments[1].startswith("Log excerpt (`machine_timeout`)") and "no longer found" in comments[1]


class TestLocalContainers:
    """On the backend of runner mode ``local`` the lifetime timeout is ``container_timeout``."""

    @pytest.fixture
    def runner(self) -> FakeRunner:
        return FakeRunner("local-docker", runner_mode="local", mapping_selectable=False)

    def test_a_container_gone_after_its_lifetime_is_a_container_timeout(
        self, app, tracker, runner, add_mapping
    ):
        from aiimpl_core.services import settings

        settings.put(settings.RUNNER_MODE_KEY, "local")
        job = _dispatched(tracker, add_mapping, "ENG-8")
        assert job.backend == "local-docker"
        runner.set_state(job.id, RunPhase.RUNNING)
        run_cycle()
        runner.set_state(job.id, RunPhase.NOT_FOUND)
        run_cycle(now=later(minutes=61))
        [job] = jobs_of("ENG-8")
        assert (job.status, job.timeout_reason) == ("timed_out", "container_timeout")


def test_a_never_linked_run_still_ends_run_not_found(app, tracker, runner, add_mapping):
    runner.link_on_dispatch = False
    job = _dispatched(tracker, add_mapping, "ENG-4")
    runner.runs.pop(job.id)
    run_cycle(now=later(minutes=11))
    [job] = jobs_of("ENG-4")
    assert (job.status, job.timeout_reason) == ("timed_out", "run_not_found")


def test_a_run_started_after_its_job_ended_run_not_found_is_stopped(
    app, tracker, runner, add_mapping, monkeypatch
):
    """A dispatch that outlasted the window (an image pulled first): another host's reconciler ended
    the job ``run_not_found`` meanwhile. The run the dispatch then started is for a job that is over
    (its session's reports would be refused): it is stopped, not left to its lifetime."""
    add_mapping("ENG")
    tracker.add("ENG-6")
    dispatch = runner.backend_class.dispatch
    endings = []

    def slow(self: Any, request: Any) -> Any:
        def other_host() -> None:
            with app.app_context():
                endings.append(reconcile(now=later(minutes=11)).endings)

        thread = threading.Thread(target=other_host)
        thread.start()
        thread.join()
        return dispatch(self, request)

    monkeypatch.setattr(runner.backend_class, "dispatch", slow)
    runner.link_on_dispatch = True
    run_cycle(reconcile=False)

    [job] = jobs_of("ENG-6")
    assert endings == [{job.id: "timed_out/run_not_found"}]
    run = runner.runs[job.id]
    assert (job.status, job.timeout_reason, job.run_id) == ("timed_out", "run_not_found", run.run_id)
    assert runner.destroyed == [run.run_id]


# -- runs left out of the backend's answer ----------------------------------------------------------


def test_an_unlinked_run_left_out_of_the_answer_keeps_its_job(app, tracker, runner, add_mapping, monkeypatch):
    runner.link_on_dispatch = False
    job = _dispatched(tracker, add_mapping, "ENG-5")
    _omitting(runner, monkeypatch, {job.id})

    run_cycle(now=later(minutes=11))  # past the run_not_found window: not looked at, not ended
    run_cycle(now=later(minutes=65))
    assert jobs_of("ENG-5")[0].status == "dispatched"
    assert tracker.comments["ENG-5"] == []

    # never answered for until 10 minutes past its lifetime: whatever run it had was over by then
    run_cycle(now=later(minutes=71))
    [job] = jobs_of("ENG-5")
    assert (job.status, job.timeout_reason) == ("timed_out", "run_not_found")


def test_a_linked_run_left_out_of_the_answer_keeps_its_job(app, tracker, runner, add_mapping, monkeypatch):
    job = _dispatched(tracker, add_mapping, "ENG-6")
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    _omitting(runner, monkeypatch, {job.id})
    run_cycle(now=later(minutes=30))
    run_cycle(now=later(minutes=65))
    assert jobs_of("ENG-6")[0].status == "running"
    assert runner.destroyed == []

    # still left out 10 minutes past its lifetime: stopped and ended as an overrun, not held for
    # good (a backend that can no longer read the run would keep the job, and its slot, forever)
    run_cycle(now=later(minutes=71))
    [job] = jobs_of("ENG-6")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert runner.destroyed == [job.run_id]


# -- a backend whose every poll fails (a repository deleted, a token revoked) ---------------------------


@pytest.mark.parametrize("backing_off", [False, True], ids=["poll-fails", "backing-off"])
def test_jobs_of_a_backend_that_keeps_failing_end_past_their_lifetime(
    app, tracker, runner, add_mapping, backing_off
):
    runner.link_on_dispatch = False
    unlinked = _dispatched(tracker, add_mapping, "ENG-21")
    runner.runs.pop(unlinked.id)  # its run never shows up
    tracker.add("ENG-22")
    run_cycle(reconcile=False)
    [linked] = jobs_of("ENG-22")
    runner.set_state(linked.id, RunPhase.RUNNING)
    run_cycle()
    [linked] = jobs_of("ENG-22")
    assert [j.status for j in jobs_of("ENG-21") + [linked]] == ["dispatched", "running"]
    assert linked.run_id
    runner.poll_error = ProviderError("GitHub answered 404 Not Found", status=404)  # repository deleted

    for minutes in (11, 30, 65):  # within the lifetime and its grace: left as they are
        report = reconcile(now=later(minutes=minutes))
        assert report.ended == 0 and "github-actions" in report.skipped
    assert [j.status for j in jobs_of("ENG-21") + jobs_of("ENG-22")] == ["dispatched", "running"]

    at = later(minutes=71)
    if backing_off:
        reconcile(now=at - timedelta(seconds=90))  # fails again: backing off for 2 minutes (a 404)
    report = reconcile(now=at)
    assert report.skipped["github-actions"].startswith("backing off" if backing_off else "poll failed")

    # never held for good: whatever run they had, the lifetime stop ended it by now
    [unlinked] = jobs_of("ENG-21")
    assert (unlinked.status, unlinked.timeout_reason) == ("timed_out", "run_not_found")
    [ended] = jobs_of("ENG-22")
    assert (ended.status, ended.timeout_reason) == ("timed_out", "machine_timeout")
    # cancelled when the backend could be asked; not while it backs off
    assert runner.destroyed == ([] if backing_off else [linked.run_id])
    assert report.ended == 2
    outbox.deliver()
    assert tracker.comments["ENG-22"][0] == (
        "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)"
    )


# -- runs nobody can be asked about: the mapping deleted, the backend's plugin removed ---------------


def _delete_mapping(team_key: str) -> None:
    from aiimpl_core.services.mappings import delete_mapping

    assert delete_mapping(team_key)


def test_a_running_job_whose_mapping_was_deleted_still_ends_with_its_result(
    app, client, tracker, runner, add_mapping
):
    from .conftest import post_result

    job = _dispatched(tracker, add_mapping, "ENG-11")
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    _delete_mapping("ENG")

    run_cycle(now=later(minutes=20))  # past the run_not_found window: it was linked, it is at work
    [job] = jobs_of("ENG-11")
    assert (job.status, job.timeout_reason) == ("running", None)
    assert tracker.comments["ENG-11"] == []

    url = "https://github.com/acme/eng/pull/11"
    resp = post_result(client, runner, job.id, outcome="success", prUrl=url)
    assert resp.get_json() == {"jobId": job.id, "status": "completed", "ended": True}
    assert tracker.comments["ENG-11"] == [f"🔗 PR #11 is ready for review: {url}"]
    assert tracker.stage_labels("ENG-11") == {"Ready for Review"}


def test_a_linked_job_whose_mapping_was_deleted_ends_as_the_lifetime_timeout_at_last(
    app, tracker, runner, add_mapping
):
    job = _dispatched(tracker, add_mapping, "ENG-12")
    _delete_mapping("ENG")
    run_cycle(now=later(minutes=65))
    assert jobs_of("ENG-12")[0].status == "dispatched"

    run_cycle(now=later(minutes=71))  # 10 minutes past its lifetime, and no result came
    [job] = jobs_of("ENG-12")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert tracker.comments["ENG-12"][0] == (
        "⚠️ Implementation failed: the session machine exceeded its lifetime (machine_timeout)"
    )


def test_a_never_linked_job_whose_mapping_was_deleted_ends_run_not_found(app, tracker, runner, add_mapping):
    runner.link_on_dispatch = False
    job = _dispatched(tracker, add_mapping, "ENG-13")
    _delete_mapping("ENG")
    run_cycle(now=later(minutes=11))
    [job] = jobs_of("ENG-13")
    assert (job.status, job.timeout_reason) == ("timed_out", "run_not_found")


def test_a_running_job_whose_backend_was_removed_is_left_to_its_result(app, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping, "ENG-14")
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    app.extensions["aiimpl"].classes["runner"].pop(runner.backend_id)  # its plugin was uninstalled

    run_cycle(now=later(minutes=20))
    assert jobs_of("ENG-14")[0].status == "running"
    run_cycle(now=later(minutes=71))
    [job] = jobs_of("ENG-14")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")


# -- text a backend reports -------------------------------------------------------------------------

TEAM_SECRET = "team-secret-3f8e1c/+=xyz"


def test_a_backend_excerpt_is_masked_in_every_form(app, tracker, runner, add_mapping):
    job = _dispatched(tracker, add_mapping, "ENG-7")
    secrets_service.set_secret("ENG", "TEAM_TOKEN", TEAM_SECRET)
    encoded = quote(TEAM_SECRET, safe="")
    basic = base64.b64encode(f"x-access-token:{TEAM_SECRET}".encode()).decode()
    excerpt = (
        f"fatal: unable to access 'https://x:{encoded}@git.example/acme/api.git/'\n"
        f"Authorization: Basic {basic}\n"
        f"split: {TEAM_SECRET[:10]}\n{TEAM_SECRET[10:]}\n"
        f"plain: {TEAM_SECRET}\n"
    )
    runner.set_state(
        job.id,
        RunPhase.FAILED,
        exit_code=1,
        detail=f"clone of https://x:{encoded}@git.example failed",
        log_label=LogLabel.CONTAINER_FAILED,
        log_excerpt=excerpt,
    )
    run_cycle()

    [job] = jobs_of("ENG-7")
    assert job.status == "failed"
    stored = f"{job.error}\n{job.log_excerpt}"
    posted = "\n".join(tracker.comments["ENG-7"])
    for text in (stored, posted):
        assert "[REDACTED]" in text
        for form in (TEAM_SECRET, encoded, basic, TEAM_SECRET[10:]):
            assert form not in text, form


def test_a_backend_excerpt_is_masked_of_the_jobs_run_credentials(app, tracker, runner, add_mapping):
    """A container that printed its environment: the job's nonce and run tokens, which no secret
    row holds, are masked too (the token by its signature, the nonce by its hash). A token another
    key signed and a word shaped like a nonce that is not the job's are left as they are."""
    from aiimpl_core.auth import tokens
    from aiimpl_core.session import env as session_env

    job = _dispatched(tracker, add_mapping, "ENG-9")
    env = runner.runs[job.id].request.env
    nonce, progress = env[session_env.NONCE.name], env[session_env.PROGRESS_TOKEN.name]
    foreign = tokens.issue_run_token("another-signing-key-of-at-least-32-bytes", job.id, "implementation",
                                     tokens.AUD_RESULT, 60)
    other_word = "A" * 43
    runner.set_state(
        job.id,
        RunPhase.FAILED,
        detail=f"session exited; nonce={nonce}",
        log_label=LogLabel.CONTAINER_FAILED,
        log_excerpt=f"AIIMPL_NONCE={nonce}\nAIIMPL_PROGRESS_TOKEN={progress}\nother={foreign} {other_word}\n",
    )
    run_cycle()

    [job] = jobs_of("ENG-9")
    assert job.status == "failed"
    assert job.error == "session exited; nonce=[REDACTED]"
    posted = "\n".join(tracker.comments["ENG-9"])
    for text in (job.log_excerpt, posted):
        masked = "AIIMPL_NONCE=[REDACTED]\nAIIMPL_PROGRESS_TOKEN=[REDACTED]\n"
        assert f"{masked}other={foreign} {other_word}" in text
        assert nonce not in text and progress not in text


def test_a_run_linked_in_the_cycle_of_its_dispatch_runs_after_it(
    app, tracker, runner, add_mapping, monkeypatch
):
    """The reconcile of a cycle reads the clock as it starts: a run reported running at once was
    stamped with the cycle's start, before the dispatch (and a slow listing made it seconds)."""
    import time

    add_mapping("ENG")
    tracker.add("ENG-31")
    listing = tracker.provider_class.iter_triggered

    def slow(self: Any, teams: Any) -> Any:
        time.sleep(0.05)
        return listing(self, teams)

    dispatch = runner.backend_class.dispatch

    def started_at_once(self: Any, request: Any) -> Any:
        result = dispatch(self, request)
        runner.runs[request.job_id].phase = RunPhase.RUNNING
        return result

    monkeypatch.setattr(tracker.provider_class, "iter_triggered", slow)
    monkeypatch.setattr(runner.backend_class, "dispatch", started_at_once)
    run_cycle()

    [job] = jobs_of("ENG-31")
    assert job.status == "running"
    assert job.created_at <= job.dispatched_at <= job.running_at


# -- the session's own ending comment, when it could not post it ----------------------------------


def _session_started(app: Any, runner: FakeRunner, job: Job) -> Any:
    """The job's session said it was created (``POST /api/status``), as a session does first."""
    client = app.test_client()
    assert post_status(client, runner, job.id, "session_created").status_code == 200
    return client


def test_a_session_that_died_without_a_word_gets_the_reference_s_session_failed_comment(
    app, tracker, runner, add_mapping
):
    """"⚠️ Session failed: … Machine will be cleaned up." is posted when the run errors out; a
    machine that exited (killed, out of memory) never posted it: the reconciler's ending does,
    before the failure notice, as the session's own ending would have."""
    job = _dispatched(tracker, add_mapping, "ENG-11")
    _session_started(app, runner, job)
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    reason = "the session machine exited with code 137"
    runner.set_state(job.id, RunPhase.FAILED, detail=reason, log_excerpt="Killed",
                     log_label=LogLabel.SESSION_FAILED)
    run_cycle(now=later(minutes=5))
    [job] = jobs_of("ENG-11")
    assert job.status == "failed"
    said = tracker.comments["ENG-11"]
    assert said[0].startswith("🚀 Session machine created.")
    assert said[1].startswith(f"⚠️ Session failed: {reason}. Machine will be cleaned up.")
    assert said[2] == f"⚠️ Implementation failed: {reason}"
    assert said[3].startswith("Log excerpt (`session_failed`)") and len(said) == 4


def test_a_session_past_its_lifetime_gets_the_reference_s_session_timed_out_comment(
    app, tracker, runner, add_mapping
):
    job = _dispatched(tracker, add_mapping, "ENG-12")
    _session_started(app, runner, job)
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    runner.set_state(job.id, RunPhase.NOT_FOUND)
    run_cycle(now=later(minutes=62))
    said = tracker.comments["ENG-12"]
    reason = "the session machine exceeded its lifetime (machine_timeout)"
    assert said[1].startswith(f"⚠️ Session timed out: {reason}. Machine will be cleaned up.")
    assert said[2] == f"⚠️ Implementation failed: {reason}"


def test_a_session_that_said_how_it_ended_is_not_said_again(app, tracker, runner, add_mapping):
    """The session posted its ⚠️ comment and died before its result: the ending adds none (not
    the same one again, nor the other)."""
    job = _dispatched(tracker, add_mapping, "ENG-13")
    client = _session_started(app, runner, job)
    assert post_status(client, runner, job.id, "session_failed", reason="clone failed").status_code == 200
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    runner.set_state(job.id, RunPhase.NOT_FOUND)
    run_cycle(now=later(minutes=62))  # ended as the lifetime timeout
    said = tracker.comments["ENG-13"]
    assert [c.split(":")[0] for c in said if c.startswith("⚠️ Session")] == ["⚠️ Session failed"]
    assert said[2].startswith("⚠️ Implementation failed: ")


def _running_without_a_run_id(app: Any, tracker: Any, runner: FakeRunner, key: str) -> Job:
    """A job whose session reported, though the backend never named its run (GitHub's dispatch
    answers no run; the run is found by its name later)."""
    runner.link_on_dispatch = False
    tracker.add(key)
    run_cycle(reconcile=False)
    [job] = jobs_of(key)
    assert post_status(app.test_client(), runner, job.id, "session_created").status_code == 200
    [job] = jobs_of(key)
    assert (job.status, job.run_id) == ("running", None)
    return job


def test_a_run_that_reported_but_was_never_named_is_no_run_not_found_when_left_out(
    app, tracker, runner, add_mapping, monkeypatch
):
    """Left out of the backend's answers (its repository's listing fails) past its lifetime, it is
    stopped and ends as the lifetime's timeout. It ended ``run_not_found`` — "a run was never
    linked", under the session's own "Session machine created" — and was never stopped."""
    add_mapping("ENG")
    job = _running_without_a_run_id(app, tracker, runner, "ENG-1")
    answer = runner.backend_class.poll_runs

    def left_out(self: Any, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        return [state for state in answer(self, runs) if state.job_id != job.id]

    monkeypatch.setattr(runner.backend_class, "poll_runs", left_out)
    run_cycle(now=later(minutes=30))
    assert jobs_of("ENG-1")[0].status == "running"
    run_cycle(now=later(minutes=71))
    [job] = jobs_of("ENG-1")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
    assert runner.destroyed == [str(job.id)]  # (a run without an id: by its job)


def test_a_run_that_reported_but_was_never_named_is_not_gone_when_not_found(
    app, tracker, runner, add_mapping
):
    """The backend answers it not found (GitHub lists it past the pages it reads): its session
    reports, so it waits out its lifetime, then ends as the lifetime's timeout. It ended
    ``run_not_found`` at the window's end, 10 minutes in."""
    add_mapping("ENG")
    job = _running_without_a_run_id(app, tracker, runner, "ENG-2")
    runner.runs.pop(job.id)
    run_cycle(now=later(minutes=20))
    assert jobs_of("ENG-2")[0].status == "running"
    run_cycle(now=later(minutes=71))
    [job] = jobs_of("ENG-2")
    assert (job.status, job.timeout_reason) == ("timed_out", "machine_timeout")
