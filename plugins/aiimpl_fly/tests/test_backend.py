"""The ``fly-machines`` backend against the fake Machines API.

Every exchange is checked against Fly's Swagger description (the ``fake_fly`` fixture fails the
test at teardown on any violation).
"""

from __future__ import annotations

import dataclasses
import json
import socket
from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.errors import DispatchError, DispatchUnanswered, ProviderError
from aiimpl_core.http import HttpClient
from aiimpl_core.testing.contract import (
    RunnerBackendContract,
    make_context,
    sample_dispatch_request,
    sample_in_flight_run,
    sample_mapping,
)
from aiimpl_core.types import DispatchRequest, InFlightRun, LogLabel, RunPhase, TimeoutReason

from aiimpl_fly.backend import FlyMachinesBackend
from aiimpl_fly.testing import FakeFly

from .conftest import APP, TOKEN, Clock

SECRET = "sk-team-secret-value-123"


def request_for(job_id: int = 7, **kw: Any) -> DispatchRequest:
    mapping = sample_mapping(
        machine_cpus=4, machine_memory_mb=2048, session_mode="hybrid", extra_env={"FOO": "bar"}
    )
    env = {
        "AIIMPL_URL": "http://orchestrator.test",
        "AIIMPL_JOB_ID": str(job_id),
        "AIIMPL_NONCE": "nonce-abc",
        "AIIMPL_SESSION_MODE": "hybrid",
        "FOO": "bar",
        "TEAM_TOKEN": SECRET,
        "AIIMPL_SECRET_NAMES": "AIIMPL_NONCE,TEAM_TOKEN",
    }
    return sample_dispatch_request(
        job_id, mapping=mapping, env=env, secret_names=frozenset({"AIIMPL_NONCE", "TEAM_TOKEN"}), **kw
    )


def in_flight(req: DispatchRequest, run_id: str | None, clock: Clock, lifetime: int = 3600) -> InFlightRun:
    return sample_in_flight_run(req, run_id=run_id, dispatched_at=clock(), lifetime_seconds=lifetime)


class TestFlyContract(RunnerBackendContract):
    @pytest.fixture
    def runner_backend(self, backend: FlyMachinesBackend) -> FlyMachinesBackend:
        return backend

    @pytest.fixture
    def dispatch_request(self) -> DispatchRequest:
        return request_for()

    @pytest.fixture
    def contract_session_env(self, fake_fly: FakeFly) -> Any:
        return lambda run: fake_fly.machines[run.run_id]["config"]["env"]

    @pytest.fixture
    def contract_run_metadata(self, fake_fly: FakeFly) -> Any:
        """What anyone listing the app's machines sees of one besides its environment: its name,
        region, image, command and metadata."""
        def shown(run: InFlightRun) -> dict[str, Any]:
            machine = fake_fly.machines[run.run_id]
            config = machine["config"]
            return {"name": machine.get("name"), "region": machine.get("region"),
                    **{key: config.get(key) for key in ("image", "init", "metadata")}}
        return shown


def test_flags_and_identity() -> None:
    assert FlyMachinesBackend.id == "fly-machines" and FlyMachinesBackend.runner_mode == "fly"
    assert FlyMachinesBackend.mapping_selectable and FlyMachinesBackend.supports_sessions
    assert FlyMachinesBackend.supports_secrets
    token_var = next(v for v in FlyMachinesBackend.config_vars if v.name == "AIIMPL_FLY_API_TOKEN")
    assert token_var.sensitive


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, False),
        ({"AIIMPL_FLY_API_TOKEN": "t"}, False),
        ({"AIIMPL_FLY_APP": "a"}, False),
        ({"AIIMPL_FLY_API_TOKEN": "t", "AIIMPL_FLY_APP": "a"}, True),
    ],
)
def test_is_configured_needs_token_and_app(config: dict[str, str], expected: bool) -> None:
    assert FlyMachinesBackend(make_context(config)).is_configured() is expected


