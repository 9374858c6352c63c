"""The ``local-docker`` backend on a real Docker-API engine, with busybox commands."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiimpl_core.errors import DispatchError, ProviderConfigError
from aiimpl_core.testing.contract import (
    RunnerBackendContract,
    make_context,
    sample_dispatch_request,
    sample_in_flight_run,
    sample_mapping,
)
from aiimpl_core.types import DispatchRequest, InFlightRun, LogLabel, RunPhase, TimeoutReason

from aiimpl_docker.backend import LocalDockerBackend, parse_volumes, redact

from .conftest import INSTANCE, Clock, docker_config, ours, wait_exited

SECRET = "team-secret-value-9z"


def request_for(job_id: int = 11, **kw: Any) -> DispatchRequest:
    mapping = kw.pop("mapping", None) or sample_mapping(session_mode="interactive")
    env = {
        "AIIMPL_URL": "http://orchestrator.test",
        "AIIMPL_JOB_ID": str(job_id),
        "AIIMPL_NONCE": "nonce-xyz",
        "TEAM_TOKEN": SECRET,
        "AIIMPL_SECRET_NAMES": "AIIMPL_NONCE,TEAM_TOKEN",
    }
    return sample_dispatch_request(
        job_id, mapping=mapping, env=env, secret_names=frozenset({"AIIMPL_NONCE", "TEAM_TOKEN"}), **kw
    )


def in_flight(req: DispatchRequest, run_id: str | None, clock: Clock, lifetime: int = 3600) -> InFlightRun:
    return sample_in_flight_run(req, run_id=run_id, dispatched_at=clock(), lifetime_seconds=lifetime)


#: a session that outlasts the contract's wait after a cancel: one that ended by itself would pass
#: for a cancel that stopped nothing (every contract test cancels the runs it dispatched)
CONTRACT_SESSION = "sh -c 'sleep 120'"


class TestDockerContract(RunnerBackendContract):
    @pytest.fixture
    def runner_backend(self, make_backend: Any) -> LocalDockerBackend:
        return make_backend(CONTRACT_SESSION)

    @pytest.fixture
    def another_runner_backend(self, make_backend: Any) -> LocalDockerBackend:
        # (made by make_backend, whose end waits for the stops its cancels started)
        return make_backend(CONTRACT_SESSION)

    @pytest.fixture
    def dispatch_request(self) -> DispatchRequest:
        return request_for()

    @pytest.fixture
    def contract_session_env(self, engine: Any) -> Any:
        def env(run: InFlightRun) -> dict[str, str]:
            listed = engine.containers.get(run.run_id).attrs["Config"]["Env"] or []
            return dict(item.split("=", 1) for item in listed)
        return env

    @pytest.fixture
    def contract_run_metadata(self, engine: Any) -> Any:
        """What ``docker ps`` shows of a container to whoever may list the engine's: its name,
        image, command and labels."""
        def shown(run: InFlightRun) -> dict[str, Any]:
            attrs = engine.containers.get(run.run_id).attrs
            config = attrs.get("Config") or {}
            return {"Name": attrs.get("Name"), "Path": attrs.get("Path"), "Args": attrs.get("Args"),
                    **{key: config.get(key) for key in ("Image", "Cmd", "Entrypoint", "Labels")}}
        return shown


def test_flags() -> None:
    assert LocalDockerBackend.id == "local-docker" and LocalDockerBackend.runner_mode == "local"
    # chosen by runner mode only: the executionMode message stays the reference's
    assert LocalDockerBackend.mapping_selectable is False
    assert LocalDockerBackend.supports_sessions and LocalDockerBackend.supports_secrets


def test_success_reports_succeeded_and_keeps_the_container_until_the_job_ends(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    backend = make_backend("sh -c 'echo hello from job $AIIMPL_JOB_ID'")
    req = request_for(11)
    run_id = backend.dispatch(req).run_id
    wait_exited(engine, run_id)

    [state] = backend.poll_runs([in_flight(req, run_id, clock)])

    assert state.phase is RunPhase.SUCCEEDED and state.exit_code == 0 and state.run_id == run_id
    assert "hello from job 11" in (state.log_excerpt or "")
    # every poller sees the ended run until the job ends (the core waits a grace period for its result)
    [again] = backend.poll_runs([in_flight(req, run_id, clock)])
    assert again.phase is RunPhase.SUCCEEDED
    assert [c.id for c in ours(engine)] == [run_id]

    backend.cleanup_job(11)  # the job ended
    assert ours(engine) == []


def test_a_container_of_the_same_job_number_for_another_issue_is_not_the_runs(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    """A database restored (or reset) numbers jobs again: job 41 of ENG-2, its dispatch unanswered,
    is not the old container of job 41 of ENG-1, which the poll linked (and read the outcome of)
    and a cancel stopped."""
    backend = make_backend("sh -c 'sleep 30'")
    old = backend.dispatch(request_for(41)).run_id
    run = in_flight(dataclasses.replace(request_for(41), issue_key="ENG-2"), None, clock)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.NOT_FOUND
    backend.cancel(run)
    [container] = ours(engine)
    container.reload()
    assert (container.id, container.status) == (old, "running")
    # the run of the container's own job and issue is found
    mine = in_flight(request_for(41), None, clock)
    [state] = backend.poll_runs([mine])
    assert state.run_id == old
    backend.cancel(mine)
    backend.cleanup_job(41)


def test_a_container_of_the_same_job_number_and_issue_made_before_the_dispatch_is_not_the_runs(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    """The same issue triggered again after a restore: job 42 of ENG-1, its dispatch unanswered,
    is not the container job 42 of ENG-1 made before its dispatch, which the poll linked and a
    cancel stopped."""
    backend = make_backend("sh -c 'sleep 30'")
    old = backend.dispatch(request_for(42)).run_id
    clock.advance(minutes=30)
    run = in_flight(request_for(42), None, clock)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.NOT_FOUND
    backend.cancel(run)
    [container] = ours(engine)
    container.reload()
    assert (container.id, container.status) == (old, "running")
    backend.cancel(in_flight(request_for(42), old, clock))
    backend.cleanup_job(42)


def test_cleanup_waits_for_a_container_still_finishing(engine: Any, make_backend: Any) -> None:
    backend = make_backend("sh -c 'sleep 1; exit 4'")
    backend.dispatch(request_for(21))
    started = time.monotonic()
    backend.cleanup_job(21)  # the result came in; the session is still cleaning up
    assert time.monotonic() - started >= 0.5  # it waited for the exit
    assert ours(engine) == []


def test_non_zero_exit_is_container_failed_with_a_redacted_excerpt(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    backend = make_backend(
        "sh -c 'echo token is $TEAM_TOKEN; echo nonce $AIIMPL_NONCE; echo boom >&2; exit 3'"
    )
    req = request_for(12)
    run_id = backend.dispatch(req).run_id
    wait_exited(engine, run_id)

    [state] = backend.poll_runs([in_flight(req, run_id, clock)])

    assert state.phase is RunPhase.FAILED and state.exit_code == 3
    assert state.log_label is LogLabel.CONTAINER_FAILED
    assert state.detail == "the session container exited with code 3"
    excerpt = state.log_excerpt or ""
    assert "boom" in excerpt and "token is ***" in excerpt and "nonce ***" in excerpt
    assert SECRET not in excerpt and "nonce-xyz" not in excerpt
    # kept until the job has ended: another poll reads the same failure
    assert [c.id for c in ours(engine)] == [run_id]
    backend.cleanup_job(12)
    assert ours(engine) == []


def test_a_container_past_its_lifetime_is_stopped_and_timed_out(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    # `sleep & wait` lets the shell (PID 1) act on SIGTERM at once
    backend = make_backend("sh -c 'echo working; trap \"exit 143\" TERM; sleep 60 & wait'")
    req = request_for(13)
    run_id = backend.dispatch(req).run_id
    run = in_flight(req, run_id, clock, lifetime=3600)

    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.RUNNING

    clock.advance(minutes=61)
    [state] = backend.poll_runs([run])

    assert state.phase is RunPhase.TIMED_OUT
    assert state.timeout_reason is TimeoutReason.CONTAINER_TIMEOUT
    assert state.log_label is LogLabel.CONTAINER_TIMEOUT
    assert "working" in (state.log_excerpt or "") and "exceeded its lifetime of 3600 s" in (
        state.log_excerpt or ""
    )
    # stopped, and kept until the job has ended
    assert [(c.id, c.status) for c in ours(engine)] == [(run_id, "exited")]
    backend.cleanup_job(13)
    assert ours(engine) == []


def test_a_paused_container_past_its_lifetime_is_stopped_too(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    """A container paused by hand (`docker pause`) past its lifetime: the engine refuses to stop
    it paused (Podman: "container state improper"), so each poll waited out the stop's timeout and
    the job stayed running until the overrun's cancel. It is resumed, then stopped."""
    import time

    backend = make_backend("sh -c 'trap \"exit 143\" TERM; sleep 60 & wait'")
    req = request_for(41)
    run_id = backend.dispatch(req).run_id
    run = in_flight(req, run_id, clock, lifetime=3600)
    engine.containers.get(run_id).pause()
    clock.advance(minutes=61)
    started = time.monotonic()
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.TIMED_OUT, state
    assert state.timeout_reason is TimeoutReason.CONTAINER_TIMEOUT
    assert time.monotonic() - started < 8  # (the stop's own timeout is 10 s)
    assert [(c.id, c.status) for c in ours(engine)] == [(run_id, "exited")]
    backend.cleanup_job(41)
    assert ours(engine) == []


