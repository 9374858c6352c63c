"""Fixtures of the Docker plugin's tests: a real Docker-API engine, or a skip with the reason.

``scripts/setup-podman.sh`` starts rootful Podman's Docker-compatible service and writes
``DOCKER_HOST`` for the suite; the tests use its ``localhost/bbox:latest`` image (busybox) and
tiny shell commands. Each test session labels its containers with its own instance name, so
parallel runs never see (or remove) each other's containers.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiimpl_core.testing.contract import make_context

from aiimpl_docker.backend import LocalDockerBackend

BUSYBOX = "localhost/bbox:latest"
INSTANCE = f"test-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _engine_or_reason() -> tuple[Any, str | None]:
    if not os.environ.get("DOCKER_HOST"):
        return None, "DOCKER_HOST is not set: no Docker-API engine (scripts/setup-podman.sh starts one)"
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine here
        return None, f"the Docker engine at {os.environ['DOCKER_HOST']} does not answer: {type(exc).__name__}"
    try:
        client.images.get(BUSYBOX)
    except Exception:  # noqa: BLE001
        return None, f"image {BUSYBOX} is missing (scripts/setup-podman.sh imports it)"
    return client, None


@pytest.fixture(scope="session")
def engine() -> Any:
    client, reason = _engine_or_reason()
    if client is None:
        pytest.skip(reason)
    return client


def ours(engine: Any) -> list[Any]:
    """This session's containers, in any state."""
    return engine.containers.list(all=True, sparse=True, filters={"label": f"aiimpl.instance={INSTANCE}"})


@pytest.fixture
def no_leftovers(engine: Any) -> Iterator[None]:
    """Fails a test that leaves a container of ours behind (and removes it)."""
    yield
    left = ours(engine)
    for container in left:
        container.remove(force=True)
    assert not left, f"containers left behind: {[c.id[:12] for c in left]}"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake_engine(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake engine (every exchange checked against the Engine API description) on the test's
    clock, as ``DOCKER_HOST``."""
    from .fake_engine import FakeEngine

    with FakeEngine(clock=clock) as fake:
        monkeypatch.setenv("DOCKER_HOST", fake.url)
        yield fake


#: the session image the fake engine has, in the tests that run the plugin in an orchestrator
FAKE_ENGINE_IMAGE = "localhost/aiimpl-session:test"


@pytest.fixture
def backend(fake_engine: Any, clock: Clock) -> Iterator[Any]:
    """The plugin's backend on the fake engine (on the test's clock), which holds
    :data:`FAKE_ENGINE_IMAGE`; every stop it began has ended by the test's end. (A module that
    builds its backend otherwise defines its own.)"""
    from aiimpl_core.testing.contract import make_context

    from aiimpl_docker.backend import LocalDockerBackend

    fake_engine.images[FAKE_ENGINE_IMAGE] = "sha256:" + "5e" * 32
    made = LocalDockerBackend(make_context({"AIIMPL_DOCKER_IMAGE": FAKE_ENGINE_IMAGE}, clock=clock))
    yield made
    assert made.wait_for_stops(timeout=10)


@pytest.fixture
def app_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake engine on real time (the orchestrator's clock), as ``DOCKER_HOST``, holding
    :data:`FAKE_ENGINE_IMAGE`."""
    from .fake_engine import FakeEngine

    with FakeEngine() as fake:
        fake.images[FAKE_ENGINE_IMAGE] = "sha256:" + "5e" * 32
        monkeypatch.setenv("DOCKER_HOST", fake.url)
        yield fake


@pytest.fixture
def tracker() -> Any:
    """The in-memory tracker of the tests that run the plugin in an orchestrator."""
    from aiimpl_core.testing.fakes import FakeTracker

    return FakeTracker()


@pytest.fixture
def aiimpl_plugins(tracker: Any, app_engine: Any) -> list[object]:
    """The orchestrator of these tests: the in-memory tracker and this plugin on the fake engine
    (a module that runs the plugin on another engine overrides this and ``aiimpl_config``)."""
    import aiimpl_docker.plugin

    return [tracker.plugin, aiimpl_docker.plugin]


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_DOCKER_IMAGE": FAKE_ENGINE_IMAGE}


def add_eng_mapping(**fields: Any) -> None:
    """The mapping of the tests that run the plugin in an orchestrator: ENG (acme/api) on the
    in-memory tracker, run by this plugin in runner mode ``local``; ``fields`` change its columns."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    db.session.add(Mapping(**{"team_key": "ENG", "owner": "acme", "repo": "api", "default_branch": "main",
                              "execution_mode": "github-actions", "ticketing": {"provider": "fake-tracker"},
                              **fields}))
    db.session.commit()


def docker_config(command: str | None = None, **extra: str) -> dict[str, str]:
    config = {
        "AIIMPL_DOCKER_IMAGE": BUSYBOX,
        "AIIMPL_DOCKER_INSTANCE": INSTANCE,
        # busybox commands that are PID 1 and set no trap ignore SIGTERM: a cancel waits this long
        "AIIMPL_DOCKER_STOP_GRACE_SECONDS": "2",
        **extra,
    }
    if command is not None:
        config["AIIMPL_DOCKER_COMMAND"] = command
    return config


@pytest.fixture
def make_backend(engine: Any, clock: Clock, no_leftovers: None) -> Iterator[Any]:
    made: list[LocalDockerBackend] = []

    def make(command: str | None = None, **extra: str) -> LocalDockerBackend:
        backend = LocalDockerBackend(make_context(docker_config(command, **extra), clock=clock))
        made.append(backend)
        return backend

    yield make
    for backend in made:  # the stops a cancel started end before no_leftovers looks
        backend.wait_for_stops(timeout=60)


def timed(fn: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """What ``fn`` raised (``None`` when it returned) and the seconds it took."""
    started = time.monotonic()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def wait_exited(engine: Any, container_id: str, timeout: float = 20) -> None:
    """Until the container's process has ended (the backend reads it afterwards)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container = engine.containers.get(container_id)
        if container.status in ("exited", "dead", "stopped"):
            return
        time.sleep(0.1)
    raise AssertionError(f"container {container_id[:12]} did not exit in {timeout} s")
