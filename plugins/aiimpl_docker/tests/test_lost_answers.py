"""Dispatch when the engine's answer is lost: a slow engine under load (the client's read timeout
runs out) or a connection dropped after the request went out. The engine may have done what it was
asked all the same, so:

* a create is sent again under the same name, which the engine gives one container only (a name
  in use is refused: 409 from Docker, 500 from Podman 4); the container is then found by its name
  and started — never a second session for one job;
* a start is never sent again (a second start of a container that has already ended runs its
  session again): whether the container started is read; one still ``created`` may yet be started
  by the first request, and the dispatch raises ``DispatchUnanswered``: the job waits for
  ``poll_runs`` to find its container by its labels, or ends ``run_not_found``;
* a request that never reached the engine fails the dispatch as before.

Against the fake engine, every request checked against the Engine API description; and against
the real engine when there is one, through a proxy that loses an answer the engine gave.
"""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import flask
import pytest
from aiimpl_core.errors import DispatchError, DispatchUnanswered, ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, JobTransition
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import reconcile
from aiimpl_core.testing.contract import (
    make_context,
    sample_dispatch_request,
    sample_in_flight_run,
    sample_mapping,
)
from aiimpl_core.testing.fakes import FakeTracker
from aiimpl_core.testing.serving import serve_wsgi
from aiimpl_core.types import DispatchRequest, InFlightRun, RunPhase

from aiimpl_docker import client as engine_client
from aiimpl_docker.backend import LocalDockerBackend

from .conftest import FAKE_ENGINE_IMAGE, Clock, add_eng_mapping, ours
from .fake_engine import FakeEngine

IMAGE = FAKE_ENGINE_IMAGE
SECRET = "team-secret-value-7a21"
#: the client's timeout (``AIIMPL_DOCKER_TIMEOUT_SECONDS``) where an answer is held back: it runs
#: out, as under load
SHORT_TIMEOUT = "2"


def _short_timeout(settings: Any) -> None:
    """A short client timeout for the backend reading ``settings`` (before it first connects)."""
    settings["AIIMPL_DOCKER_TIMEOUT_SECONDS"] = SHORT_TIMEOUT


def _request(job_id: int = 5) -> DispatchRequest:
    return sample_dispatch_request(
        job_id,
        mapping=sample_mapping(),
        env={"AIIMPL_JOB_ID": str(job_id), "TEAM_TOKEN": SECRET, "AIIMPL_SECRET_NAMES": "TEAM_TOKEN"},
        secret_names=frozenset({"TEAM_TOKEN"}),
    )


def _unlinked(req: DispatchRequest, clock: Clock) -> InFlightRun:
    """The run as the reconciler asks about it after an unanswered dispatch: no run id."""
    return sample_in_flight_run(req, dispatched_at=clock())


def _states(fake: FakeEngine) -> list[str]:
    return [c["State"] for c in fake.containers.values()]


@pytest.mark.parametrize("conflict", [409, 500], ids=["docker", "podman"])
def test_a_create_whose_answer_was_lost_is_found_by_its_name_and_started(
    backend: LocalDockerBackend, fake_engine: FakeEngine, conflict: int
) -> None:
    fake_engine.name_conflict_status = conflict
    fake_engine.lose_next("POST", "/containers/create")  # created; the answer never came

    result = backend.dispatch(_request())

    [(container_id, container)] = fake_engine.containers.items()
    assert result.run_id == container_id and container["State"] == "running"
    assert len(fake_engine.calls("POST", "/containers/create")) == 2  # the second one refused: the name
    assert len(fake_engine.calls("POST", "/start")) == 1
    assert fake_engine.calls("DELETE") == []


def test_a_create_whose_answer_was_lost_before_it_was_done_is_made_once(
    backend: LocalDockerBackend, fake_engine: FakeEngine
) -> None:
    fake_engine.lose_next("POST", "/containers/create", carried_out=False)

    result = backend.dispatch(_request())

    [(container_id, container)] = fake_engine.containers.items()
    assert result.run_id == container_id and container["State"] == "running"


def test_a_start_whose_answer_was_lost_is_not_sent_again(
    backend: LocalDockerBackend, fake_engine: FakeEngine
) -> None:
    fake_engine.lose_next("POST", "/start")  # started; the answer never came

    result = backend.dispatch(_request())

    # linked, and left running: neither a second start nor a removal that would kill the session
    [(container_id, container)] = fake_engine.containers.items()
    assert result.run_id == container_id and container["State"] == "running"
    assert len(fake_engine.calls("POST", "/start")) == 1
    assert fake_engine.calls("DELETE") == []


