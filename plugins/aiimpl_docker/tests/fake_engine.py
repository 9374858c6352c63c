"""A fake Docker Engine API on ``127.0.0.1``: the operations the backend uses, nothing more.

It answers over TCP, so the real ``docker`` SDK and the real backend code run against it; no
container engine is needed. Containers are kept in memory with what the backend reads (state,
exit code, end time, labels, environment, log output); tests drive their lives with
:meth:`FakeEngine.exit` and make the next matching request fail with :meth:`FakeEngine.fail_next`::

    with FakeEngine(clock=clock) as engine:
        monkeypatch.setenv("DOCKER_HOST", engine.url)
        ...
        engine.exit(container_id, 1, b"git clone failed\\n")

Every request and every answer is checked against the Docker Engine API description
(``docker/swagger.yaml`` of the shared API descriptions, see :mod:`.engine_spec`): what breaks it
is collected in :attr:`FakeEngine.violations`, and leaving the ``with`` block fails the test.

An answer can be lost, as a slow or failing engine loses it: :meth:`FakeEngine.lose_next` carries
a request out (or not) and closes the connection without an answer; :meth:`FakeEngine.hold_next`
keeps a request waiting, unanswered, until the test releases it (the client's read timeout runs out
meanwhile), then carries it out. A create under a name in use is refused as Docker refuses it (409)
or, with :attr:`FakeEngine.name_conflict_status` set to 500, as Podman 4 does.

An image the engine does not have is pulled (``POST /images/create``) from :attr:`FakeEngine.registry`
and refused (404) when not there. A pull streams its progress as the engine does, one JSON message
after another (each checked against ``CreateImageInfo``); :meth:`FakeEngine.plan_pull` makes the
next one pause, stall, report progress without end, or report an error in its stream.

A stop (``POST /containers/{id}/stop?t=N``) is SIGTERM, then SIGKILL ``t`` seconds later, as
the description says: a container ends on SIGTERM at once (exit code 143) unless the test holds
its stop with :meth:`FakeEngine.hold_stop` — a session saving its work — and a wait
(``POST /containers/{id}/wait``) answers once the container is no longer running.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import flask
from aiimpl_core.testing.serving import serve_wsgi

from .engine_spec import engine_description

#: what Docker reports as the end of a container that has not ended
NEVER = "0001-01-01T00:00:00Z"
#: the grace of a stop without ``t`` (a container created without ``StopTimeout``)
DEFAULT_STOP_TIMEOUT = 10
#: how a pull goes (:meth:`FakeEngine.plan_pull`)
PULL_PLANS = frozenset({"pause", "stall", "trickle", "error"})
#: seconds between the progress messages of a pull that ``trickle``s
TRICKLE_EVERY = 0.2
#: each message of a pull's progress stream
PROGRESS_SCHEMA = {"$ref": "#/definitions/CreateImageInfo"}


def _stamp(moment: datetime) -> str:
    """Docker's time stamps: RFC 3339 with nanoseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class Held:
    """A request :meth:`FakeEngine.hold_next` keeps waiting."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._done = threading.Event()

    def release(self, timeout: float = 10) -> None:
        """Let the engine carry the request out; returns once it has (its answer finds no one)."""
        self._released.set()
        assert self._done.wait(timeout), "the held request was not carried out"


class FakeEngine:
    """Containers behind the Docker Engine API.

    :param clock: the engine's time (creation and end of containers); tests pass the backend's.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.containers: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, bytes] = {}
        #: images the engine has (name → id), for ``GET /images/{name}/json``
        self.images: dict[str, str] = {}
        #: images a pull fetches (name with its tag → id); any other is refused as missing
        self.registry: dict[str, str] = {}
        #: how the next pulls go: (plan, seconds, message), see :meth:`plan_pull`
        self.pull_plans: list[tuple[str, float, str]] = []
        self.requests: list[tuple[str, str]] = []
        #: every exchange: method, path, query (name -> values) and the answer's status (``None``
        #: until it is sent)
        self.exchanges: list[dict[str, Any]] = []
        #: what broke the Engine API description, requests and answers alike
        self.violations: list[str] = []
        #: signals delivered to containers, in order: (container id, ``SIGTERM`` / ``SIGKILL``)
        self.signals: list[tuple[str, str]] = []
        self.failures: list[tuple[str, str, int, str]] = []  # method, path suffix, status, message
        #: answers to lose: method, path suffix, how (``drop``, ``drop-unread``, ``hold``), the hold
        self.losses: list[tuple[str, str, str, Held | None]] = []
        #: the status of a create under a name in use: Docker's 409 (Podman 4 answers 500)
        self.name_conflict_status = 409
        self._holds: list[Held] = []
        self._lock = threading.Lock()
        #: notified whenever a container ends or goes (stops and waits wait on it)
        self._changed = threading.Condition(self._lock)
        #: stops held by the test: container id -> (released, exit code once released)
        self._held: dict[str, tuple[threading.Event, int]] = {}
        self._closing = False
        self._live = serve_wsgi(self._build(), name="fake-engine")

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self._live.port}"

    def __enter__(self) -> FakeEngine:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:  # no request stays blocked on a test that has ended
            self._closing = True
            self._changed.notify_all()
        for released, _ in list(self._held.values()):
            released.set()
        for held in self._holds:
            held._released.set()
        self._live.stop()
        if exc[0] is None:
            self.assert_clean()

    def assert_clean(self) -> None:
        """Fail when a request or an answer broke the Engine API description."""
        if self.violations:
            raise AssertionError(
                f"{len(self.violations)} Engine API violation(s):\n" + "\n".join(self.violations)
            )

    # -- test controls --

    def exit(self, container_id: str, code: int, output: bytes = b"", *, oom_killed: bool = False) -> None:
        """The container's process ends with ``code`` after printing ``output`` (killed by the
        kernel for its memory limit, with ``oom_killed``)."""
        with self._changed:
            container = self.containers[container_id]
            container["State"], container["ExitCode"] = "exited", code
            container["OOMKilled"] = oom_killed
            container["FinishedAt"] = _stamp(self.clock())
            if output:
                self.logs[container_id] = self.logs.get(container_id, b"") + output
            self._changed.notify_all()

    def hold_stop(self, container_id: str, exit_code: int = 0) -> threading.Event:
        """The container's session takes SIGTERM and saves its work until the returned event is
        set, then exits with ``exit_code``; a stop's ``t`` seconds run out first: SIGKILL (137)."""
        released = threading.Event()
        self._held[container_id] = (released, exit_code)
        return released

    def stops(self, container_id: str | None = None) -> list[dict[str, list[str]]]:
        """The query of each stop request received (of one container, when given)."""
        return [
            x["query"]
            for x in self.exchanges
            if x["method"] == "POST"
            and x["path"].endswith("/stop")
            and (container_id is None or f"/containers/{container_id}/" in x["path"])
        ]

    def print(self, container_id: str, output: bytes) -> None:
        """The container prints ``output`` (and goes on)."""
        with self._lock:
            self.logs[container_id] = self.logs.get(container_id, b"") + output

    def fail_next(self, method: str, path_suffix: str, status: int, message: str) -> None:
        """Answer the next request whose path ends with ``path_suffix`` with an error."""
        self.failures.append((method.upper(), path_suffix, status, message))

    def lose_next(self, method: str, path_suffix: str, *, carried_out: bool = True) -> None:
        """The answer to the next request whose path ends with ``path_suffix`` is lost: the engine
        carries the request out (unless ``carried_out`` is false) and closes the connection
        without answering."""
        self.losses.append((method.upper(), path_suffix, "drop" if carried_out else "drop-unread", None))

    def hold_next(self, method: str, path_suffix: str) -> Held:
        """The next request whose path ends with ``path_suffix`` waits, unanswered, until the
        returned hold is released (or the test ends): a slow engine, whose client gives up when its
        read timeout runs out. The request is carried out when released."""
        held = Held()
        self._holds.append(held)
        self.losses.append((method.upper(), path_suffix, "hold", held))
        return held

    def plan_pull(self, how: str, *, seconds: float = 10.0, message: str = "") -> None:
        """How the next pull goes (without a plan, the image comes from :attr:`registry` at once):

        - ``pause``: the answer's headers and a first progress message, then nothing for
          ``seconds`` (a slow registry), then the rest: the image is pulled;
        - ``stall``: the headers and a first progress message, then nothing for ``seconds`` (a
          registry that stopped answering), then the stream ends without the image;
        - ``trickle``: progress, a message every :data:`TRICKLE_EVERY` seconds for ``seconds``, then
          the stream ends without the image;
        - ``error``: the headers and some progress, then ``message`` in the stream, as the engine
          reports a download that failed once it had begun to answer (a rate limit, a layer that
          cannot be read).

        A pull whose client leaves ends there: :meth:`pull_exchanges` tells.
        """
        assert how in PULL_PLANS, how
        self.pull_plans.append((how, seconds, message))

    def pull_exchanges(self) -> list[dict[str, Any]]:
        """The exchanges of the pulls, each with ``stream``: ``None`` while its progress is being
        sent, then ``finished`` (all of it sent), or ``client left`` (its client closed the
        connection first)."""
        return [x for x in self.exchanges if x["method"] == "POST" and x["path"].endswith("/images/create")]

    def calls(self, method: str, path_suffix: str = "") -> list[str]:
        """The paths of the requests received with this method (ending with ``path_suffix``)."""
        return [p for m, p in self.requests if m == method.upper() and p.endswith(path_suffix)]

    # -- the API --

    def _build(self) -> flask.Flask:
        app = flask.Flask("fake-docker-engine")

        def error(status: int, message: str) -> flask.Response:
            resp = flask.jsonify({"message": message})
            resp.status_code = status
            return resp

        def find(ref: str) -> dict[str, Any] | None:
            for key, container in self.containers.items():
                if key == ref or key.startswith(ref) or container["Name"] == f"/{ref}":
                    return container
            return None

        description = engine_description()

        @app.before_request
        def _record_and_fail() -> flask.Response | None:
            request = flask.request
            self.requests.append((request.method, request.path))
            # recorded as it arrives: a stop answers only once its container has stopped
            flask.g.exchange = {
                "method": request.method,
                "path": request.path,
                "query": {k: request.args.getlist(k) for k in request.args},
                "status": None,
            }
            self.exchanges.append(flask.g.exchange)
            self.violations += description.validate_request(
                request.method,
                request.path,
                flask.g.exchange["query"],
                request.get_data(cache=True),
                request.content_type,
            )
            for i, (method, suffix, how, held) in enumerate(self.losses):
                if request.method == method and request.path.endswith(suffix):
                    del self.losses[i]
                    if held is not None:  # the engine is slow: the request waits
                        held.arrived.set()
                        held._released.wait()
                        flask.g.held = held
                        break
                    flask.g.drop = True
                    if how == "drop-unread":
                        return flask.Response(status=500)  # never sent: the connection is dropped
                    break
            for i, (method, suffix, status, message) in enumerate(self.failures):
                if flask.request.method == method and flask.request.path.endswith(suffix):
                    del self.failures[i]
                    return error(status, message)
            return None

        @app.after_request
        def _check_answer(response: flask.Response) -> flask.Response:
            request = flask.request
            if flask.g.get("drop"):  # the answer is lost: the connection closes without one
                flask.g.exchange["lost"] = True
                request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
                return response
            if flask.g.get("held") is not None:
                flask.g.exchange["lost"] = True  # its client gave up waiting
                flask.g.held._done.set()
            flask.g.exchange["status"] = response.status_code
            # a stream (a pull's progress) is checked as it is sent: reading it here would wait for its end
            body = b"" if response.is_streamed else response.get_data()
            self.violations += description.validate_response(
                request.method, request.path, response.status_code, body, response.content_type
            )
            return response

        @app.get("/_ping")
        @app.get("/<version>/_ping")
        def ping(version: str | None = None) -> Any:
            return "OK"

        @app.get("/version")
        @app.get("/<version>/version")
        def server_version(version: str | None = None) -> Any:
            return flask.jsonify({"ApiVersion": "1.45", "Version": "26.0.0", "MinAPIVersion": "1.24"})

        @app.get("/<version>/images/<path:name>/json")
        def inspect_image(version: str, name: str) -> Any:
            image_id = self.images.get(name)
            if image_id is None:
                return error(404, f"failed to find image {name}: {name}: No such image")
            return flask.jsonify({"Id": image_id, "RepoTags": [name], "Created": _stamp(self.clock())})

        @app.post("/<version>/images/create")
        def pull(version: str) -> Any:
            name = flask.request.args.get("fromImage", "")
            tag = flask.request.args.get("tag")
            ref = f"{name}:{tag}" if tag else name
            how, seconds, message = self.pull_plans.pop(0) if self.pull_plans else ("", 0.0, "")
            if how in ("", "pause") and ref not in self.registry:
                # the registry has no such image: refused before any progress, as Docker does
                return error(404, f"pull access denied for {ref}, repository does not exist or may require "
                                  "'docker login'")
            exchange = flask.g.exchange
            exchange["stream"] = None
            connection = flask.request.environ["werkzeug.socket"]
            layer = uuid.uuid4().hex[:12]

            def left(wait: float = 0.0) -> bool:
                """Whether the client closed its connection (read as it comes, for ``wait`` s)."""
                try:
                    readable, _, _ = select.select([connection], [], [], wait)
                    return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
                except (OSError, ValueError):
                    return True

            def quiet(seconds: float) -> bool:
                """Send nothing for ``seconds``; false when the client left (or the test ended)."""
                ends = time.monotonic() + seconds
                while time.monotonic() < ends:
                    if self._closing or left(min(0.05, max(0.0, ends - time.monotonic()))):
                        return False
                return True

            def event(payload: dict[str, Any]) -> bytes:
                problems = description.schema_errors(PROGRESS_SCHEMA, payload)
                self.violations += [f"pull progress {payload}: {problem}" for problem in problems]
                return json.dumps(payload).encode() + b"\r\n"

            def progress() -> Any:
                try:
                    yield event({"status": f"Pulling from {name}", "id": tag or "latest"})
                    yield event({"status": "Pulling fs layer", "progressDetail": {}, "id": layer})
                    if how == "trickle":
                        ends, current = time.monotonic() + seconds, 0
                        while time.monotonic() < ends:
                            current += 1
                            yield event({"status": "Downloading", "id": layer,
                                         "progressDetail": {"current": current, "total": 1 << 30}})
                            if not quiet(TRICKLE_EVERY):
                                exchange["stream"] = "client left"
                                return
                    elif how in ("pause", "stall") and not quiet(seconds):
                        exchange["stream"] = "client left"
                        return
                    if how == "error":
                        yield event({"errorDetail": {"message": message}, "error": message})
                    elif how in ("", "pause"):
                        yield event({"status": "Download complete", "progressDetail": {}, "id": layer})
                        yield event({"status": "Pull complete", "progressDetail": {}, "id": layer})
                        self.images[ref] = self.registry[ref]
                        yield event({"status": f"Digest: {self.registry[ref]}"})
                        yield event({"status": f"Status: Downloaded newer image for {ref}"})
                    exchange["stream"] = "finished"
                except GeneratorExit:  # a write failed: the client has gone
                    exchange["stream"] = "client left"
                    raise

            return flask.Response(progress(), mimetype="application/json")

        @app.post("/<version>/containers/create")
        def create(version: str) -> Any:
            body = flask.request.get_json(force=True)
            image = str(body.get("Image") or "")
            if image not in self.images:
                return error(404, f"No such image: {image}")
            name = flask.request.args.get("name")
            container_id = uuid.uuid4().hex + uuid.uuid4().hex
            with self._lock:
                taken = next((c for c in self.containers.values() if name and c["Name"] == f"/{name}"), None)
                if taken is not None:
                    return error(
                        self.name_conflict_status,
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{taken["Id"]}". You have to remove (or rename) that container to be able to '
                        "reuse that name.",
                    )
                self.containers[container_id] = {
                    "Id": container_id,
                    "Name": "/" + (flask.request.args.get("name") or container_id[:12]),
                    "Created": self.clock().timestamp(),
                    "State": "created",
                    "ExitCode": 0,
                    "FinishedAt": NEVER,
                    "Config": {
                        "Env": body.get("Env") or [],
                        "Labels": body.get("Labels") or {},
                        "Image": body.get("Image"),
                        "Tty": False,
                    },
                    # what the create asked of the host (network, limits), for the tests to read
                    "Requested": dict(body.get("HostConfig") or {}),
                }
            return flask.jsonify({"Id": container_id, "Warnings": []}), 201

        @app.get("/<version>/containers/<ref>/json")
        def inspect(version: str, ref: str) -> Any:
            container = find(ref)
            if container is None:
                return error(404, f"No such container: {ref}")
            return flask.jsonify(
                {
                    "Id": container["Id"],
                    "Name": container["Name"],
                    "Created": _stamp(datetime.fromtimestamp(container["Created"], UTC)),
                    "State": {
                        "Status": container["State"],
                        "Running": container["State"] == "running",
                        "ExitCode": container["ExitCode"],
                        "FinishedAt": container["FinishedAt"],
                        "OOMKilled": container.get("OOMKilled", False),
                    },
                    "Config": container["Config"],
                    "HostConfig": {"LogConfig": {"Type": "json-file"}},
                }
            )

        @app.post("/<version>/containers/<ref>/start")
        def start(version: str, ref: str) -> Any:
            container = find(ref)
            if container is None:
                return error(404, f"No such container: {ref}")
            container["State"] = "running"
            return "", 204

        @app.post("/<version>/containers/<ref>/stop")
        def stop(version: str, ref: str) -> Any:
            try:
                grace = int(flask.request.args.get("t", DEFAULT_STOP_TIMEOUT))
            except ValueError:
                return error(400, f"invalid value for t: {flask.request.args.get('t')!r}")
            container = find(ref)
            if container is None:
                return error(404, f"No such container: {ref}")
            if container["State"] != "running":
                return "", 304  # "container already stopped"
            container_id = container["Id"]
            self.signals.append((container_id, "SIGTERM"))
            held = self._held.get(container_id)
            if held is None:  # the process ends on SIGTERM
                self.exit(container_id, 143)
                return "", 204
            released, code = held
            # the answer comes once the container has stopped: by itself, or SIGKILL after ``t``
            saved = released.wait(timeout=None if grace < 0 else grace) and not self._closing
            if (self.containers.get(container_id) or {}).get("State") != "running":
                return "", 204  # removed or ended meanwhile
            if saved:
                self.exit(container_id, code)
            else:
                self.signals.append((container_id, "SIGKILL"))
                self.exit(container_id, 137)
            return "", 204

        @app.post("/<version>/containers/<ref>/wait")
        def wait(version: str, ref: str) -> Any:
            container = find(ref)
            if container is None:
                return error(404, f"No such container: {ref}")
            with self._changed:  # condition ``not-running``: until it has ended (or gone)
                self._changed.wait_for(lambda: self._closing or container["State"] != "running")
            return flask.jsonify({"StatusCode": container["ExitCode"]})

        @app.get("/<version>/containers/<ref>/logs")
        def logs(version: str, ref: str) -> Any:
            container = find(ref)
            if container is None:
                return error(404, f"No such container: {ref}")
            data = self.logs.get(container["Id"], b"")
            # the multiplexed stream of a container without a TTY: stdout frames
            frame = struct.pack(">BxxxL", 1, len(data)) + data if data else b""
            return flask.Response(frame, mimetype="application/vnd.docker.raw-stream")

        @app.delete("/<version>/containers/<ref>")
        def remove(version: str, ref: str) -> Any:
            container = find(ref)
            if container is None:
                return error(404, f"No such container: {ref}")
            forced = flask.request.args.get("force") in ("1", "True", "true")
            if container["State"] == "running" and not forced:
                return error(409, "You cannot remove a running container")
            if container["State"] == "running":
                self.signals.append((container["Id"], "SIGKILL"))
                self.exit(container["Id"], 137)
            with self._changed:
                del self.containers[container["Id"]]
                self._changed.notify_all()
            return "", 204

        @app.get("/<version>/containers/json")
        def listing(version: str) -> Any:
            wanted = json.loads(flask.request.args.get("filters") or "{}").get("label") or []
            if isinstance(wanted, dict):
                wanted = [k for k, on in wanted.items() if on]
            every_state = flask.request.args.get("all") in ("1", "True", "true")
            out = []
            with self._lock:
                for container in self.containers.values():
                    labels = container["Config"]["Labels"]
                    if not all(_has_label(labels, w) for w in wanted):
                        continue
                    if not every_state and container["State"] != "running":
                        continue
                    out.append(
                        {
                            "Id": container["Id"],
                            "Names": [container["Name"]],
                            "Image": container["Config"]["Image"],
                            "Created": int(container["Created"]),
                            "State": container["State"],
                            "Status": container["State"],
                            "Labels": labels,
                        }
                    )
            return flask.jsonify(out)

        return app


def _has_label(labels: dict[str, str], wanted: str) -> bool:
    name, eq, value = wanted.partition("=")
    return name in labels and (not eq or labels[name] == value)
