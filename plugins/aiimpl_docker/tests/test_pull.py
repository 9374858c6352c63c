"""Pulling a session image the engine does not have: ``AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS``.

The SDK sends a pull without any timeout, and its ``images.pull`` reads the engine's progress
without looking at it. Against the fake engine (every exchange, each progress message included,
checked against the Engine API description): a pull that ends well is followed by the create and
the start; one whose engine stops sending (after its headers and some progress, or before any
answer) or that reports progress for ever fails the dispatch once the setting's seconds have
passed, naming the image and the setting, and its connection is closed; one that reports an error
in its stream fails with the engine's error. No container is made, and the dispatch is not sent
again: the job fails, and the runner backs off. A value of the setting that is not a number of
seconds greater than 0 (and at most an hour) is a configuration error naming it. On the real engine
when there is one, a registry that cannot be reached fails the dispatch with the engine's reason.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiimpl_core.errors import DispatchError, ProviderConfigError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.contract import make_context, sample_dispatch_request
from aiimpl_core.testing.fakes import FakeTracker
from aiimpl_core.types import CheckResult

from aiimpl_docker import config
from aiimpl_docker.backend import LocalDockerBackend

from .conftest import FAKE_ENGINE_IMAGE, Clock, add_eng_mapping, ours, timed
from .fake_engine import FakeEngine

IMAGE = FAKE_ENGINE_IMAGE
IMAGE_ID = "sha256:" + "5e" * 32
#: the setting in the tests whose pull goes wrong: well under the default (300 s)
PULL_TIMEOUT = "1.5"
#: how long a dispatch may take at most when the setting is honoured (its seconds, and leeway); the
#: fake engine's pulls that go wrong stop doing so after this, so that a dispatch that ignored the
#: setting returns, late and with another error
WITHIN = 10.0
TIMED_OUT = (
    f"local-docker: pulling image {IMAGE} took longer than 1.5 s (AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS)"
)
RATE_LIMITED = (
    "toomanyrequests: You have reached your pull rate limit. You may increase the limit by "
    "authenticating and upgrading: https://www.docker.com/increase-rate-limit"
)


@pytest.fixture
def make(fake_engine: FakeEngine, clock: Clock) -> Callable[..., LocalDockerBackend]:
    """Backends on the fake engine, which does not have the image; its registry does."""
    fake_engine.registry[IMAGE] = IMAGE_ID

    def make_backend(**settings: str) -> LocalDockerBackend:
        return LocalDockerBackend(make_context({"AIIMPL_DOCKER_IMAGE": IMAGE, **settings}, clock=clock))

    return make_backend


def _posted(fake: FakeEngine) -> list[str]:
    """The POST requests, by their last two path segments."""
    return ["/".join(path.rsplit("/", 2)[-2:]) for method, path in fake.requests if method == "POST"]


def _eventually(check: Callable[[], bool], timeout: float = WITHIN) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _failed_at_the_deadline(error: BaseException | None, took: float, fake: FakeEngine) -> None:
    """The dispatch failed once the setting's seconds had passed, with the message, and made no
    container: a refusal without a status (the job fails and the runner backs off), not a
    dispatch whose answer was lost (nothing is looked for, no create sent again)."""
    assert type(error) is DispatchError, error
    assert error.message == TIMED_OUT and error.status is None
    assert float(PULL_TIMEOUT) <= took < WITHIN, took
    assert fake.containers == {} and IMAGE not in fake.images
    assert _posted(fake) == ["containers/create", "images/create"]


# -- a pull that ends ---------------------------------------------------------------------------------


def test_a_missing_image_is_pulled_then_the_container_created_and_started(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    result = make().dispatch(sample_dispatch_request(5))

    [(container_id, container)] = fake_engine.containers.items()
    assert result.run_id == container_id and container["State"] == "running"
    assert fake_engine.images[IMAGE] == IMAGE_ID
    assert _posted(fake_engine) == [
        "containers/create", "images/create", "containers/create", f"{container_id}/start"
    ]
    [pull] = fake_engine.pull_exchanges()
    assert pull["query"] == {"fromImage": ["localhost/aiimpl-session"], "tag": ["test"]}
    assert (pull["status"], pull["stream"]) == (200, "finished")


def test_a_pull_quiet_for_longer_than_the_engines_timeout_still_ends_within_its_own(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    # a registry slow to send a layer: each of the pull's reads may wait the pull's seconds, not the
    # engine's timeout of every other request
    fake_engine.plan_pull("pause", seconds=2.5)
    backend = make(AIIMPL_DOCKER_TIMEOUT_SECONDS="1", AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=str(WITHIN))

    result = backend.dispatch(sample_dispatch_request(5))

    assert fake_engine.containers[result.run_id]["State"] == "running"
    [pull] = fake_engine.pull_exchanges()
    assert pull["stream"] == "finished"


# -- a pull that does not end -------------------------------------------------------------------------


def test_a_pull_whose_stream_stops_fails_after_the_settings_seconds(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    fake_engine.plan_pull("stall", seconds=WITHIN)  # headers and some progress, then nothing
    backend = make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=PULL_TIMEOUT)

    error, took = timed(lambda: backend.dispatch(sample_dispatch_request(5)))

    _failed_at_the_deadline(error, took, fake_engine)
    # the reads of the pull wait its seconds too: its connection is closed, nothing left waiting
    [pull] = fake_engine.pull_exchanges()
    assert _eventually(lambda: pull["stream"] == "client left"), pull


def test_a_pull_whose_wait_wakes_after_its_stream_timed_out_still_fails_as_too_long(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine the dispatch's wait may be woken only after the stream's own read, which
    waits as long as the pull may take, timed out: the pull still fails as too long, not with the
    read's error."""
    from aiimpl_docker import client

    class LateEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            time.sleep((timeout or 0) + 1.0)  # woken late, after the stream's failure
            return super().wait(0)

    monkeypatch.setattr(client, "threading", type("Threading", (), {"Thread": threading.Thread,
                                                                     "Event": LateEvent}))
    fake_engine.plan_pull("stall", seconds=WITHIN)
    backend = make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=PULL_TIMEOUT)

    error, took = timed(lambda: backend.dispatch(sample_dispatch_request(5)))

    _failed_at_the_deadline(error, took, fake_engine)