def test_a_slow_start_is_unanswered_and_its_container_is_followed_by_its_labels(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    _short_timeout(backend.context.config)
    held = fake_engine.hold_next("POST", "/start")  # the engine is slow: the read timeout runs out
    req = _request()

    with pytest.raises(DispatchUnanswered) as info:
        backend.dispatch(req)

    assert "no answer from the engine" in info.value.message and SECRET not in info.value.message
    assert info.value.status is None
    [container_id] = fake_engine.containers
    assert _states(fake_engine) == ["created"]  # its start may yet come: not sent again, not removed
    # not linked while it has not started: its job ends run_not_found if it never does
    [pending] = backend.poll_runs([_unlinked(req, clock)])
    assert (pending.phase, pending.run_id) == (RunPhase.PENDING, None)

    held.release()  # the engine gets to it
    [running] = backend.poll_runs([_unlinked(req, clock)])

    assert (running.phase, running.run_id) == (RunPhase.RUNNING, container_id)
    assert len(fake_engine.calls("POST", "/start")) == 1 and fake_engine.calls("DELETE") == []


def test_a_create_unanswered_twice_is_unanswered_and_never_started(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    _short_timeout(backend.context.config)
    held = fake_engine.hold_next("POST", "/containers/create")
    fake_engine.lose_next("POST", "/containers/create", carried_out=False)  # the second one too
    req = _request()

    with pytest.raises(DispatchUnanswered):
        backend.dispatch(req)
    held.release()  # the first create is done after all: a container never started

    assert _states(fake_engine) == ["created"]
    [pending] = backend.poll_runs([_unlinked(req, clock)])
    assert (pending.phase, pending.run_id) == (RunPhase.PENDING, None)
    assert fake_engine.calls("POST", "/start") == []
    # cancelled (or ended run_not_found, and cleaned up): the container goes, its secrets with it
    backend.cancel(_unlinked(req, clock))
    assert fake_engine.containers == {}


def test_a_run_not_linked_is_cancelled_by_its_labels(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    req = _request()
    container_id = backend.dispatch(req).run_id

    backend.cancel(_unlinked(req, clock))  # its job was cancelled before a poll linked the run

    assert backend.wait_for_stops(timeout=10)
    assert fake_engine.stops(container_id) == [{"t": ["120"]}]
    assert fake_engine.containers == {}


def test_a_never_started_container_of_an_ended_job_is_swept(
    backend: LocalDockerBackend, fake_engine: FakeEngine, clock: Clock
) -> None:
    # left behind never started: its dispatch failed and its removal too (or a create the engine
    # carried out after its dispatch had given up, its job ended run_not_found meanwhile)
    fake_engine.fail_next("POST", "/start", 500, "OCI runtime create failed: exec: no such file or directory")
    fake_engine.fail_next("DELETE", "", 500, "removal of container failed: device busy")
    with pytest.raises(DispatchError):
        backend.dispatch(_request(5))
    assert _states(fake_engine) == ["created"]

    backend.sweep(3600)  # young: it may be a dispatch under way
    assert _states(fake_engine) == ["created"]
    clock.advance(minutes=6)
    backend.sweep(3600)  # it holds the session's secrets: gone well before the lifetime
    assert fake_engine.containers == {}


def test_a_refused_create_after_a_lost_one_is_a_refusal(
    backend: LocalDockerBackend, fake_engine: FakeEngine
) -> None:
    fake_engine.lose_next("POST", "/containers/create", carried_out=False)
    fake_engine.fail_next("POST", "/containers/create", 400, "invalid mount config for type bind")

    with pytest.raises(DispatchError) as info:
        backend.dispatch(_request())

    assert type(info.value) is DispatchError and info.value.status == 400
    assert "invalid mount config" in info.value.message and fake_engine.containers == {}


def test_an_engine_that_cannot_be_reached_fails_the_dispatch(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    backend = LocalDockerBackend(make_context({"AIIMPL_DOCKER_IMAGE": IMAGE}, clock=clock))

    with pytest.raises(DispatchError) as info:
        backend.dispatch(_request())

    assert type(info.value) is DispatchError and info.value.status is None  # the job fails, as before


def test_what_may_have_been_done_is_told_from_what_was_not() -> None:
    from aiimpl_docker.backend import _maybe_done

    assert _maybe_done(engine_client.NoAnswer("no answer", provider="local-docker"))
    # a proxy in front of the engine answered for it that it got none
    assert _maybe_done(ProviderError("bad gateway", provider="local-docker", status=502))
    assert _maybe_done(ProviderError("gateway timeout", provider="local-docker", status=504))
    # the engine's own answer, or a request that never reached it
    assert not _maybe_done(ProviderError("refused", provider="local-docker", status=500))
    assert not _maybe_done(ProviderError("unreachable", provider="local-docker"))


# -- inside the orchestrator ------------------------------------------------------------------------


def test_a_job_whose_start_went_unanswered_is_linked_once_its_container_runs(
    app: Any,
    client: Any,
    admin_headers: dict[str, str],
    tracker: FakeTracker,
    app_engine: FakeEngine,
) -> None:
    _short_timeout(app.config)
    add_eng_mapping()
    assert client.post("/api/runner-mode", json={"mode": "local"}, headers=admin_headers).status_code == 200
    tracker.add("ENG-1", title="Add a health endpoint")
    held = app_engine.hold_next("POST", "/start")

    run_cycle(reconcile=False)

    job = db.session.scalars(db.select(Job)).one()
    assert (job.status, job.run_id) == ("dispatched", None)  # not failed: its session may run
    reasons = db.session.scalars(db.select(JobTransition.reason).where(JobTransition.job_id == job.id)).all()
    assert any("without an answer" in (r or "") for r in reasons), reasons
    [container_id] = app_engine.containers
    backoff = poller.backoff_of("runner", "local-docker")  # the next issues wait: the engine is slow
    assert backoff is not None and "no answer from the engine" in backoff.error

    held.release()
    reconcile(now=backoff.until + timedelta(seconds=1))

    db.session.expire_all()
    job = db.session.get(Job, job.id)
    assert (job.status, job.run_id) == ("running", container_id)
    assert len(app_engine.calls("POST", "/start")) == 1 and len(app_engine.containers) == 1


# -- on the real engine -----------------------------------------------------------------------------


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


class LosingProxy:
    """The real engine's API on ``127.0.0.1``, which passes every request on and loses the answer
    to the first one whose method and path end match (the engine carried it out)."""

    def __init__(self, socket_path: str, method: str, path_suffix: str) -> None:
        self.lose: tuple[str, str] | None = (method, path_suffix)
        app = flask.Flask("losing-proxy")

        @app.route("/<path:path>", methods=["GET", "POST", "DELETE", "HEAD", "PUT"])
        def forward(path: str) -> flask.Response:
            request = flask.request
            upstream = _Unix(socket_path)
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
            upstream.request(request.method, request.full_path.rstrip("?"), request.get_data(), headers)
            answer = upstream.getresponse()
            body = answer.read()
            upstream.close()
            if self.lose and request.method == self.lose[0] and request.path.endswith(self.lose[1]):
                self.lose = None
                request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)  # the answer is lost
            return flask.Response(body, status=answer.status, content_type=answer.getheader("Content-Type"))

        self._live = serve_wsgi(app, name="losing-proxy").start()
        self.url = f"tcp://127.0.0.1:{self._live.port}"

    def close(self) -> None:
        self._live.stop()


@pytest.fixture
def losing(engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A proxy of the real engine that loses one answer, as ``DOCKER_HOST`` (for the backends made
    afterwards)."""
    host = os.environ["DOCKER_HOST"]
    if not host.startswith("unix://"):
        pytest.skip(f"the engine is not on a unix socket ({host})")
    proxies: list[LosingProxy] = []

    def lose(method: str, path_suffix: str) -> LosingProxy:
        proxy = LosingProxy(host.removeprefix("unix://"), method, path_suffix)
        proxies.append(proxy)
        monkeypatch.setenv("DOCKER_HOST", proxy.url)
        return proxy

    yield lose
    for proxy in proxies:
        proxy.close()


@pytest.mark.parametrize("lost", ["/containers/create", "/start"])
def test_on_the_real_engine_a_lost_answer_still_makes_one_session(
    engine: Any, losing: Any, make_backend: Any, clock: Clock, lost: str
) -> None:
    proxy = losing("POST", lost)
    backend = make_backend("sh -c 'sleep 30 & wait'")
    req = _request(31)

    run_id = backend.dispatch(req).run_id

    assert proxy.lose is None  # the answer was lost
    [container] = ours(engine)  # one container, started once
    assert container.id == run_id and engine.containers.get(run_id).status == "running"
    backend.cancel(_unlinked(req, clock))  # found by its labels
    assert backend.wait_for_stops(timeout=30)
