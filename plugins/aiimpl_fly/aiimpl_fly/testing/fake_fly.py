"""A fake Fly Machines API on ``127.0.0.1``, validated against Fly's Swagger description.

It keeps machines in memory the way Fly reports them (``state``, ``config`` echoed back,
``events`` with ``exit`` events carrying ``exit_event.exit_code``, destroyed machines listed only
with ``include_deleted``) and checks the bearer token. Tests drive the machines' lives with
:meth:`FakeFly.exit` and read what was sent from :attr:`FakeFly.server`'s records::

    with FakeFly(token="fly-token", app="aiimpl-sessions") as fly:
        ...  # point AIIMPL_FLY_API_URL at fly.url
        fly.exit(machine_id, 1)
        fly.server.assert_clean()
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import flask
from aiimpl_core.testing.fakeserver import UNDOCUMENTED_HEADER

from .swagger import SwaggerDescription, SwaggerFakeServer


def fly_spec_path() -> str:
    """``fly/machines-api.swagger.json`` of the shared API descriptions."""
    from aiimpl_core.testing.pytest_plugin import specs_dir

    return os.path.join(specs_dir(), "fly", "machines-api.swagger.json")


@lru_cache(maxsize=1)
def fly_description() -> SwaggerDescription:
    """Fly's description, with ``fly.Duration`` as it travels.

    The description renders Go's ``fly.Duration`` (``struct { time.Duration }``) as an object;
    on the wire it is a Go duration string such as ``"120s"`` (what Fly's own client, fly-go,
    sends) or a number of nanoseconds, which is what Fly's API reads.
    """
    with open(fly_spec_path(), encoding="utf-8") as fh:
        document = json.load(fh)
    document["definitions"]["fly.Duration"] = {
        "type": ["string", "integer"], "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
    # a property the description does not declare is one Fly's decoder ignores: a name misspelt
    # (auto_destory) would quietly leave machines behind
    return SwaggerDescription(document, closed_request_bodies=True)


class Hold:
    """A request :meth:`FakeFly.hold_next` holds: it has ``arrived`` at the fake, waits for ``go``
    and is ``done`` once carried out and answered."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.go = threading.Event()
        self.done = threading.Event()

    def release(self) -> None:
        """Let the request be carried out, and wait until it was (its client may be gone)."""
        assert self.arrived.is_set(), "the held request never came"
        self.go.set()
        assert self.done.wait(timeout=10), "the held request was not carried out"