def test_dispatch_creates_one_machine_as_described(backend: FlyMachinesBackend, fake_fly: FakeFly) -> None:
    result = backend.dispatch(request_for(7))

    [create] = fake_fly.server.requests_to("POST", f"/apps/{APP}/machines")
    assert create.header("Authorization") == f"Bearer {TOKEN}"
    body = create.json
    config = body["config"]
    assert body["region"] == "ams" and body["name"] == "aiimpl-job-7"
    assert config["image"] == "registry.fly.io/aiimpl-session:v1"
    assert config["guest"] == {"cpu_kind": "shared", "cpus": 4, "memory_mb": 2048}
    assert config["restart"] == {"policy": "no"} and config["auto_destroy"] is True
    # a stop of Fly's or an operator's leaves the session its stop path (Fly's default: SIGINT, 5 s)
    assert config["stop_config"] == {"signal": "SIGTERM", "timeout": "120s"}
    assert config["env"]["TEAM_TOKEN"] == SECRET and config["env"]["FOO"] == "bar"
    assert config["env"]["AIIMPL_SESSION_MODE"] == "hybrid"
    assert config["metadata"] == {
        "aiimpl_job": "7",
        "aiimpl_issue": "ENG-1",
        "aiimpl_phase": "implementation",
        "aiimpl_session_mode": "hybrid",
        "aiimpl_instance": "default",
    }
    [machine] = fake_fly.live()
    assert result.run_id == machine["id"] and result.linked
    assert result.run_url == f"https://fly.io/apps/{APP}/machines/{machine['id']}"
    # the comments link that page, the machine's logs (not the app's page of every machine)
    assert "AIIMPL_LOG_URL" not in config["env"]


