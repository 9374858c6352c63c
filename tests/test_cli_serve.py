"""``aiimpl serve``: the development server, run for real as an operator starts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_and_logs_paths_without_their_query(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/aiimpl.db",
        "AIIMPL_SECRET_KEY": "serve-test-secret-key-0123456789abcdef",
        "AIIMPL_JIRA_WEBHOOK_SECRET": "jira-hook-secret-9f8e7d",
    }
    subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade"], env=env, check=True,
                   capture_output=True, timeout=120)
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
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}" in output
    assert "GET /healthz " in output and "POST /api/jira/webhook " in output
    assert "probe=1" not in output and "jira-hook-secret-9f8e7d" not in output