def test_a_pull_the_engine_never_answers_fails_after_the_settings_seconds(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    backend = make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=PULL_TIMEOUT)
    backend.docker()  # connected: the pull is the request held
    held = fake_engine.hold_next("POST", "/images/create")  # not even the answer's headers
    # the engine answers in the end (the image is not there): a dispatch that waited for it returns
    late = threading.Timer(WITHIN, held.release)
    late.start()
    try:
        error, took = timed(lambda: backend.dispatch(sample_dispatch_request(5)))
    finally:
        late.cancel()

    assert held.arrived.is_set()
    _failed_at_the_deadline(error, took, fake_engine)


def test_a_pull_that_keeps_reporting_progress_fails_after_the_settings_seconds(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    fake_engine.plan_pull("trickle", seconds=WITHIN)  # a message every 0.2 s: no read waits long
    backend = make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=PULL_TIMEOUT)

    error, took = timed(lambda: backend.dispatch(sample_dispatch_request(5)))

    _failed_at_the_deadline(error, took, fake_engine)
    # the connection is closed at the next message: the engine drops the pull
    [pull] = fake_engine.pull_exchanges()
    assert _eventually(lambda: pull["stream"] == "client left", timeout=2.0), pull


# -- a pull that fails --------------------------------------------------------------------------------


def test_a_pull_that_reports_an_error_in_its_stream_fails_with_the_engines_error(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    fake_engine.plan_pull("error", message=RATE_LIMITED)

    error, took = timed(lambda: make().dispatch(sample_dispatch_request(5)))

    assert type(error) is DispatchError, error
    assert error.message == f"local-docker: pulling image {IMAGE} failed: {RATE_LIMITED}"
    assert error.status is None and took < WITHIN
    assert fake_engine.containers == {} and _posted(fake_engine) == ["containers/create", "images/create"]


def test_a_refused_pull_fails_with_the_engines_refusal_and_status(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine
) -> None:
    del fake_engine.registry[IMAGE]

    error, _ = timed(lambda: make().dispatch(sample_dispatch_request(5)))

    assert type(error) is DispatchError, error
    assert error.status == 404
    assert error.message == (
        f"local-docker: pulling image {IMAGE} failed: pull access denied for {IMAGE}, repository does not "
        "exist or may require 'docker login'"
    )


# -- the setting ----------------------------------------------------------------------------------------


def test_the_setting_is_the_pulls_deadline(make: Callable[..., LocalDockerBackend]) -> None:
    assert make().pull_timeout_seconds == config.DEFAULT_PULL_TIMEOUT_SECONDS == 300
    assert make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=" 2.5 ").pull_timeout_seconds == 2.5
    assert make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS="").pull_timeout_seconds == 300