def test_secrets_reach_only_the_machine_env(
    backend: FlyMachinesBackend, fake_fly: FakeFly, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    result = backend.dispatch(request_for(7))
    [create] = fake_fly.server.requests_to("POST", "/machines")
    config = dict(create.json["config"])
    assert config.pop("env")["TEAM_TOKEN"] == SECRET
    assert SECRET not in repr(config) and SECRET not in repr(create.json.get("name"))
    assert SECRET not in caplog.text and "nonce-abc" not in caplog.text and TOKEN not in caplog.text
    sessions = backend.list_sessions()
    assert SECRET not in repr(sessions) and SECRET not in repr(result)


def test_poll_reports_every_run_from_one_list_call(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    reqs = [request_for(job) for job in (1, 2, 3, 4, 5)]
    ids = [backend.dispatch(r).run_id for r in reqs]
    fake_fly.start(ids[1])
    fake_fly.start(ids[2])
    fake_fly.exit(ids[2], 0)
    fake_fly.start(ids[3])
    fake_fly.exit(ids[3], 1)
    runs = [in_flight(r, i, clock) for r, i in zip(reqs, ids, strict=True)]
    runs.append(in_flight(request_for(6), None, clock))  # never created
    before = len(fake_fly.server.requests)

    states = {s.job_id: s for s in backend.poll_runs(runs)}

    calls = fake_fly.server.requests[before:]
    assert [(c.method, c.path, c.query) for c in calls] == [
        ("GET", f"/v1/apps/{APP}/machines", {"include_deleted": ["true"]})
    ]
    assert states[1].phase is RunPhase.PENDING and states[1].run_id == ids[0]
    assert states[2].phase is RunPhase.RUNNING
    assert states[3].phase is RunPhase.SUCCEEDED and states[3].exit_code == 0
    assert states[4].phase is RunPhase.FAILED and states[4].exit_code == 1
    assert states[4].log_label is LogLabel.SESSION_FAILED and "exited with code 1" in (states[4].detail or "")
    assert states[5].phase is RunPhase.PENDING
    assert states[6].phase is RunPhase.NOT_FOUND


@pytest.mark.parametrize(
    ("state", "detail"),
    [
        ("failed", "Fly could not start the session machine (state failed; its events say why)"),
        ("suspended", "the session machine was suspended before it finished"),
        ("destroyed", "the session machine is destroyed without an exit status"),
    ],
)
def test_a_machine_ended_without_an_exit_says_how(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock, state: str, detail: str
) -> None:
    req = request_for(12)
    machine_id = backend.dispatch(req).run_id
    fake_fly.machines[machine_id]["state"] = state  # as Fly lists it: no exit event
    [run_state] = backend.poll_runs([in_flight(req, machine_id, clock)])
    assert run_state.phase is RunPhase.FAILED and run_state.exit_code is None
    assert run_state.detail == detail and run_state.log_label is LogLabel.SESSION_FAILED
    assert detail in (run_state.log_excerpt or "")


def test_run_is_found_by_job_metadata_before_it_is_linked(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    req = request_for(9)
    machine_id = backend.dispatch(req).run_id
    fake_fly.start(machine_id)
    [state] = backend.poll_runs([in_flight(req, None, clock)])
    assert state.phase is RunPhase.RUNNING and state.run_id == machine_id


def test_machine_past_its_lifetime_is_stopped_destroyed_and_timed_out(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    req = request_for(3)
    machine_id = backend.dispatch(req).run_id
    fake_fly.start(machine_id)
    run = in_flight(req, machine_id, clock, lifetime=3600)

    clock.advance(minutes=59)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.RUNNING and fake_fly.machines[machine_id]["state"] == "started"

    clock.advance(minutes=2)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.TIMED_OUT
    assert (
        state.timeout_reason is TimeoutReason.MACHINE_TIMEOUT and state.log_label is LogLabel.MACHINE_TIMEOUT
    )
    assert "exceeded its lifetime of 3600 s" in (state.log_excerpt or "")
    assert fake_fly.server.requests_to("POST", f"/machines/{machine_id}/stop")
    [destroy] = fake_fly.server.requests_to("DELETE", f"/machines/{machine_id}")
    assert destroy.query == {"force": ["true"]}
    assert fake_fly.machines[machine_id]["state"] == "destroyed" and fake_fly.live() == []


def test_a_failed_stop_keeps_the_run_running_for_the_next_cycle(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    req = request_for(3)
    machine_id = backend.dispatch(req).run_id
    fake_fly.start(machine_id)
    fake_fly.fail_next("DELETE", f"/machines/{machine_id}", 409, "machine is busy")
    run = InFlightRun(
        job_id=3,
        phase=req.phase,
        issue_key=req.issue_key,
        mapping=req.mapping,
        run_id=machine_id,
        run_name=req.run_name,
        dispatched_at=clock() - timedelta(hours=2),
        lifetime_seconds=3600,
    )
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.RUNNING
    assert fake_fly.live()


@pytest.mark.parametrize("status", [400, 412, 500])
def test_a_refused_stop_still_destroys_the_machine(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock, status: int
) -> None:
    """A machine Fly will not stop (still being created, held in another state, Fly failing):
    the forced destroy ends it all the same, and with it the secrets in its environment."""
    req = request_for(3)
    machine_id = backend.dispatch(req).run_id
    fake_fly.start(machine_id)
    fake_fly.fail_next("POST", f"/machines/{machine_id}/stop", status, "machine cannot be stopped now")
    run = InFlightRun(
        job_id=3, phase=req.phase, issue_key=req.issue_key, mapping=req.mapping, run_id=machine_id,
        run_name=req.run_name, dispatched_at=clock() - timedelta(hours=2), lifetime_seconds=3600,
    )
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.TIMED_OUT
    [destroy] = fake_fly.server.requests_to("DELETE", f"/machines/{machine_id}")
    assert destroy.query == {"force": ["true"]}
    assert fake_fly.machines[machine_id]["state"] == "destroyed" and fake_fly.live() == []


def test_old_machines_of_ended_jobs_are_swept(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    held = backend.dispatch(request_for(1)).run_id  # an interactive session held open after its job ended
    fake_fly.start(held)
    clock.advance(minutes=61)
    req = request_for(2)
    current = backend.dispatch(req).run_id
    backend.poll_runs([in_flight(req, current, clock)])
    assert fake_fly.machines[held]["state"] == "destroyed"
    assert fake_fly.machines[current]["state"] == "created"


def test_with_no_job_in_flight_a_sweep_destroys_what_ended_jobs_left(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    held = backend.dispatch(request_for(1)).run_id  # an interactive session held open after its job ended
    fake_fly.start(held)
    failed = backend.dispatch(request_for(2)).run_id  # Fly could not start it; it keeps its config
    fake_fly.machines[failed]["state"] = "failed"
    foreign = _create_foreign(fake_fly)
    clock.advance(minutes=59)
    young = backend.dispatch(request_for(3)).run_id  # a job being dispatched right now

    backend.sweep(3600)
    assert fake_fly.live() != [] and fake_fly.machines[held]["state"] == "started"  # not yet past it
    clock.advance(minutes=2)
    backend.sweep(3600)

    assert fake_fly.machines[held]["state"] == "destroyed"
    assert fake_fly.machines[failed]["state"] == "destroyed"
    assert fake_fly.machines[young]["state"] == "created"
    assert fake_fly.machines[foreign]["state"] != "destroyed"  # not ours


def test_a_machine_that_ended_without_being_destroyed_is_swept_minutes_later(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    """One Fly could not start (failed) or suspended is not destroyed by itself: once its job
    ended, it kept the session's environment, secrets included, until the lifetime sweep (an hour
    after its creation). A machine a run still asks about is left to the run."""
    failed = backend.dispatch(request_for(60)).run_id
    fake_fly.machines[failed]["state"] = "failed"
    fake_fly.machines[failed]["updated_at"] = clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    req = request_for(61)
    asked = backend.dispatch(req).run_id
    fake_fly.machines[asked]["state"] = "suspended"
    running = backend.dispatch(request_for(62)).run_id
    fake_fly.start(running)  # (its job ended: an interactive session held open)
    clock.advance(minutes=4)
    backend.poll_runs([in_flight(req, asked, clock)])
    assert fake_fly.machines[failed]["state"] == "failed"  # not yet
    clock.advance(minutes=2)
    backend.poll_runs([in_flight(req, asked, clock)])
    assert fake_fly.machines[failed]["state"] == "destroyed"
    assert fake_fly.machines[asked]["state"] == "suspended"  # its run's
    assert fake_fly.machines[running]["state"] == "started"  # held until its lifetime
    [stop] = fake_fly.server.requests_to("DELETE", f"/machines/{failed}")
    assert fake_fly.server.requests_to("POST", f"/machines/{failed}/stop") == []  # (nothing to stop)


def test_sessions_list_only_our_live_machines(backend: FlyMachinesBackend, fake_fly: FakeFly) -> None:
    ours = backend.dispatch(request_for(5)).run_id
    fake_fly.start(ours)
    gone = backend.dispatch(request_for(6)).run_id
    fake_fly.exit(gone, 0)
    foreign = _create_foreign(fake_fly)

    sessions = backend.list_sessions()

    assert [s.id for s in sessions] == [ours]
    [s] = sessions
    assert (s.backend, s.state, s.job_id, s.issue_key, s.region) == (
        "fly-machines",
        "started",
        5,
        "ENG-1",
        "ams",
    )
    assert s.image == "registry.fly.io/aiimpl-session:v1" and s.created_at is not None
    assert backend.destroy_session(foreign) is False  # never another workload's machine
    assert fake_fly.machines[foreign]["state"] == "started"
    assert backend.destroy_session("nope") is False
    assert backend.destroy_session(ours) is True
    assert fake_fly.machines[ours]["state"] == "destroyed"


def test_not_configured_lists_nothing_and_calls_nothing(fake_fly: FakeFly) -> None:
    backend = FlyMachinesBackend(make_context({"AIIMPL_FLY_API_URL": fake_fly.url}))
    assert backend.list_sessions() == []
    with pytest.raises(ProviderError, match="not configured"):
        backend.dispatch(request_for())
    assert fake_fly.server.requests == []


def test_fly_errors_become_dispatch_errors_without_secrets(
    backend: FlyMachinesBackend, fake_fly: FakeFly
) -> None:
    fake_fly.fail_next("POST", "/machines", 422, f"invalid env TEAM_TOKEN={SECRET}")
    with pytest.raises(DispatchError) as info:
        backend.dispatch(request_for())
    assert info.value.status == 422 and "invalid env TEAM_TOKEN=***" in info.value.message
    assert SECRET not in info.value.message and TOKEN not in info.value.message


@pytest.mark.parametrize("status", [502, 200])
def test_a_creation_whose_answer_was_lost_still_dispatches_its_machine(
    backend: FlyMachinesBackend, fake_fly: FakeFly, status: int
) -> None:
    # Fly created the machine, but the proxy in front of it answered with an HTML page (an error
    # status, or a 2xx without the machine): the session runs all the same, so the job must not
    # end failed (nor a second machine be created)
    fake_fly.lose_next_answer("POST", "/machines", status)
    result = backend.dispatch(request_for(31))
    [machine] = fake_fly.live()
    assert result.run_id == machine["id"] and result.run_url == backend.machine_url(machine["id"])
    assert len(fake_fly.server.requests_to("POST", "/machines")) == 1


def backend_with(
    fly_config: dict[str, Any], clock: Clock, client: type[HttpClient] = HttpClient, **http: Any
) -> tuple[FlyMachinesBackend, list[HttpClient]]:
    """A backend whose HTTP clients (of class ``client``) take ``http`` (a short timeout, no
    retries), and the clients it made (their ``calls`` count the requests, sent or not)."""
    clients: list[HttpClient] = []

    def make_http(base_url: str = "", **kw: Any) -> HttpClient:
        clients.append(client(base_url, **{**kw, **http}))
        return clients[-1]

    context = dataclasses.replace(make_context(fly_config, clock=clock), http=make_http)
    return FlyMachinesBackend(context), clients


class _ImpatientCreation(HttpClient):
    """A client that gives up on a creation's answer after 1 s, and waits as long as the default
    for the rest: the lookup that follows is not timed out on a busy machine."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if method.upper() == "POST" and path.endswith("/machines"):
            kwargs.setdefault("timeout", 1.0)
        return super().request(method, path, **kwargs)


def test_a_creation_fly_carries_out_after_the_client_gave_up_is_unanswered_then_polled(
    backend: FlyMachinesBackend, fly_config: dict[str, Any], fake_fly: FakeFly, clock: Clock
) -> None:
    # Fly is slow: the creation's answer does not come before the read timeout, and the one lookup
    # right after lists no machine yet. Failing the job would leave the machine Fly then creates
    # to nobody: the dispatch is unanswered (the core keeps the job dispatched without a run), and
    # the next poll finds the machine by the job's metadata
    impatient, _ = backend_with(fly_config, clock, client=_ImpatientCreation)
    hold = fake_fly.hold_next("POST", "/machines")
    req = request_for(34)
    with pytest.raises(DispatchUnanswered) as info:
        impatient.dispatch(req)
    assert info.value.status is None and info.value.provider == "fly-machines"
    assert "lists no machine of the job yet" in info.value.message
    assert len(fake_fly.server.requests_to("GET", f"/apps/{APP}/machines")) == 1  # it looked once
    hold.release()
    [machine] = fake_fly.live()  # created once, never sent again
    [state] = backend.poll_runs([in_flight(req, None, clock)])
    assert (state.phase, state.run_id) == (RunPhase.PENDING, machine["id"])
    assert state.run_url == backend.machine_url(machine["id"])


@pytest.mark.parametrize("fly_status", [None, "unknown"])
def test_a_5xx_without_a_machine_is_unanswered(
    backend: FlyMachinesBackend, fake_fly: FakeFly, fly_status: str | None
) -> None:
    # a 5xx may come after Fly created the machine (it may list it only later): never a failure
    # that would have the issue dispatched again. Only Fly's insufficient_capacity status says
    # otherwise: its error text alone is not read
    other = backend.dispatch(request_for(32))  # another job's machine is not taken for this one
    fake_fly.fail_next(
        "POST", "/machines", 503, f"no capacity in ams for TEAM_TOKEN={SECRET}", fly_status=fly_status
    )
    with pytest.raises(DispatchUnanswered) as info:
        backend.dispatch(request_for(33))
    assert info.value.status == 503 and SECRET not in info.value.message
    assert "TEAM_TOKEN=***" in info.value.message
    assert [m["id"] for m in fake_fly.live()] == [other.run_id]


@pytest.mark.parametrize("status", [500, 503, 412])
def test_no_capacity_fails_the_dispatch_at_once(
    backend: FlyMachinesBackend, fake_fly: FakeFly, status: int
) -> None:
    # Fly's ErrorResponse with status insufficient_capacity: Fly could not place the machine and
    # created none (its description has the caller send the creation again, or to another region),
    # whatever the HTTP status, which the description does not name
    fake_fly.no_capacity_next(
        status, f"insufficient memory available to fulfill request (TEAM_TOKEN={SECRET})"
    )
    with pytest.raises(DispatchError) as info:
        backend.dispatch(request_for(37))
    assert type(info.value) is DispatchError  # not DispatchUnanswered: the job fails at once
    assert info.value.status == status and info.value.provider == "fly-machines"
    assert info.value.message == (
        f"fly: POST /apps/{APP}/machines failed with HTTP {status}: insufficient memory available to "
        "fulfill request (TEAM_TOKEN=***) (Fly has no capacity for the machine in region ams: none was "
        "created)"
    )
    assert fake_fly.live() == []
    # nothing looked for, nothing sent again
    assert len(fake_fly.server.requests_to("POST", f"/apps/{APP}/machines")) == 1
    assert fake_fly.server.requests_to("GET", f"/apps/{APP}/machines") == []


def test_no_capacity_without_a_region_names_none(
    fly_config: dict[str, Any], fake_fly: FakeFly, clock: Clock
) -> None:
    backend = FlyMachinesBackend(make_context({**fly_config, "AIIMPL_FLY_REGION": ""}, clock=clock))
    fake_fly.no_capacity_next()
    with pytest.raises(DispatchError) as info:
        backend.dispatch(request_for(38))
    assert type(info.value) is DispatchError
    assert info.value.message.endswith("(Fly has no capacity for the machine: none was created)")


def test_a_failed_lookup_after_a_lost_answer_leaves_the_machine_to_the_polls(
    fly_config: dict[str, Any], fake_fly: FakeFly, clock: Clock
) -> None:
    backend, _ = backend_with(fly_config, clock, retries=0)
    fake_fly.lose_next_answer("POST", "/machines", 504)
    fake_fly.fail_next("GET", f"/apps/{APP}/machines", 503, "service unavailable")
    req = request_for(35)
    with pytest.raises(DispatchUnanswered) as info:
        backend.dispatch(req)
    assert info.value.status == 504 and "could not be listed" in info.value.message
    [machine] = fake_fly.live()
    [state] = backend.poll_runs([in_flight(req, None, clock)])
    assert state.run_id == machine["id"]


def test_cancelling_a_run_its_dispatch_did_not_link_destroys_the_machine_fly_created(
    fly_config: dict[str, Any], fake_fly: FakeFly, clock: Clock
) -> None:
    """The creation's answer lost and the lookup failing: the job is cancelled (an operator, or the
    core once the job ended) with no run id. Nothing was done: the machine ran on with the session's
    secrets, its agent at work, until the lifetime sweep an hour later."""
    backend, _ = backend_with(fly_config, clock, retries=0)
    other = backend.dispatch(request_for(36))  # another job's machine stays
    fake_fly.lose_next_answer("POST", "/machines", 504)
    fake_fly.fail_next("GET", f"/apps/{APP}/machines", 503, "service unavailable")
    req = request_for(35)
    with pytest.raises(DispatchUnanswered):
        backend.dispatch(req)
    [machine] = [m for m in fake_fly.live() if m["id"] != other.run_id]
    backend.cancel(in_flight(req, None, clock))
    assert fake_fly.machines[machine["id"]]["state"] == "destroyed"
    assert [m["id"] for m in fake_fly.live()] == [other.run_id]
    assert len(fake_fly.server.requests_to("POST", f"/machines/{machine['id']}/stop")) == 1
    backend.cancel(in_flight(req, None, clock))  # again: nothing left to do, nothing raised


def test_a_machine_of_the_same_job_number_for_another_issue_is_not_the_runs(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    """A database restored (or reset) numbers jobs again: job 40 of ENG-2 is not the old machine of
    job 40 of ENG-1, which the poll linked and read the outcome of, and a cancel would destroy."""
    old = backend.dispatch(request_for(40))
    req = dataclasses.replace(request_for(40), issue_key="ENG-2")
    run = in_flight(req, None, clock)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.NOT_FOUND
    backend.cancel(run)
    assert [m["id"] for m in fake_fly.live()] == [old.run_id]


def test_a_machine_of_the_same_job_number_and_issue_made_before_the_dispatch_is_not_the_runs(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    """The same issue triggered again after a restore: job 40 of ENG-1 is not the machine job 40 of
    ENG-1 had days before (Fly lists destroyed ones too), whose exit the poll took as the new job's
    outcome, nor a live one made before its dispatch, which a cancel destroyed."""
    done = backend.dispatch(request_for(40)).run_id
    fake_fly.start(done)
    fake_fly.exit(done, 0)
    clock.advance(days=3)
    [state] = backend.poll_runs([in_flight(request_for(40), None, clock)])
    assert (state.phase, state.run_id) == (RunPhase.NOT_FOUND, None)

    live = backend.dispatch(request_for(41)).run_id
    fake_fly.start(live)
    clock.advance(minutes=30)
    run = in_flight(request_for(41), None, clock)
    [state] = backend.poll_runs([run])
    assert state.phase is RunPhase.NOT_FOUND
    backend.cancel(run)
    assert fake_fly.machines[str(live)]["state"] == "started"

    # a dispatch recorded minutes after its machine was made (its answer lost, the wait and the
    # listing retried) keeps it
    made = backend.dispatch(request_for(43)).run_id
    clock.advance(minutes=5)
    [state] = backend.poll_runs([in_flight(request_for(43), None, clock)])
    assert state.run_id == made


def test_a_secret_value_holding_another_is_redacted_whole(
    backend: FlyMachinesBackend, fake_fly: FakeFly
) -> None:
    """Fly's error text is redacted of the session's secret values: a shorter one replaced first
    left the rest of one that holds it shown (``***-tail…``), which no mask then knew."""
    base = request_for(42)
    env, names, longs = dict(base.env), set(base.secret_names), []
    for i in range(12):  # whatever order a set iterates in, some shorter value comes first
        short = f"pw{i:02d}Zq7"
        env[f"SHORT_{i}"], env[f"LONG_{i}"] = short, f"{short}-tail-{i:02d}-K9xVbN3mQe"
        names |= {f"SHORT_{i}", f"LONG_{i}"}
        longs.append(env[f"LONG_{i}"])
    request = dataclasses.replace(base, env=env, secret_names=frozenset(names))
    fake_fly.fail_next("POST", "/machines", 422, "invalid env: " + " ".join(longs))
    with pytest.raises(DispatchError) as caught:
        backend.dispatch(request)
    assert "tail" not in caught.value.message
    assert caught.value.message.endswith("invalid env: " + " ".join(["***"] * 12))


@pytest.mark.parametrize(
    ("cpus", "memory", "guest"),
    [(None, None, (2, 4096)), (1, None, (1, 2048)), (16, None, (16, 4096)), (None, 8192, (4, 8192)),
     (None, 256, (1, 256)), (None, 1024, (2, 1024)), (8, 16384, (8, 16384))],
)
def test_a_size_one_setting_leaves_open_is_one_fly_takes(
    backend: FlyMachinesBackend, fake_fly: FakeFly, cpus: int | None, memory: int | None,
    guest: tuple[int, int],
) -> None:
    """machineCpus 1 alone was sent with the default 4 GB, machineMemoryMb 8192 alone with the
    default 2 CPUs: sizes Fly refuses (at most 2 GB a shared CPU), every dispatch failing."""
    mapping = sample_mapping(machine_cpus=cpus, machine_memory_mb=memory)
    req = sample_dispatch_request(50, mapping=mapping)
    backend.validate_mapping({"machineCpus": cpus, "machineMemoryMb": memory})
    assert backend.machine_request(req)["config"]["guest"] == {
        "cpu_kind": "shared", "cpus": guest[0], "memory_mb": guest[1]}
    run_id = backend.dispatch(req).run_id
    assert fake_fly.machines[str(run_id)]["config"]["guest"]["memory_mb"] == guest[1]


def test_the_fake_refuses_a_size_fly_refuses(backend: FlyMachinesBackend, fake_fly: FakeFly) -> None:
    req = sample_dispatch_request(51, mapping=sample_mapping(machine_cpus=1, machine_memory_mb=4096))
    with pytest.raises(DispatchError) as info:
        backend.dispatch(req)
    assert info.value.status == 400 and "invalid memory size 4096MB for 1 shared CPUs" in info.value.message
    assert fake_fly.live() == []


def test_a_creation_never_sent_fails_without_a_lookup(fly_config: dict[str, Any], clock: Clock) -> None:
    # nothing listens: the request never went out, so no machine can exist and the job fails as
    # on a refusal (the dispatcher backs off all the same: no status)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    backend, clients = backend_with({**fly_config, "AIIMPL_FLY_API_URL": closed}, clock)
    with pytest.raises(DispatchError) as info:
        backend.dispatch(request_for(36))
    assert not isinstance(info.value, DispatchUnanswered) and info.value.status is None
    assert sum(c.calls for c in clients) == 1  # the creation only: nothing looked for


def test_list_failure_raises_a_provider_error(
    backend: FlyMachinesBackend, fake_fly: FakeFly, clock: Clock
) -> None:
    req = request_for()
    backend.dispatch(req)
    fake_fly.fail_next("GET", f"/apps/{APP}/machines", 401, "token expired")
    with pytest.raises(ProviderError, match="token expired"):
        backend.poll_runs([in_flight(req, None, clock)])


def test_a_wrong_token_is_refused_by_the_fake(fly_config: dict[str, Any], fake_fly: FakeFly) -> None:
    backend = FlyMachinesBackend(make_context({**fly_config, "AIIMPL_FLY_API_TOKEN": "wrong"}))
    with pytest.raises(ProviderError) as info:
        backend.list_sessions()
    assert info.value.status == 401 and "wrong" not in info.value.message


def _create_foreign(fake_fly: FakeFly) -> str:
    import requests

    resp = requests.post(
        f"{fake_fly.url}/apps/{APP}/machines",
        json={"config": {"image": "nginx:1"}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    machine_id = resp.json()["id"]
    fake_fly.start(machine_id)
    return machine_id


def test_orchestrators_sharing_an_app_each_see_only_their_own_machines(
    backend: FlyMachinesBackend, fly_config: dict[str, Any], fake_fly: FakeFly, clock: Clock
) -> None:
    shared = {**fly_config, "AIIMPL_FLY_INSTANCE": "Staging EU"}
    staging = FlyMachinesBackend(make_context(shared, clock=clock))
    ours = backend.dispatch(request_for(7)).run_id
    theirs = staging.dispatch(request_for(7)).run_id  # the same job id, in another database
    for machine_id in (ours, theirs):
        fake_fly.start(machine_id)
    names = {m["id"]: m["name"] for m in fake_fly.machines.values()}
    assert (names[ours], names[theirs]) == ("aiimpl-job-7", "aiimpl-staging-eu-job-7")

    assert [s.id for s in backend.list_sessions()] == [ours]
    assert [s.id for s in staging.list_sessions()] == [theirs]
    assert staging.destroy_session(ours) is False
    [state] = staging.poll_runs([in_flight(request_for(7), None, clock)])  # found by its job id
    assert state.run_id == theirs
    clock.advance(minutes=61)
    staging.sweep(3600)
    assert fake_fly.machines[ours]["state"] == "started"
    assert fake_fly.machines[theirs]["state"] == "destroyed"


def test_a_machine_created_before_machines_carried_their_instance_is_the_default_ones(
    backend: FlyMachinesBackend, fly_config: dict[str, Any], fake_fly: FakeFly, clock: Clock
) -> None:
    machine_id = backend.dispatch(request_for(8)).run_id
    del fake_fly.machines[machine_id]["config"]["metadata"]["aiimpl_instance"]
    fake_fly.start(machine_id)
    staging = FlyMachinesBackend(make_context({**fly_config, "AIIMPL_FLY_INSTANCE": "staging"}, clock=clock))
    assert [s.id for s in backend.list_sessions()] == [machine_id]
    assert staging.list_sessions() == []


class _GarbledList(HttpClient):
    """A client whose machine listings come back (from the fake Fly) with an entry that is no
    machine object appended, as a broken proxy or a changed API might answer."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = super().request(method, path, **kwargs)
        if method.upper() == "GET" and path.endswith("/machines"):
            resp._content = json.dumps([*resp.json(), "machine"]).encode()
        return resp


def test_a_machine_list_with_an_entry_that_is_no_machine_fails_the_poll(
    fly_config: dict[str, Any], fake_fly: FakeFly, clock: Clock
) -> None:
    """The entry was dropped and the list taken as whole: a run whose machine it was would be
    reported not found, and its job ended though its machine ran."""
    backend, _ = backend_with(fly_config, clock, _GarbledList)
    req = request_for(41)
    machine_id = backend.dispatch(req).run_id
    with pytest.raises(ProviderError, match="an entry that is not a machine object"):
        backend.poll_runs([in_flight(req, machine_id, clock)])
    assert fake_fly.server.requests_to("GET", f"/apps/{APP}/machines")
