"""The gunicorn worker of the production configuration (:mod:`aiimpl_core.gunicorn_conf`).

gunicorn's threaded worker (``gthread``), except for the requests gunicorn answers itself before the
app runs — a URL or headers over its limits (414, 431), a request line or header it cannot parse
(400), a transfer coding it does not support (501): gunicorn answers them with an HTML page, which
quotes the request line for some. Here they are answered as every other error of the API is, a JSON
``{"error": ...}`` that quotes nothing of the request. Everything else of gunicorn's handling stays
its own: which errors it answers and with what status, its log lines and its closing of the
connection.
"""
from __future__ import annotations

import json
import re
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker as _GunicornThreadWorker

#: the status line of the answer gunicorn writes; its reason phrase is one of gunicorn's own words,
#: never the request's (a reason with other characters is not taken: the answer is left as it is)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2}) ([A-Za-z][A-Za-z '-]{0,63})\r\n")

#: what the app itself says for the status (the reason phrase otherwise)
_MESSAGES = {500: "Internal server error"}


class _HeldAnswer:
    """The client's socket while gunicorn answers an error: what gunicorn writes is kept instead of
    sent; anything else it asks of the socket is the socket's."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.data = bytearray()

    def gettimeout(self) -> float:
        return 0.0  # non-blocking: gunicorn writes at once, with no change to the socket's mode

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def json_answer(answer: bytes) -> bytes:
    """gunicorn's error answer as JSON, with its status; an answer whose status line is not one
    gunicorn writes is returned as it is."""
    match = _STATUS_LINE.match(answer)
    if match is None:
        return answer
    status, reason = int(match[1]), match[2].decode("ascii")
    body = json.dumps({"error": _MESSAGES.get(status, reason)}, separators=(",", ":")).encode() + b"\n"
    head = (f"HTTP/1.1 {status} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Cache-Control: no-store\r\n"
            "\r\n")
    return head.encode("ascii") + body


class ThreadWorker(_GunicornThreadWorker):
    """gunicorn's threaded worker, answering the errors gunicorn answers itself as JSON."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        held = _HeldAnswer(client)
        super().handle_error(req, held, addr, exc)  # gunicorn's status, log lines and access line
        if not held.data:
            return  # gunicorn could not write it either (it logged why)
        try:
            util.write_nonblock(client, json_answer(bytes(held.data)))
        except Exception:  # noqa: BLE001 - the client is gone: as gunicorn has it, nothing more to do
            self.log.debug("Failed to send error message.")