def test_labels_env_and_limits(engine: Any, make_backend: Any, clock: Clock) -> None:
    backend = make_backend("sh -c 'sleep 30 & wait'")
    mapping = sample_mapping(machine_cpus=1, machine_memory_mb=512, session_mode="hybrid")
    req = request_for(14, mapping=mapping)
    run_id = backend.dispatch(req).run_id
    try:
        attrs = engine.containers.get(run_id).attrs
        labels = attrs["Config"]["Labels"]
        assert {k: v for k, v in labels.items() if k.startswith("aiimpl.")} == {
            "aiimpl.job": "14",
            "aiimpl.issue": "ENG-1",
            "aiimpl.phase": "implementation",
            "aiimpl.session-mode": "hybrid",
            "aiimpl.backend": "local-docker",
            "aiimpl.instance": INSTANCE,
        }
        assert SECRET not in repr(labels) and SECRET not in attrs["Name"]
        env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        assert env["TEAM_TOKEN"] == SECRET and env["AIIMPL_SESSION_MODE"] == "hybrid"
        assert attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
        assert attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
        assert attrs["HostConfig"].get("AutoRemove") in (False, None)

        [session] = backend.list_sessions()
        assert (session.id, session.backend, session.job_id, session.issue_key) == (
            run_id,
            "local-docker",
            14,
            "ENG-1",
        )
        assert session.state == "running" and SECRET not in repr(session)
    finally:
        backend.cancel(in_flight(req, run_id, clock))
    assert backend.wait_for_stops(timeout=30)  # SIGTERM, ignored by the shell (PID 1): its 2 s grace
    assert ours(engine) == []


