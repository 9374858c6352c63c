"""The test kit's background server: it serves at the URL it gives, and when the block ends its port
is closed and its thread gone, also when the block fails or the server was never started."""
from __future__ import annotations

import http.server
import socket
import threading

import pytest
import requests
from werkzeug.wrappers import Request, Response

from aiimpl_core.testing.serving import ServerThread, serve_wsgi


@Request.application
def _hello(request: Request) -> Response:
    return Response(f"hello from {request.path}")


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def _running(name: str) -> bool:
    return any(thread.name == name for thread in threading.enumerate())


def test_an_app_is_served_at_the_url_given_and_its_port_closed_afterwards() -> None:
    with serve_wsgi(_hello, name="serving-test") as live:
        assert live.url == f"http://127.0.0.1:{live.port}" == f"http://127.0.0.1:{live.server.server_port}"
        answer = requests.get(live.url + "/ping", timeout=10)
        assert answer.status_code == 200 and answer.text == "hello from /ping"
        assert _running("serving-test")
    assert _refused(live.port)
    assert not _running("serving-test")


def test_the_server_stops_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError, match="the test failed"), serve_wsgi(_hello) as live:
        raise RuntimeError("the test failed")
    assert _refused(live.port)


def test_a_server_never_started_is_closed_without_waiting() -> None:
    """Stopping waits for the serving loop to end; a server that never ran has none to wait for."""
    live = ServerThread(http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler))
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            live.stop()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    stopping = threading.Thread(target=stop, daemon=True)  # a stop that hangs fails, not the whole run
    stopping.start()
    stopping.join(timeout=5)
    assert not stopping.is_alive() and errors == []
    assert _refused(live.port)
    live.stop()  # a second stop does nothing
