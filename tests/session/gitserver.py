"""A git smart-HTTP remote for tests: ``git http-backend`` behind Basic authentication.

Like GitHub, every request (clone included) needs a password; :class:`GitHttpServer` asks a
callback whether the password is a token that is valid *now* for the repository, so an expired
installation token is refused exactly when GitHub would refuse it. Each request is recorded with
the token it used.
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from aiimpl_core.testing.serving import ServerThread, serve_wsgi


@dataclass
class GitRequest:
    method: str
    path: str
    service: str
    username: str | None
    password: str | None
    status: int


class GitHttpServer:
    """Serve the bare repositories under ``root`` (``{root}/{owner}/{repo}.git``).

    :param check: ``(owner, repo, username, password, write) -> bool``.
    """

    def __init__(self, root: str, check: Callable[[str, str, str, str, bool], bool]) -> None:
        self.root = root
        self.check = check
        self.requests: list[GitRequest] = []
        self._live: ServerThread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._live is not None
        return self._live.url

    def start(self) -> GitHttpServer:
        self._live = serve_wsgi(self._wsgi, name="git-http").start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def pushes(self) -> list[GitRequest]:
        return [r for r in self.requests if r.service == "git-receive-pack" and r.method == "POST"]

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        parts = request.path.strip("/").split("/")
        service = request.args.get("service") or parts[-1]
        write = service == "git-receive-pack"
        user = password = None
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                user = password = None
        owner, repo = (parts[0], parts[1].removesuffix(".git")) if len(parts) >= 2 else ("", "")
        allowed = bool(user and password) and self.check(owner, repo, user or "", password or "", write)
        if not allowed:
            self._record(request, service, user, password, 401)
            return Response("Authentication failed", 401, {"WWW-Authenticate": 'Basic realm="git"'})(
                environ, start_response
            )
        body = request.get_data()
        env = {
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": request.path,
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user or "",
            "REMOTE_ADDR": "127.0.0.1",
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        }
        if request.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
        if request.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            if not line:
                continue
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers.append((name.strip(), value.strip()))
        self._record(request, service, user, password, status)
        return Response(payload, status, headers)(environ, start_response)

    def _record(
        self, request: Request, service: str, user: str | None, password: str | None, status: int
    ) -> None:
        with self._lock:
            self.requests.append(GitRequest(request.method, request.path, service, user, password, status))