def test_sessions_destroy_only_ours(engine: Any, make_backend: Any) -> None:
    backend = make_backend("sh -c 'sleep 30 & wait'")
    run_id = backend.dispatch(request_for(15)).run_id
    foreign = engine.containers.run(
        "localhost/bbox:latest",
        ["sh", "-c", "sleep 30 & wait"],
        detach=True,
        labels={"aiimpl.job": "99", "aiimpl.instance": "someone-else"},
    )
    try:
        assert backend.destroy_session(foreign.id) is False
        assert backend.destroy_session("0" * 64) is False
        assert engine.containers.get(foreign.id).status == "running"
        assert backend.destroy_session(run_id) is True
        # listed while it stops (Podman's `stopping` left out of the engine's running listing: the
        # session vanished at once, though it runs up to its grace yet)
        [stopping] = backend.list_sessions()
        assert stopping.id == run_id and stopping.state in ("stopping", "running")
        assert backend.wait_for_stops(timeout=30)
        assert ours(engine) == [] and backend.list_sessions() == []
    finally:
        foreign.remove(force=True)


def test_ended_containers_of_finished_jobs_are_swept(engine: Any, make_backend: Any, clock: Clock) -> None:
    backend = make_backend("sh -c 'exit 0'")
    orphan = backend.dispatch(request_for(16)).run_id  # its job ended through /runner/result
    wait_exited(engine, orphan)
    req = request_for(17)
    current = backend.dispatch(req).run_id
    wait_exited(engine, current)

    # a young ended container may be a job launched after this cycle read its jobs: left alone
    backend.poll_runs([in_flight(req, current, clock)])
    assert {c.id for c in ours(engine)} == {orphan, current}

    clock.advance(minutes=6)
    states = backend.poll_runs([in_flight(req, current, clock)])

    assert [s.job_id for s in states] == [17]
    assert [c.id for c in ours(engine)] == [current]  # its job is still in flight
    backend.cleanup_job(17)
    assert ours(engine) == []


