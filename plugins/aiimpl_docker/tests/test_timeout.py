"""``AIIMPL_DOCKER_TIMEOUT_SECONDS``: how long the engine gets to answer each request.

Against the fake engine, which holds a request unanswered (a slow engine): the client gives up once
the setting's seconds have passed, whichever request it is (the version the client asks for as it
connects, a list, an inspect, a create, a stop on top of its grace). A value that is not a number of
seconds greater than 0 (and at most an hour) is a configuration error naming the setting: a
dispatch fails before any request, ``check`` says so, and no request is made with a timeout nobody
asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiimpl_core.errors import DispatchUnanswered, ProviderConfigError, ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.contract import make_context, sample_dispatch_request, sample_in_flight_run
from aiimpl_core.testing.fakes import FakeTracker
from aiimpl_core.types import CheckResult

from aiimpl_docker import config
from aiimpl_docker.backend import LocalDockerBackend, parse_pull_timeout, parse_timeout

from .conftest import FAKE_ENGINE_IMAGE, Clock, add_eng_mapping, timed
from .fake_engine import FakeEngine

IMAGE = FAKE_ENGINE_IMAGE
#: the setting in the tests whose engine is slow: well under the default (30 s), so that a client
#: that ignored it would still be waiting when the test looks
TIMEOUT = "1.5"
#: how long a request may take at most when the setting is honoured (its seconds, and leeway)
WITHIN = 10.0
BAD_VALUES = ["0", "-5", "0.0", "abc", "30s", "nan", "inf", "-inf", "3601", "1e999", "３０"]


@pytest.fixture
def make(fake_engine: FakeEngine, clock: Clock) -> Callable[..., LocalDockerBackend]:
    fake_engine.images[IMAGE] = "sha256:" + "5e" * 32

    def make_backend(**settings: str) -> LocalDockerBackend:
        return LocalDockerBackend(make_context({"AIIMPL_DOCKER_IMAGE": IMAGE, **settings}, clock=clock))

    return make_backend


# -- the setting is used ----------------------------------------------------------------------------


def test_the_setting_is_the_clients_timeout(make: Callable[..., LocalDockerBackend]) -> None:
    assert make().docker().api.timeout == config.DEFAULT_TIMEOUT_SECONDS == 30
    assert make(AIIMPL_DOCKER_TIMEOUT_SECONDS=" 2.5 ").docker().api.timeout == 2.5
    assert make(AIIMPL_DOCKER_TIMEOUT_SECONDS="").docker().api.timeout == 30


def test_a_slow_answer_as_the_client_connects_is_a_timeout(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    fake_engine.hold_next("GET", "/version")  # the SDK's API-version probe as it connects
    backend = make(AIIMPL_DOCKER_TIMEOUT_SECONDS=TIMEOUT)

    [eng, image] = backend.check([])

    assert not eng.ok and f"Read timed out. (read timeout={TIMEOUT})" in eng.detail, eng.detail
    assert not image.ok
    [probe] = fake_engine.exchanges
    assert probe["path"] == "/version"


def test_a_slow_engine_fails_a_poll_as_a_timeout_after_the_settings_seconds(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine, clock: Clock
) -> None:
    backend = make(AIIMPL_DOCKER_TIMEOUT_SECONDS=TIMEOUT)
    backend.docker()  # connected: the listing below is the request held
    held = fake_engine.hold_next("GET", "/containers/json")

    error, took = timed(lambda: backend.poll_runs([sample_in_flight_run(sample_dispatch_request(5))]))

    assert held.arrived.is_set()
    assert isinstance(error, ProviderError), error
    assert "no answer from the engine" in error.message and "timed out" in error.message.lower()
    assert float(TIMEOUT) <= took < WITHIN


def test_a_slow_create_and_inspect_leave_the_dispatch_unanswered_after_the_settings_seconds(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    backend = make(AIIMPL_DOCKER_TIMEOUT_SECONDS=TIMEOUT)
    backend.docker()
    fake_engine.hold_next("POST", "/containers/create")  # the create, and the one sent again
    fake_engine.hold_next("POST", "/containers/create")
    fake_engine.hold_next("GET", "/json")  # the look-up by its name

    error, took = timed(lambda: backend.dispatch(sample_dispatch_request(5)))

    assert isinstance(error, DispatchUnanswered), error
    assert "no answer from the engine" in error.message
    # three requests, each given up after the setting's seconds
    assert 3 * float(TIMEOUT) <= took < 3 * WITHIN


def test_a_stop_waits_the_setting_on_top_of_the_grace(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    backend = make(AIIMPL_DOCKER_TIMEOUT_SECONDS=TIMEOUT, AIIMPL_DOCKER_STOP_GRACE_SECONDS="1")
    req = sample_dispatch_request(5)
    container_id = backend.dispatch(req).run_id
    held = fake_engine.hold_next("POST", "/stop")  # the engine never answers the stop

    started = time.monotonic()
    backend.cancel(sample_in_flight_run(req, run_id=container_id))
    assert backend.wait_for_stops(timeout=3 * WITHIN)
    took = time.monotonic() - started

    assert held.arrived.is_set()
    assert 1 + float(TIMEOUT) <= took < 1 + WITHIN
    assert fake_engine.containers == {}  # removed all the same


# -- a bad value is a configuration error ------------------------------------------------------------


#: the two settings of seconds: the engine's timeout for each request, and the pull's in all
SECONDS_SETTINGS = pytest.mark.parametrize(
    "parse,name", [(parse_timeout, config.TIMEOUT), (parse_pull_timeout, config.PULL_TIMEOUT)]
)


@SECONDS_SETTINGS
@pytest.mark.parametrize("value", ["1", "0.5", "30", "600", " 45 ", "3600", "2.5e1"])
def test_good_values_are_seconds(parse: Callable[[Any], float], name: str, value: str) -> None:
    assert parse(value) == float(value)


@SECONDS_SETTINGS
@pytest.mark.parametrize("value", [*BAD_VALUES, "600s", "６００"])
def test_a_bad_value_is_a_config_error_naming_the_setting(
    parse: Callable[[Any], float], name: str, value: str
) -> None:
    with pytest.raises(ProviderConfigError) as info:
        parse(value)
    assert info.value.message == (
        f"{name} must be a number of seconds greater than 0 and at most 3600, not {value!r}"
    )
    assert info.value.provider == "local-docker"


@pytest.mark.parametrize("value", ["0", "abc", "inf"])
def test_a_bad_value_fails_every_use_before_any_request(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine, value: str
) -> None:
    backend = make(AIIMPL_DOCKER_TIMEOUT_SECONDS=value)
    req = sample_dispatch_request(5)

    for use in (
        lambda: backend.dispatch(req),
        lambda: backend.poll_runs([sample_in_flight_run(req)]),
        backend.list_sessions,
        lambda: backend.destroy_session("0" * 64),
    ):
        with pytest.raises(ProviderConfigError, match="AIIMPL_DOCKER_TIMEOUT_SECONDS must be"):
            use()

    assert fake_engine.requests == []


def test_check_names_a_bad_value_and_asks_the_engine_nothing(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    results = list(make(AIIMPL_DOCKER_TIMEOUT_SECONDS="ten").check([]))

    assert results == [
        CheckResult(
            "engine", False, "not checked: AIIMPL_DOCKER_TIMEOUT_SECONDS is not valid (see settings)"
        ),
        CheckResult(f"image {IMAGE}", False, "not checked: the Docker engine was not asked"),
        CheckResult(
            "settings",
            False,
            "AIIMPL_DOCKER_TIMEOUT_SECONDS must be a number of seconds greater than 0 and at most 3600, "
            "not 'ten'",
        ),
    ]
    assert fake_engine.requests == []


# -- inside the orchestrator ------------------------------------------------------------------------


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_DOCKER_IMAGE": FAKE_ENGINE_IMAGE, "AIIMPL_DOCKER_TIMEOUT_SECONDS": "0"}


def test_a_job_dispatched_with_a_bad_value_fails_at_once_naming_the_setting(
    app: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker, app_engine: FakeEngine
) -> None:
    add_eng_mapping()
    assert client.post("/api/runner-mode", json={"mode": "local"}, headers=admin_headers).status_code == 200
    tracker.add("ENG-1", title="Add a health endpoint")

    run_cycle(reconcile=False)

    job = db.session.scalars(db.select(Job)).one()
    assert job.status == "failed"
    assert job.error == (
        "dispatch to Local Docker failed: AIIMPL_DOCKER_TIMEOUT_SECONDS must be a number of seconds "
        "greater than 0 and at most 3600, not '0'"
    )
    assert app_engine.requests == []
