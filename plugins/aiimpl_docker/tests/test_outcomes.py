"""The outcomes the backend reports, against a fake engine (runs without a container engine).

* An ended container is kept while its job is in flight, so every poll reports the same outcome:
  a failure is not lost to a poll that comes after a removal (another poller, or a cycle whose
  outcome was not recorded), and a container stopped for its lifetime stays ``container_timeout``
  rather than turning into the failure its stop caused (exit code 143).
* It is removed once the job has ended.
* A linked container that disappears (an admin destroyed the session) ends its job ``failed``,
  never ``run_not_found``; the log excerpt posted on the ticket is masked of the team's secrets in
  every form.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiimpl_core.errors import DispatchError, ProviderConfigError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.contract import make_context, sample_dispatch_request, sample_mapping
from aiimpl_core.testing.fakes import FakeTracker
from aiimpl_core.types import InFlightRun, JobStatus, LogLabel, RunPhase, RunState, TimeoutReason

from aiimpl_docker.backend import LocalDockerBackend

from .conftest import FAKE_ENGINE_IMAGE, Clock, add_eng_mapping
from .fake_engine import FakeEngine

IMAGE = FAKE_ENGINE_IMAGE


@pytest.fixture
def backend(fake_engine: FakeEngine, clock: Clock) -> LocalDockerBackend:
    fake_engine.images[IMAGE] = "sha256:" + "5e" * 32
    return LocalDockerBackend(make_context({"AIIMPL_DOCKER_IMAGE": IMAGE}, clock=clock))


def _started(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock, job_id: int = 5
) -> InFlightRun:
    req = sample_dispatch_request(job_id, mapping=sample_mapping())
    container_id = backend.dispatch(req).run_id
    assert container_id in fake_engine.containers
    return InFlightRun(
        job_id=job_id,
        phase=req.phase,
        issue_key=req.issue_key,
        mapping=req.mapping,
        run_id=container_id,
        run_name=req.run_name,
        dispatched_at=clock(),
        lifetime_seconds=3600,
    )


def _assert_container_timeout(state: RunState) -> None:
    assert state.phase is RunPhase.TIMED_OUT, state
    assert state.timeout_reason is TimeoutReason.CONTAINER_TIMEOUT
    assert state.log_label is LogLabel.CONTAINER_TIMEOUT


def test_a_failed_container_is_kept_until_its_job_has_ended(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    run = _started(backend, fake_engine, clock)
    clock.advance(minutes=3)
    fake_engine.exit(str(run.run_id), 1, b"git clone failed (exit 128)\n")

    [first] = backend.poll_runs([run])
    [again] = backend.poll_runs([run])  # another poller, or the next cycle

    for state in (first, again):
        assert state.phase is RunPhase.FAILED and state.exit_code == 1
        assert state.log_label is LogLabel.CONTAINER_FAILED
        assert "git clone failed" in (state.log_excerpt or "")
    assert run.run_id in fake_engine.containers
    backend.cleanup_job(run.job_id)  # the job ended
    assert fake_engine.containers == {}


def test_a_container_stopped_for_its_lifetime_stays_a_container_timeout(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    run = _started(backend, fake_engine, clock)
    fake_engine.print(str(run.run_id), b"agent running\n")
    clock.advance(minutes=61)

    [first] = backend.poll_runs([run])
    _assert_container_timeout(first)
    assert "agent running" in (first.log_excerpt or "") and "exceeded its lifetime of 3600 s" in (
        first.log_excerpt or ""
    )
    assert fake_engine.containers[str(run.run_id)]["ExitCode"] == 143

    clock.advance(minutes=1)
    [again] = backend.poll_runs([run])  # the stop's exit code is not read as the session's failure
    _assert_container_timeout(again)
    assert len(fake_engine.calls("POST", "/stop")) == 1
    backend.cleanup_job(run.job_id)
    assert fake_engine.containers == {}


def test_a_timeout_whose_read_failed_is_reported_by_the_next_poll(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    run = _started(backend, fake_engine, clock)
    clock.advance(minutes=61)
    fake_engine.fail_next("GET", "/logs", 500, "driver failed reading logs")

    assert backend.poll_runs([run]) == []  # stopped; not reported this cycle
    assert fake_engine.containers[str(run.run_id)]["State"] == "exited"

    [state] = backend.poll_runs([run])
    _assert_container_timeout(state)


def test_a_container_that_failed_before_its_lifetime_is_a_failure_when_read_later(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    run = _started(backend, fake_engine, clock)
    clock.advance(minutes=50)
    fake_engine.exit(str(run.run_id), 143)  # stopped by someone else, before its lifetime
    clock.advance(minutes=15)  # the reconciler was down for a while
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.FAILED and state.exit_code == 143


def test_with_a_short_lifetime_a_failure_well_before_its_end_is_a_failure(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    """The slack for the engine's clock was a minute whatever the lifetime: with a lifetime of
    120 s a session that failed at 70 s was reported as stopped for its lifetime, with 60 s or less
    every ending was. The slack is a tenth of the lifetime, a minute at most."""
    from dataclasses import replace

    run = replace(_started(backend, fake_engine, clock), lifetime_seconds=120)
    clock.advance(seconds=70)
    fake_engine.exit(str(run.run_id), 3, b"error: build broke\n")
    clock.advance(seconds=60)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.FAILED and state.exit_code == 3
    assert state.log_label is LogLabel.CONTAINER_FAILED

    late = replace(_started(backend, fake_engine, clock, job_id=6), lifetime_seconds=120)
    clock.advance(seconds=112)  # within the slack of its end (the engine's clock a little behind)
    fake_engine.exit(str(late.run_id), 143)
    clock.advance(seconds=30)
    [state] = backend.poll_runs([late])
    _assert_container_timeout(state)


def test_a_container_killed_for_its_memory_limit_says_so(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    run = _started(backend, fake_engine, clock)
    fake_engine.exit(run.run_id or "", 137, b"installing dependencies\n", oom_killed=True)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.FAILED and state.exit_code == 137
    assert state.detail == "the session container exited with code 137 (out of memory)"


def test_end_times_with_an_offset_are_read_as_such() -> None:
    from aiimpl_docker.backend import _parse_time

    assert _parse_time("2026-03-01T10:00:00.123456789+01:00") == _parse_time("2026-03-01T09:00:00.123456Z")


# -- inside the orchestrator ------------------------------------------------------------------------

TEAM_SECRET = "team-secret-3f8e1c/+=xyz"


@pytest.fixture
def local_job(
    app: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker, app_engine: FakeEngine
) -> Job:
    """ENG-1 dispatched in runner mode ``local``, with a team secret."""
    add_eng_mapping()
    resp = client.post(
        "/api/mappings/ENG/secrets", json={"name": "TEAM_TOKEN", "value": TEAM_SECRET}, headers=admin_headers
    )
    assert resp.status_code in (200, 201), resp.get_json()
    assert client.post("/api/runner-mode", json={"mode": "local"}, headers=admin_headers).status_code == 200
    tracker.add("ENG-1", title="Add a health endpoint")
    run_cycle(reconcile=False)
    job = db.session.scalars(db.select(Job)).one()
    assert job.backend == "local-docker" and job.run_id in app_engine.containers
    return job


def _age(job: Job, minutes: int) -> None:
    db.session.execute(
        db.update(Job).where(Job.id == job.id).values(dispatched_at=utcnow() - timedelta(minutes=minutes))
    )
    db.session.commit()


def _ended(job: Job) -> Job:
    run_cycle(reconcile=False)  # delivers the outbox
    db.session.expire_all()
    return db.session.get(Job, job.id)


def _until_removed(fake: FakeEngine) -> None:
    """The plugin removes an ended job's container in a background thread."""
    deadline = time.monotonic() + 10
    while fake.containers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.containers == {}