class FakeFly:
    """One Fly app's machines behind the Machines API.

    :param token: the bearer token the fake accepts.
    :param app: the app name the fake serves (other names answer 404).
    :param clock: the time stamped on machines and events (tests pass a controllable one).
    """

    def __init__(
        self,
        token: str = "fly-test-token",
        app: str = "aiimpl-sessions",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.token = token
        self.app_name = app
        #: what ``GET /apps/{app}`` reports
        self.organization = {"name": "Acme Corp", "slug": "acme"}
        self.app_status = "deployed"
        self.clock = clock
        self.machines: dict[str, dict[str, Any]] = {}
        #: (method, path suffix, HTTP status, message, Fly's ``status`` code or ``None``)
        self.failures: list[tuple[str, str, int, str, str | None]] = []
        #: requests carried out whose answer a proxy then replaces: (method, path suffix, status)
        self.lost_answers: list[tuple[str, str, int]] = []
        #: requests held before they are carried out (a slow Fly): (method, path suffix, hold)
        self.holds: list[tuple[str, str, Hold]] = []
        self._held: list[Hold] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.description = fly_description()
        self.server = SwaggerFakeServer(self._build(), self.description)

    # -- lifecycle --

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> FakeFly:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for hold in self._held:
            hold.go.set()  # a hold never released does not keep a server thread waiting
        self.server.stop()

    # -- test controls --

    def fail_next(
        self, method: str, path_suffix: str, status: int, message: str, *, fly_status: str | None = None
    ) -> None:
        """Answer the next matching request, without carrying it out, with Fly's ``ErrorResponse``:
        ``{"error": message}``, and ``"status": fly_status`` when given (the description's
        ``main.statusCode``: ``unknown`` or ``insufficient_capacity``, Fly's answer when it cannot
        place a machine)."""
        self.failures.append((method.upper(), path_suffix, status, message, fly_status))

    def no_capacity_next(self, status: int = 503, message: str | None = None) -> None:
        """Refuse the next machine creation as Fly does when it cannot place the machine: an
        ``ErrorResponse`` with ``status: insufficient_capacity``, no machine created. The
        description names no HTTP status for it; ``status`` is the one answered."""
        self.fail_next(
            "POST",
            f"/apps/{self.app_name}/machines",
            status,
            message or "insufficient resources available to fulfill request: could not reserve resource "
            "for machine: insufficient memory available to fulfill request",
            fly_status="insufficient_capacity",
        )

    def lose_next_answer(self, method: str, path_suffix: str, status: int = 502) -> None:
        """Carry out the next matching request, then answer it with the HTML error page of a proxy
        in front of the API (the answer lost on its way back: the request took effect)."""
        self.lost_answers.append((method.upper(), path_suffix, status))

    def hold_next(self, method: str, path_suffix: str) -> Hold:
        """Hold the next matching request before it is carried out, until :meth:`Hold.release`: a
        slow Fly, whose client gives up (a read timeout) on a request Fly carries out later."""
        hold = Hold()
        self.holds.append((method.upper(), path_suffix, hold))
        self._held.append(hold)
        return hold

    def exit(self, machine_id: str, exit_code: int, *, oom_killed: bool = False) -> None:
        """The machine's process exits: stopped, then destroyed when ``auto_destroy`` is set."""
        with self._lock:
            machine = self.machines[machine_id]
            self._event(
                machine,
                "exit",
                "stopped",
                {
                    "exit_event": {
                        "exit_code": exit_code,
                        "oom_killed": oom_killed,
                        "requested_stop": False,
                        "exited_at": self._now(),
                    }
                },
            )
            machine["state"] = "destroyed" if machine["config"].get("auto_destroy") else "stopped"

    def start(self, machine_id: str) -> None:
        """The machine finished booting."""
        with self._lock:
            self.machines[machine_id]["state"] = "started"
            self._event(self.machines[machine_id], "start", "started")

    def live(self) -> list[dict[str, Any]]:
        """Machines not destroyed."""
        return [m for m in self.machines.values() if m["state"] != "destroyed"]

    # -- the API --

    def _now(self) -> str:
        return self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _event(self, machine: dict[str, Any], kind: str, status: str, request: Any = None) -> None:
        event: dict[str, Any] = {
            "id": f"ev{next(self._ids):06d}",
            "type": kind,
            "status": status,
            "source": "flyd",
            "timestamp": int(self.clock().timestamp() * 1000),
        }
        if request is not None:
            event["request"] = request
        machine["events"].insert(0, event)  # Fly lists the newest event first
        machine["updated_at"] = self._now()

    def _build(self) -> flask.Flask:
        app = flask.Flask("fake-fly")
        base = self.description.base_path

        def error(
            status: int, message: str, *, documented: bool = False, fly_status: str | None = None
        ) -> flask.Response:
            body: dict[str, Any] = {"error": message}
            if fly_status is not None:
                body["status"] = fly_status
            resp = flask.jsonify(body)
            resp.status_code = status
            if not documented:
                # the description omits most error statuses; the body is still Fly's ErrorResponse
                problems = self.description.schema_errors({"$ref": "#/definitions/ErrorResponse"}, body)
                assert not problems, problems
                resp.headers[UNDOCUMENTED_HEADER] = "1"
            return resp

        @app.before_request
        def _checks() -> flask.Response | None:
            auth = flask.request.headers.get("Authorization", "")
            if auth != f"Bearer {self.token}":
                return error(401, "You must be authenticated to view this.")
            for i, (method, suffix, status, message, fly_status) in enumerate(self.failures):
                if flask.request.method == method and flask.request.path.endswith(suffix):
                    del self.failures[i]
                    return error(status, message, fly_status=fly_status)
            for i, (method, suffix, hold) in enumerate(self.holds):
                if flask.request.method == method and flask.request.path.endswith(suffix):
                    del self.holds[i]
                    flask.g.hold = hold
                    hold.arrived.set()
                    hold.go.wait(timeout=30)
                    break
            app_name = (flask.request.view_args or {}).get("app")
            if app_name is not None and app_name != self.app_name:
                return error(404, "app not found")
            return None

        @app.teardown_request
        def _done(_exc: BaseException | None) -> None:
            hold = flask.g.pop("hold", None)
            if hold is not None:
                hold.done.set()

        @app.after_request
        def _lose(response: flask.Response) -> flask.Response:
            for i, (method, suffix, status) in enumerate(self.lost_answers):
                if flask.request.method == method and flask.request.path.endswith(suffix):
                    del self.lost_answers[i]
                    page = flask.Response(
                        f"<html><head><title>{status} proxy error</title></head><body></body></html>",
                        status=status,
                        mimetype="text/html",
                    )
                    page.headers[UNDOCUMENTED_HEADER] = "1"  # the proxy's page, not Fly's API
                    return page
            return response

        def find(machine_id: str) -> dict[str, Any] | None:
            machine = self.machines.get(machine_id)
            return machine

        @app.get(f"{base}/apps/<app>")
        def get_app(app: str) -> Any:
            # another app's name was answered 404 by _checks
            return flask.jsonify(
                {
                    "id": f"app-{self.app_name}",
                    "name": self.app_name,
                    "organization": dict(self.organization),
                    "status": self.app_status,
                }
            )

        @app.post(f"{base}/apps/<app>/machines")
        def create(app: str) -> Any:
            body = flask.request.get_json(force=True)
            guest = (body.get("config") or {}).get("guest") or {}
            refused = _guest_refused(guest)
            if refused:  # (Fly's sizing rules, which its description does not state; its words differ)
                return error(400, refused)
            with self._lock:
                machine_id = f"{next(self._ids):014x}"
                now = self._now()
                config = body.get("config") or {}
                image = str(config.get("image") or "")
                repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
                machine = {
                    "id": machine_id,
                    "name": body.get("name") or f"machine-{machine_id}",
                    "state": "created",
                    "region": body.get("region") or "iad",
                    "instance_id": f"01H{machine_id.upper()}",
                    "private_ip": f"fdaa:0:1::{int(machine_id, 16)}",
                    "config": config,
                    "image_ref": {
                        "registry": repo.split("/")[0] if "/" in repo else "docker.io",
                        "repository": repo.split("/", 1)[-1],
                        "tag": tag or "latest",
                        "digest": "sha256:" + "0" * 64,
                        "labels": {},
                    },
                    "created_at": now,
                    "updated_at": now,
                    "events": [],
                }
                self._event(machine, "launch", "created", {"config": config})
                self.machines[machine_id] = machine
            return flask.jsonify(machine)

        @app.get(f"{base}/apps/<app>/machines")
        def list_machines(app: str) -> Any:
            deleted = flask.request.args.get("include_deleted") == "true"
            region = flask.request.args.get("region")
            with self._lock:
                out = [
                    m
                    for m in self.machines.values()
                    if (deleted or m["state"] != "destroyed") and (not region or m["region"] == region)
                ]
            return flask.jsonify(out)

        @app.get(f"{base}/apps/<app>/machines/<machine_id>")
        def get_machine(app: str, machine_id: str) -> Any:
            machine = find(machine_id)
            if machine is None or machine["state"] == "destroyed":
                return error(404, "machine not found")
            return flask.jsonify(machine)

        @app.post(f"{base}/apps/<app>/machines/<machine_id>/stop")
        def stop(app: str, machine_id: str) -> Any:
            machine = find(machine_id)
            if machine is None or machine["state"] == "destroyed":
                return error(404, "machine not found")
            with self._lock:
                if machine["state"] not in ("stopped", "destroyed"):
                    self._event(
                        machine,
                        "exit",
                        "stopped",
                        {
                            "exit_event": {
                                "exit_code": 143,
                                "signal": 15,
                                "requested_stop": True,
                                "oom_killed": False,
                                "exited_at": self._now(),
                            }
                        },
                    )
                    machine["state"] = "stopped"
            return flask.Response(status=200)

        @app.delete(f"{base}/apps/<app>/machines/<machine_id>")
        def destroy(app: str, machine_id: str) -> Any:
            machine = find(machine_id)
            if machine is None or machine["state"] == "destroyed":
                return error(404, "machine not found")
            if machine["state"] in ("started", "starting") and flask.request.args.get("force") != "true":
                return error(412, "unable to destroy machine, not currently stopped")
            with self._lock:
                self._event(machine, "destroy", "destroyed")
                machine["state"] = "destroyed"
            return flask.Response(status=200)

        return app


__all__ = ["FakeFly", "Hold", "fly_description", "fly_spec_path"]


def _guest_refused(guest: dict[str, Any]) -> str | None:
    """Why Fly refuses a machine's ``guest`` of shared CPUs: memory in steps of 256 MB, 256 MB to
    2 GB a CPU (Fly's machine sizing guide)."""
    if guest.get("cpu_kind", "shared") != "shared":
        return None
    cpus, memory = guest.get("cpus", 1), guest.get("memory_mb", 256)
    if not isinstance(cpus, int) or not isinstance(memory, int) or cpus < 1:
        return None  # (the description's types are checked with the whole request)
    if memory % 256:
        return f"invalid memory size {memory}MB: must be a multiple of 256MB"
    if not 256 * cpus <= memory <= 2048 * cpus:
        return (f"invalid memory size {memory}MB for {cpus} shared CPUs: between {256 * cpus}MB and "
                f"{2048 * cpus}MB")
    return None