def test_with_no_job_in_flight_a_sweep_removes_what_ended_jobs_left(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    backend = make_backend("sh -c 'exit 0'")
    orphan = backend.dispatch(request_for(20)).run_id  # its clean-up died with its process
    wait_exited(engine, orphan)

    backend.sweep(3600)  # young: it may be a job being dispatched right now
    assert [c.id for c in ours(engine)] == [orphan]
    clock.advance(minutes=6)
    backend.sweep(3600)
    assert ours(engine) == []


def test_unknown_run_is_not_found(make_backend: Any, clock: Clock) -> None:
    backend = make_backend()
    [state] = backend.poll_runs([in_flight(request_for(18), "f" * 64, clock)])
    assert state.phase is RunPhase.NOT_FOUND


def test_a_missing_image_is_a_dispatch_error(make_backend: Any) -> None:
    backend = make_backend(AIIMPL_DOCKER_IMAGE="localhost/no-such-image:latest")
    with pytest.raises(DispatchError) as info:
        backend.dispatch(request_for(19))
    assert "no-such-image" in info.value.message and SECRET not in info.value.message


def test_a_container_that_cannot_start_is_not_left_behind(make_backend: Any) -> None:
    # the engine creates the container, then refuses to start its entrypoint: the container, which
    # holds the session's secrets, goes too (no_leftovers fails the test otherwise)
    backend = make_backend("/no/such/entrypoint")
    with pytest.raises(DispatchError) as info:
        backend.dispatch(request_for(21))
    assert "/no/such/entrypoint" in info.value.message and SECRET not in info.value.message


def test_unreachable_engine_is_a_dispatch_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    backend = LocalDockerBackend(make_context(docker_config()))
    with caplog.at_level("INFO"), pytest.raises(DispatchError) as info:
        backend.dispatch(request_for(20))
    # the request never reached an engine: the job fails (not DispatchUnanswered, which waits for it)
    assert type(info.value) is DispatchError and info.value.status is None
    # and no container was made: none is said to be removed, nor its removal to have failed
    assert not [r for r in caplog.records if "removing container" in r.getMessage()], caplog.text


def test_not_configured_lists_no_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiimpl_docker.backend as module

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(module.os.path, "exists", lambda path: False)
    backend = LocalDockerBackend(make_context(docker_config()))
    assert backend.is_configured() is False
    assert backend.list_sessions() == []


def test_redact_replaces_listed_secret_values_only() -> None:
    env = {"AIIMPL_SECRET_NAMES": "A,B", "A": "alpha-secret", "B": "alpha-secret-longer", "C": "visible"}
    assert redact("x alpha-secret-longer y alpha-secret z visible", env) == "x *** y *** z visible"


def test_redact_leaves_values_too_short_to_be_secrets_alone() -> None:
    """A team secret `a` (a region, a flag) turned every `a` of an excerpt into `***`: values under
    six characters are not masked, as in the orchestrator's and the session's masking."""
    env = {"AIIMPL_SECRET_NAMES": "REGION,TOKEN", "REGION": "a", "TOKEN": "s3cr3t"}
    assert redact("error: assertion failed with s3cr3t", env) == "error: assertion failed with ***"


def test_volumes_are_parsed_and_checked() -> None:
    assert parse_volumes("/a:/b:ro, /c:/d") == {
        "/a": {"bind": "/b", "mode": "ro"},
        "/c": {"bind": "/d", "mode": "rw"},
    }
    with pytest.raises(ProviderConfigError, match="AIIMPL_DOCKER_VOLUMES"):
        parse_volumes("/a")
    # a name, not a path: the engine made a volume of that name, which nothing removed
    with pytest.raises(ProviderConfigError, match="the host part must be an absolute path"):
        parse_volumes("cache:/cache")


def test_a_removed_container_takes_the_anonymous_volumes_of_its_image(engine: Any, make_backend: Any) -> None:
    """An image that declares a VOLUME left a volume behind after every job."""
    import io

    from .conftest import BUSYBOX

    tag = "localhost/aiimpl-test-volume:1"
    engine.images.build(fileobj=io.BytesIO(f"FROM {BUSYBOX}\nVOLUME /data\n".encode()), tag=tag, rm=True)
    before = {v.id for v in engine.volumes.list()}
    try:
        backend = make_backend("true", AIIMPL_DOCKER_IMAGE=tag)
        run_id = backend.dispatch(request_for(31)).run_id
        wait_exited(engine, run_id)
        backend.cleanup_job(31)
        assert ours(engine) == []
        assert {v.id for v in engine.volumes.list()} - before == set()
    finally:
        engine.images.remove(tag, force=True)


def test_timestamps_of_the_engine_are_read() -> None:
    from aiimpl_docker.backend import _parse_time

    assert _parse_time("2026-11-29T05:46:59.119002981Z") == datetime(
        2026, 11, 29, 5, 46, 59, 119002, tzinfo=UTC
    )
    assert _parse_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