def test_a_second_poller_after_the_first_read_a_failure_still_reports_it(
    app: Any, local_job: Job, tracker: FakeTracker, app_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _age(local_job, 15)
    app_engine.exit(local_job.run_id, 1, b"git clone failed (exit 128)\n")
    answer = LocalDockerBackend.poll_runs
    polls: list[int] = []
    other_report: list[dict[str, Any]] = []

    def poll_runs(self: LocalDockerBackend, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        states = answer(self, runs)
        polls.append(len(runs))
        if len(polls) == 1:  # another process reconciles before this one records the failure

            def other() -> None:
                with app.app_context():
                    other_report.append(reconcile().as_dict())

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
        return states

    monkeypatch.setattr(LocalDockerBackend, "poll_runs", poll_runs)
    reconcile()

    job = _ended(local_job)
    assert other_report[0]["endings"] == {str(job.id): "failed"}
    assert (job.status, job.timeout_reason, job.log_label) == ("failed", None, "container_failed")
    comments = tracker.comments["ENG-1"]
    assert comments[0] == "⚠️ Implementation failed: the session container exited with code 1"
    assert "git clone failed" in comments[1]
    _until_removed(app_engine)


def test_a_lifetime_timeout_ends_the_job_and_then_removes_the_container(
    app: Any, local_job: Job, tracker: FakeTracker, app_engine: FakeEngine
) -> None:
    reconcile()
    _age(local_job, 61)
    app_engine.fail_next("GET", "/logs", 500, "driver failed reading logs")
    reconcile()  # stopped; reading it failed, so nothing is reported this cycle
    assert _ended(local_job).status == "running"
    reconcile()  # the next cycle reads the stopped container: the stop is not a failure

    job = _ended(local_job)
    assert (job.status, job.timeout_reason) == ("timed_out", "container_timeout")
    assert not any("exited with code" in c for c in tracker.comments["ENG-1"])
    _until_removed(app_engine)


def test_only_a_job_of_this_backend_that_ended_has_its_container_looked_for(
    app: Any, app_engine: FakeEngine
) -> None:
    """The plugin hears of every job's status change; a job another backend runs has no container
    here, and the engine is not asked (it was, once for every job that ended, whatever its backend)."""
    facade = app.extensions["aiimpl"]
    runner = facade.runner(LocalDockerBackend.id)
    asked = len(app_engine.requests)

    facade.job_status_changed(7, "ENG-7", JobStatus.RUNNING, JobStatus.COMPLETED, backend="github-actions")
    facade.job_status_changed(8, "ENG-8", JobStatus.DISPATCHED, JobStatus.RUNNING, backend=runner.id)
    assert runner._cleanups == [] and len(app_engine.requests) == asked

    facade.job_status_changed(9, "ENG-9", JobStatus.RUNNING, JobStatus.FAILED, backend=runner.id)
    [cleanup] = runner._cleanups
    cleanup.join(10)
    assert len(app_engine.requests) > asked  # its containers looked for


def test_a_destroyed_session_ends_its_linked_job_failed_not_run_not_found(
    app: Any,
    client: Any,
    admin_headers: dict[str, str],
    local_job: Job,
    tracker: FakeTracker,
    app_engine: FakeEngine,
) -> None:
    _age(local_job, 3)
    reconcile()
    assert _ended(local_job).status == "running"
    resp = client.delete(f"/api/sessions/{local_job.run_id}", headers=admin_headers)
    assert resp.status_code == 200, resp.get_json()
    _until_removed(app_engine)  # stopped (SIGTERM, the session's grace), then removed, in the background
    _age(local_job, 12)

    reconcile()

    job = _ended(local_job)
    assert (job.status, job.timeout_reason) == ("failed", None)
    assert tracker.comments["ENG-1"][0] == (
        f"⚠️ Implementation failed: the run {job.run_id} disappeared before it reported a result "
        "(its session was destroyed or removed)"
    )


def test_an_operators_cancel_answers_at_once_and_the_container_goes_once_its_work_is_saved(
    app: Any, client: Any, admin_headers: dict[str, str], local_job: Job, app_engine: FakeEngine
) -> None:
    _age(local_job, 3)
    reconcile()
    assert _ended(local_job).status == "running"
    container_id = str(local_job.run_id)
    saved = app_engine.hold_stop(container_id, exit_code=0)  # the session commits, pushes, reports

    started = time.monotonic()
    resp = client.post(f"/api/jobs/{local_job.id}/cancel", headers=admin_headers)
    assert resp.status_code == 200, resp.get_json()
    # the request does not wait for the session's grace (the stop is held up to its 120 s); the bound
    # leaves room for a loaded machine (2.3 s seen with the suite on every core)
    assert time.monotonic() - started < 10

    assert _ended(local_job).status == "failed"
    deadline = time.monotonic() + 30  # (the stop is sent from a thread of its own)
    while not app_engine.stops(container_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app_engine.stops(container_id) == [{"t": ["120"]}]
    time.sleep(0.2)
    # neither the cancel nor the clean-up of the ended job removes it while its session saves its work
    assert container_id in app_engine.containers

    saved.set()
    _until_removed(app_engine)
    assert app_engine.signals == [(container_id, "SIGTERM")]


def test_the_posted_excerpt_is_masked_of_encoded_secrets(
    app: Any, local_job: Job, tracker: FakeTracker, app_engine: FakeEngine
) -> None:
    env = dict(e.split("=", 1) for e in app_engine.containers[local_job.run_id]["Config"]["Env"])
    assert env["TEAM_TOKEN"] == TEAM_SECRET
    encoded = quote(TEAM_SECRET, safe="")
    basic = base64.b64encode(f"x-access-token:{TEAM_SECRET}".encode()).decode()  # git over HTTPS
    output = (
        f"fatal: unable to access 'https://x:{encoded}@git.example/acme/api.git/'\n"
        f"Authorization: Basic {basic}\n"
        f"plain: {TEAM_SECRET}\n"
    ).encode()
    app_engine.exit(local_job.run_id, 1, output)

    reconcile()

    job = _ended(local_job)
    assert job.status == "failed"
    posted = "\n".join(tracker.comments["ENG-1"])
    assert "fatal: unable to access" in posted
    for form in (TEAM_SECRET, encoded, basic):
        assert form not in posted and form not in (job.log_excerpt or ""), form


def test_a_container_that_does_not_start_is_removed_with_its_secrets(
    backend: LocalDockerBackend, fake_engine: FakeEngine
) -> None:
    secret = "team-secret-value-0d4e"
    fake_engine.fail_next("POST", "/start", 500, "OCI runtime create failed: exec: no such file or directory")
    req = sample_dispatch_request(
        9,
        mapping=sample_mapping(),
        env={"AIIMPL_JOB_ID": "9", "TEAM_TOKEN": secret, "AIIMPL_SECRET_NAMES": "TEAM_TOKEN"},
        secret_names=frozenset({"TEAM_TOKEN"}),
    )
    with pytest.raises(DispatchError) as info:
        backend.dispatch(req)
    assert info.value.status == 500 and "no such file" in info.value.message
    # the created container held the session's environment: nothing of it is left on the engine
    assert fake_engine.containers == {}
    assert len(fake_engine.calls("DELETE")) == 1


def test_a_missing_image_leaves_nothing_to_remove(
    backend: LocalDockerBackend, fake_engine: FakeEngine
) -> None:
    del fake_engine.images[IMAGE]  # the engine does not have it, and cannot pull it
    with pytest.raises(DispatchError) as info:
        backend.dispatch(sample_dispatch_request(10, mapping=sample_mapping()))
    assert info.value.status == 404 and "pull access denied" in info.value.message
    posted = [path.rsplit("/", 2)[-2:] for method, path in fake_engine.requests if method == "POST"]
    assert posted == [["containers", "create"], ["images", "create"]]  # created, then pulled: neither
    assert fake_engine.containers == {}


@pytest.mark.parametrize("command", ["sh -c 'echo unfinished", "sh -c echo\\"])
def test_a_command_setting_that_is_not_shell_words_is_named(
    fake_engine: FakeEngine, clock: Clock, command: str
) -> None:
    # an unclosed quote in AIIMPL_DOCKER_COMMAND: the job's failure and `aiimpl check` name the
    # setting, not an unexpected ValueError the operator can only find in the server log
    fake_engine.images[IMAGE] = "sha256:" + "5e" * 32
    backend = LocalDockerBackend(
        make_context({"AIIMPL_DOCKER_IMAGE": IMAGE, "AIIMPL_DOCKER_COMMAND": command}, clock=clock)
    )
    with pytest.raises(ProviderConfigError, match="AIIMPL_DOCKER_COMMAND is not a command line"):
        backend.dispatch(sample_dispatch_request(12, mapping=sample_mapping()))
    assert fake_engine.containers == {}
    *_, settings = backend.check([])
    assert not settings.ok and settings.name == "settings"
    assert settings.detail.startswith("AIIMPL_DOCKER_COMMAND is not a command line of shell words: ")


@pytest.mark.parametrize("grace", ["-5", "abc", "1.5", "3601"])
def test_a_stop_grace_that_is_not_valid_is_named_by_the_check(fake_engine: FakeEngine, clock: Clock,
                                                              grace: str) -> None:
    """A stop uses the default then, with a warning in the log when one comes: said before."""
    fake_engine.images[IMAGE] = "sha256:" + "5e" * 32
    backend = LocalDockerBackend(
        make_context({"AIIMPL_DOCKER_IMAGE": IMAGE, "AIIMPL_DOCKER_STOP_GRACE_SECONDS": grace}, clock=clock))
    *_, settings = backend.check([])
    assert (settings.name, settings.ok) == ("settings", False)
    assert settings.detail == (f"AIIMPL_DOCKER_STOP_GRACE_SECONDS must be a whole number of seconds from 0 "
                               f"to 3600, not {grace!r} (a stop uses 120 s meanwhile)")


def test_spaces_around_the_network_setting_are_not_part_of_it(fake_engine: FakeEngine, clock: Clock) -> None:
    """The check read " host" as host; the dispatch asked the engine for a network " host"."""
    fake_engine.images[IMAGE] = "sha256:" + "5e" * 32
    backend = LocalDockerBackend(
        make_context({"AIIMPL_DOCKER_IMAGE": IMAGE, "AIIMPL_DOCKER_NETWORK": " host "}, clock=clock))
    run_id = backend.dispatch(sample_dispatch_request(13, mapping=sample_mapping())).run_id
    assert fake_engine.containers[run_id]["Requested"]["NetworkMode"] == "host"
