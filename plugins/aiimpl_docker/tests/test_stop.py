"""Stopping a session's container: ``cancel`` (an operator's cancel, a run past the reconciler's
safety net) and ``destroy_session`` (``DELETE /api/sessions/<id>``).

A running container is stopped the Docker way — SIGTERM, then SIGKILL once its grace period
(``AIIMPL_DOCKER_STOP_GRACE_SECONDS``, 120 s by default) has run out — so the session can save its
work and report, and only then removed. The stop runs in the background: neither call waits for
the grace period. A container that has already ended is removed at once, as before.

Against the fake engine (every request checked against the Engine API description), and against
the real engine when there is one: the session's SIGTERM handler runs to its end, and one that
ignores SIGTERM is killed when its grace runs out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiimpl_core.testing.contract import make_context, sample_dispatch_request, sample_mapping
from aiimpl_core.types import InFlightRun

from aiimpl_docker import config
from aiimpl_docker.backend import LocalDockerBackend

from .conftest import Clock, ours
from .fake_engine import FakeEngine

IMAGE = "localhost/aiimpl-session:test"
SECRET = "team-secret-value-51c0"


@pytest.fixture
def make_fake_backend(fake_engine: FakeEngine, clock: Clock) -> Iterator[Callable[..., LocalDockerBackend]]:
    made: list[LocalDockerBackend] = []

    fake_engine.images[IMAGE] = "sha256:" + "5e" * 32

    def make(**settings: str) -> LocalDockerBackend:
        backend = LocalDockerBackend(make_context({"AIIMPL_DOCKER_IMAGE": IMAGE, **settings}, clock=clock))
        made.append(backend)
        return backend

    yield make
    for backend in made:  # nothing of a test's stops outlives it
        assert backend.wait_for_stops(timeout=10)


def _running(backend: LocalDockerBackend, clock: Clock, job_id: int = 7) -> InFlightRun:
    req = sample_dispatch_request(
        job_id,
        mapping=sample_mapping(),
        env={"AIIMPL_JOB_ID": str(job_id), "TEAM_TOKEN": SECRET, "AIIMPL_SECRET_NAMES": "TEAM_TOKEN"},
        secret_names=frozenset({"TEAM_TOKEN"}),
    )
    container_id = backend.dispatch(req).run_id
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


def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _order(fake: FakeEngine, container_id: str) -> list[str]:
    """The stop and removal requests of one container, in the order the engine received them."""
    return [
        f"{x['method']} {x['path'].rsplit(container_id, 1)[1] or '/'}"
        for x in fake.exchanges
        if container_id in x["path"] and (x["method"] == "DELETE" or x["path"].endswith("/stop"))
    ]


def _stopping(backend: LocalDockerBackend, run: InFlightRun, how: str) -> None:
    if how == "cancel":
        backend.cancel(run)
    else:
        assert backend.destroy_session(str(run.run_id)) is True


@pytest.mark.parametrize("how", ["cancel", "destroy_session"])
def test_a_running_container_gets_sigterm_and_its_grace_before_it_is_removed(
    how: str, make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock
) -> None:
    backend = make_fake_backend()
    run = _running(backend, clock)
    container_id = str(run.run_id)
    saved = fake_engine.hold_stop(container_id, exit_code=0)  # the session saves its work

    started = time.monotonic()
    _stopping(backend, run, how)
    # the caller (a poll cycle, an API request) does not wait (the stop is held up to its 120 s)
    assert time.monotonic() - started < 10

    _until(lambda: fake_engine.stops(container_id) != [])
    assert fake_engine.stops(container_id) == [{"t": ["120"]}]  # Docker's stop: SIGTERM, 120 s, SIGKILL
    time.sleep(0.2)
    assert container_id in fake_engine.containers  # not removed while the session saves its work
    assert fake_engine.calls("DELETE") == []
    # a daemon thread: a poller that exits does not wait for the grace (the engine finishes the
    # stop it was asked for)
    [stopper] = [t for t in threading.enumerate() if t.name == f"aiimpl-docker-stop-{container_id[:12]}"]
    assert stopper.daemon

    saved.set()  # its work saved and reported, the session exits
    assert backend.wait_for_stops(timeout=5)
    assert fake_engine.containers == {}
    assert fake_engine.signals == [(container_id, "SIGTERM")]  # never killed
    assert _order(fake_engine, container_id) == ["POST /stop", "DELETE /"]
    fake_engine.assert_clean()


def test_a_session_that_ignores_sigterm_is_killed_when_its_grace_runs_out(
    make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock
) -> None:
    backend = make_fake_backend(AIIMPL_DOCKER_STOP_GRACE_SECONDS="2")
    run = _running(backend, clock)
    container_id = str(run.run_id)
    fake_engine.hold_stop(container_id)  # never released: it does not end on SIGTERM

    started = time.monotonic()
    backend.cancel(run)
    # the cancel does not wait out the grace: it returns before the kill (however long its own
    # request to the engine took on a loaded machine)
    assert (container_id, "SIGKILL") not in fake_engine.signals and container_id in fake_engine.containers
    assert backend.wait_for_stops(timeout=10)

    assert time.monotonic() - started >= 2  # the grace, then SIGKILL
    assert fake_engine.stops(container_id) == [{"t": ["2"]}]
    assert fake_engine.signals == [(container_id, "SIGTERM"), (container_id, "SIGKILL")]
    assert fake_engine.containers == {}
    assert _order(fake_engine, container_id) == ["POST /stop", "DELETE /"]


@pytest.mark.parametrize("how", ["cancel", "destroy_session"])
def test_an_ended_container_is_removed_at_once_without_a_stop(
    how: str, make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock
) -> None:
    backend = make_fake_backend()
    run = _running(backend, clock)
    fake_engine.exit(str(run.run_id), 1, b"git clone failed\n")

    _stopping(backend, run, how)

    assert fake_engine.containers == {}  # removed before the call returned
    assert fake_engine.stops() == [] and fake_engine.signals == []


def test_stopping_twice_sends_one_stop(make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock) -> None:
    backend = make_fake_backend()
    run = _running(backend, clock)
    container_id = str(run.run_id)
    saved = fake_engine.hold_stop(container_id)

    backend.cancel(run)  # an operator's cancel ...
    _until(lambda: fake_engine.stops(container_id) != [])
    assert backend.destroy_session(container_id) is True  # ... and a destroy while it saves its work
    backend.cancel(run)

    saved.set()
    assert backend.wait_for_stops(timeout=5)
    assert len(fake_engine.stops(container_id)) == 1  # a second stop would cut the grace short
    assert fake_engine.containers == {}


def test_a_process_that_ends_lets_its_stops_finish_first(
    make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aiimpl jobs cancel`` exits right after the cancel: its stop must still end in a removal,
    not leave a stopped container, with its environment, to a later poll's sweep."""
    import atexit

    at_exit: list[Callable[[], object]] = []
    monkeypatch.setattr(atexit, "register", at_exit.append)
    backend = make_fake_backend()
    runs = [_running(backend, clock, job_id) for job_id in (7, 8)]
    held = [fake_engine.hold_stop(str(run.run_id)) for run in runs]
    for run in runs:
        backend.cancel(run)
    # registered once: the wait for the backend's background work (clean-ups, then these stops)
    assert at_exit == [backend._finish_at_exit]
    for event in held:
        event.set()
    at_exit[0]()  # what the interpreter runs at exit
    assert fake_engine.containers == {}