# (its values are checked beside the engine timeout's, in test_timeout.py)


@pytest.mark.parametrize("value", ["0", "abc", "inf"])
def test_a_bad_value_fails_a_dispatch_before_any_request(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine, value: str
) -> None:
    fake_engine.images[IMAGE] = IMAGE_ID  # even one that would need no pull
    backend = make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=value)

    with pytest.raises(ProviderConfigError, match="AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS must be"):
        backend.dispatch(sample_dispatch_request(5))

    assert fake_engine.requests == []


def test_check_names_a_bad_value(make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine) -> None:
    fake_engine.images[IMAGE] = IMAGE_ID

    [eng, image, settings] = make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS="ten").check([])

    assert eng.ok and image.ok  # every other request has its timeout: the engine is asked
    assert settings == CheckResult(
        "settings",
        False,
        "AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS must be a number of seconds greater than 0 and at most 3600, "
        "not 'ten'",
    )


@pytest.mark.parametrize("pull,window,ok", [
    ("", "", True), ("599", "", True), ("600", "", False), ("900", "", False), ("900", "1200", True),
    ("300", "300", False),
])
def test_check_fails_a_pull_limit_not_under_the_run_not_found_window(
    make: Callable[..., LocalDockerBackend], fake_engine: FakeEngine, pull: str, window: str, ok: bool
) -> None:
    """The reconciler ends a job still being dispatched once AIIMPL_RUN_NOT_FOUND_SECONDS (600 s by
    default) has passed: a pull allowed that long would end its job before its container starts."""
    fake_engine.images[IMAGE] = IMAGE_ID

    rows = make(AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS=pull, AIIMPL_RUN_NOT_FOUND_SECONDS=window).check([])

    settings = [row for row in rows if row.name == "settings"]
    if ok:
        assert settings == []
    else:
        assert settings == [CheckResult(
            "settings", False,
            f"AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS ({pull} s) is not under AIIMPL_RUN_NOT_FOUND_SECONDS "
            f"({window or 600} s): a job whose image takes that long to pull ends timed_out / run_not_found "
            "before its container starts; lower the first or raise the second",
        )]


# -- inside the orchestrator ------------------------------------------------------------------------


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_DOCKER_IMAGE": FAKE_ENGINE_IMAGE, "AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS": PULL_TIMEOUT}


def test_a_job_whose_pull_stalls_fails_and_the_runner_backs_off(
    app: Any, client: Any, admin_headers: dict[str, str], tracker: FakeTracker, app_engine: FakeEngine
) -> None:
    del app_engine.images[IMAGE]
    app_engine.registry[IMAGE] = IMAGE_ID
    app_engine.plan_pull("stall", seconds=WITHIN)
    add_eng_mapping()
    assert client.post("/api/runner-mode", json={"mode": "local"}, headers=admin_headers).status_code == 200
    tracker.add("ENG-1", title="Add a health endpoint")

    _, took = timed(lambda: run_cycle(reconcile=False))

    job = db.session.scalars(db.select(Job)).one()
    assert (job.status, job.run_id) == ("failed", None)
    assert job.error == f"dispatch to Local Docker failed: {TIMED_OUT}"
    assert took < WITHIN
    # the next issues wait instead of each waiting for the pull in turn
    backoff = poller.backoff_of("runner", "local-docker")
    assert backoff is not None and "took longer than 1.5 s" in backoff.error
    assert app_engine.containers == {}


# -- on the real engine -----------------------------------------------------------------------------


@pytest.fixture
def unreachable_registry() -> str:
    """A registry address nothing listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_on_the_real_engine_a_registry_that_cannot_be_reached_fails_the_dispatch_with_the_reason(
    engine: Any, make_backend: Any, unreachable_registry: str
) -> None:
    image = f"{unreachable_registry}/aiimpl-absent:latest"
    backend = make_backend("true", AIIMPL_DOCKER_IMAGE=image, AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS="60")

    error, took = timed(lambda: backend.dispatch(sample_dispatch_request(41)))

    assert type(error) is DispatchError, error
    # Podman reports it in the stream; Docker refuses the pull with a status
    assert error.message.startswith(f"local-docker: pulling image {image} failed: "), error.message
    assert unreachable_registry in error.message.removeprefix(f"local-docker: pulling image {image}")
    assert took < 60
    assert ours(engine) == []
