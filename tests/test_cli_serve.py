"""``aiimpl serve``: the development server, run for real as an operator starts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from aiimpl_core.database import schema_heads
from aiimpl_core.testing.ports import free_port
from aiimpl_core.testing.pytest_plugin import migrate


def test_serve_answers_and_logs_paths_without_their_query(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/aiimpl.db",
        "AIIMPL_SECRET_KEY": "serve-test-secret-key-0123456789abcdef",
        "AIIMPL_JIRA_WEBHOOK_SECRET": "jira-hook-secret-9f8e7d",
    }
    migrate(env["AIIMPL_DATABASE_URL"])
    server = subprocess.Popen(
        [sys.executable, "-m", "aiimpl_core.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz?probe=1", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "aiimpl serve did not start"
                time.sleep(0.2)
        assert health.status_code == 200
        requests.post(f"http://127.0.0.1:{port}/api/jira/webhook?secret=jira-hook-secret-9f8e7d",
                      json={"webhookEvent": "comment_created"}, timeout=10)
        missing = requests.get(f"http://127.0.0.1:{port}/no/such%20page%0Aforged?probe=2", timeout=10)
        assert missing.status_code == 404
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output  # SIGTERM, a service manager's stop, is a stop as Ctrl-C is
    assert f"on http://127.0.0.1:{port}" in output
    # AIIMPL_PUBLIC_URL left at its default, port 8000: the sessions would call back to nothing
    assert (f"Warning: AIIMPL_PUBLIC_URL is http://127.0.0.1:8000, port 8000 of this host, but this server "
            f"listens on port {port}: the sessions it starts would call back there (set "
            f"AIIMPL_PUBLIC_URL=http://127.0.0.1:{port})") in output
    assert "GET /healthz " in output and "POST /api/jira/webhook " in output
    assert "probe=1" not in output and "probe=2" not in output and "jira-hook-secret-9f8e7d" not in output
    # the path as it was sent, on one line, and no terminal colours (werkzeug's, for a 404) in the log
    assert '"GET /no/such%20page%0Aforged HTTP/1.1" 404' in output
    assert "\x1b[" not in output


@pytest.mark.parametrize(("url", "port", "warned"), [
    ("http://127.0.0.1:8000", 8000, False),
    ("http://localhost", 80, False),
    ("https://orchestrator.example.com", 8000, False),  # through a proxy: its own port
    ("http://localhost:9000", 8000, True),
])
def test_a_public_url_on_this_host_and_another_port_is_warned_about(url: str, port: int, warned: bool):
    from aiimpl_core.cli import public_url_warning

    assert bool(public_url_warning(url, port)) is warned
    # a URL's password is never said
    said = public_url_warning("http://bot:hunter2-secret@localhost:9000", 8000) or ""
    assert "hunter2-secret" not in said and said.startswith("AIIMPL_PUBLIC_URL is http://bot:***@localhost:9000,")


def _cli(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    env.update(AIIMPL_DATABASE_URL=url, AIIMPL_SECRET_KEY="serve-test-secret-key-0123456789abcdef")
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/aiimpl.db"
    assert _cli("db", "upgrade", url=url).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _cli("serve", "--port", str(port), url=url)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: port {port} is not free (Address already in use): "
                                   "pick another with --port")


def test_serve_on_an_address_it_cannot_listen_on_names_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/aiimpl.db"
    assert _cli("db", "upgrade", url=url).returncode == 0
    done = _cli("serve", "--host", "no-such-host.invalid", "--port", "8000", url=url)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: cannot listen on no-such-host.invalid:8000 (")
    assert line.endswith("): pick another with --host")
    assert "Traceback" not in done.stderr
    # an empty host listened on every interface, its banner saying http://:8000
    done = _cli("serve", "--host", " ", url=url)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--host': must not be empty (0.0.0.0 listens on every interface)")


@pytest.mark.parametrize("revision", [None, "0002"])
def test_serve_refuses_a_database_without_this_version_s_schema(tmp_path: Path, revision: str | None) -> None:
    """As gunicorn does: a server whose every request would fail says what to do instead."""
    url = f"sqlite:///{tmp_path}/aiimpl.db"
    if revision:
        assert _cli("db", "upgrade", revision, url=url).returncode == 0
    done = _cli("serve", "--port", str(free_port()), url=url, timeout=90)
    assert done.returncode == 1
    (head,) = schema_heads()[0]
    expected = ("the database has no schema yet: run `aiimpl db upgrade`" if revision is None else
                f"the database schema (revision 0002) is older than this version's ({head}): "
                "run `aiimpl db upgrade`")
    assert done.stderr.strip() == f"Error: {expected}"
    assert done.stdout == ""