def test_a_container_that_ended_after_it_was_read_is_removed_after_the_stops_304(
    make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock
) -> None:
    backend = make_fake_backend()
    run = _running(backend, clock)
    container_id = str(run.run_id)
    fake_engine.exit(container_id, 0)  # the session ended between the read and the stop

    assert backend._end(container_id, {"State": {"Status": "running"}}) is True  # what was read
    assert backend.wait_for_stops(timeout=5)

    [stop] = [x for x in fake_engine.exchanges if x["path"].endswith("/stop")]
    assert stop["status"] == 304  # "container already stopped", as the description says
    assert fake_engine.containers == {} and fake_engine.signals == []


def test_a_refused_stop_still_removes_the_container(
    make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_fake_backend()
    run = _running(backend, clock)
    fake_engine.fail_next("POST", "/stop", 500, "cannot stop container: runtime error")

    with caplog.at_level(logging.WARNING, logger="aiimpl"):
        backend.cancel(run)
        assert backend.wait_for_stops(timeout=5)

    assert fake_engine.containers == {}  # never left behind
    assert "local-docker: stopping a container failed: cannot stop container: runtime error" in caplog.text
    assert SECRET not in caplog.text


def test_a_container_removed_meanwhile_is_no_failure(
    make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_fake_backend()
    run = _running(backend, clock)
    container_id = str(run.run_id)
    fake_engine.fail_next("POST", "/stop", 404, f"No such container: {container_id}")

    with caplog.at_level(logging.WARNING, logger="aiimpl"):
        backend.cancel(run)  # its job's clean-up removed it between the read and the stop
        assert backend.wait_for_stops(timeout=5)

    assert "failed" not in caplog.text


def test_the_grace_period_is_a_setting(make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock) -> None:
    [var] = [v for v in LocalDockerBackend.config_vars if v.name == "AIIMPL_DOCKER_STOP_GRACE_SECONDS"]
    assert var.default == "120" and not var.sensitive

    backend = make_fake_backend(AIIMPL_DOCKER_STOP_GRACE_SECONDS="45")
    run = _running(backend, clock)
    backend.cancel(run)
    assert backend.wait_for_stops(timeout=5)
    assert fake_engine.stops(str(run.run_id)) == [{"t": ["45"]}]


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "99999"])
def test_a_bad_grace_period_is_named_and_the_default_used(
    value: str,
    make_fake_backend: Any,
    fake_engine: FakeEngine,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = make_fake_backend(AIIMPL_DOCKER_STOP_GRACE_SECONDS=value)
    run = _running(backend, clock)
    with caplog.at_level(logging.WARNING, logger="aiimpl"):
        backend.cancel(run)  # still stopped: a typo must not leave a session running
    assert backend.wait_for_stops(timeout=5)
    assert fake_engine.stops(str(run.run_id)) == [{"t": [str(config.DEFAULT_STOP_GRACE_SECONDS)]}]
    assert "AIIMPL_DOCKER_STOP_GRACE_SECONDS must be a whole number of seconds from 0 to 3600" in caplog.text


def test_the_lifetime_stop_of_a_poll_keeps_its_short_timeout(
    make_fake_backend: Any, fake_engine: FakeEngine, clock: Clock
) -> None:
    """A session still running at the end of its lifetime has used its reserve already: the poll
    stops it inline, with Docker's 10 s."""
    backend = make_fake_backend()
    run = _running(backend, clock)
    clock.advance(minutes=61)
    backend.poll_runs([run])
    assert fake_engine.stops(str(run.run_id)) == [{"t": ["10"]}]
    backend.cleanup_job(run.job_id)


# -- the real engine ------------------------------------------------------------------------------


def _removal_seen(backend: LocalDockerBackend, engine: Any) -> dict[str, Any]:
    """What the container was (state, output) when the backend removed it, and when."""
    seen: dict[str, Any] = {}
    remove = backend._remove

    def looking_first(container_id: str) -> bool:
        attrs = engine.api.inspect_container(container_id)
        seen.update(
            state=attrs["State"],
            logs=engine.api.logs(container_id).decode("utf-8", "replace"),
            at=time.monotonic(),
        )
        return remove(container_id)

    backend._remove = looking_first  # type: ignore[method-assign]
    return seen


def _until_printed(engine: Any, container_id: str, text: str) -> None:
    _until(lambda: text in engine.api.logs(container_id).decode(), timeout=20)


# the shell is PID 1: without a trap, the kernel drops SIGTERM (a session that does not end on it)
SAVES_ITS_WORK = (
    "sh -c 'trap \"echo got SIGTERM; sleep 3; echo work saved; exit 0\" TERM; echo ready; sleep 300 & wait'"
)
IGNORES_SIGTERM = "sh -c 'echo ready; sleep 300 & wait'"


@pytest.mark.parametrize("how", ["cancel", "destroy_session"])
def test_real_engine_the_session_gets_sigterm_and_its_grace(
    how: str, engine: Any, make_backend: Any, clock: Clock
) -> None:
    backend = make_backend(SAVES_ITS_WORK, AIIMPL_DOCKER_STOP_GRACE_SECONDS="30")
    run = _running(backend, clock, job_id=31)
    container_id = str(run.run_id)
    _until_printed(engine, container_id, "ready")  # its trap is set
    seen = _removal_seen(backend, engine)

    started = time.monotonic()
    _stopping(backend, run, how)
    assert seen == {}  # returned before the removal: not after the 3 s the session takes to save its work

    assert backend.wait_for_stops(timeout=40)
    assert "got SIGTERM" in seen["logs"] and "work saved" in seen["logs"]
    assert seen["state"]["ExitCode"] == 0  # it ended by itself, not killed (137)
    assert seen["at"] - started >= 3  # removed only once it had saved its work
    assert ours(engine) == []


def test_real_engine_a_session_ignoring_sigterm_is_killed_after_its_grace(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    backend = make_backend(IGNORES_SIGTERM, AIIMPL_DOCKER_STOP_GRACE_SECONDS="2")
    run = _running(backend, clock, job_id=32)
    _until_printed(engine, str(run.run_id), "ready")
    seen = _removal_seen(backend, engine)

    started = time.monotonic()
    backend.cancel(run)
    assert backend.wait_for_stops(timeout=30)

    assert seen["state"]["ExitCode"] == 137  # SIGKILL
    assert 2 <= seen["at"] - started < 20  # its grace, and not much more
    assert ours(engine) == []


def test_real_engine_an_exited_container_is_removed_at_once(
    engine: Any, make_backend: Any, clock: Clock
) -> None:
    backend = make_backend("sh -c 'exit 3'")
    run = _running(backend, clock, job_id=33)
    _until(lambda: engine.containers.get(run.run_id).status == "exited", timeout=20)
    backend.cancel(run)
    assert ours(engine) == []
