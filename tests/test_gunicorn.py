"""The production gunicorn configuration (``aiimpl_core.gunicorn_conf``), run for real."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("gunicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gunicorn(tmp_path, **env: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIIMPL_", "RUNNER_MODE"))}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/aiimpl.db", AIIMPL_WORKERS="1",
                   AIIMPL_BIND=f"127.0.0.1:{port}", XDG_RUNTIME_DIR=str(tmp_path), **env)
    out, err = open(tmp_path / "out.log", "w"), open(tmp_path / "err.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:aiimpl_core.gunicorn_conf",
                             "aiimpl_core.wsgi:app"], env=environ, stdout=out, stderr=err, cwd=tmp_path)
    out.close(), err.close()
    return proc, port


def _output(tmp_path) -> str:
    return (tmp_path / "out.log").read_text() + (tmp_path / "err.log").read_text()


def _get(port: int, path: str) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_json_logs_cover_gunicorns_lines_the_apps_and_the_access_log(tmp_path):
    subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade"], check=True,
                   capture_output=True, timeout=120,
                   env=dict(os.environ, AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/aiimpl.db"))
    # no AIIMPL_SECRET_KEY: the app warns at start-up, through the root logger
    proc, port = _gunicorn(tmp_path, AIIMPL_LOG_FORMAT="json")
    try:
        assert _get(port, "/healthz?token=query-value-never-logged") == 200
        assert not (tmp_path / "gunicorn.ctl").exists()  # the control socket is off by default
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in _output(tmp_path).splitlines() if line.strip()]
    assert lines, "gunicorn logged nothing"
    for data in lines:
        assert {"time", "level", "logger", "process", "message"} <= data.keys(), data
    by_logger = {(d["logger"], d["message"]) for d in lines}
    assert any(name == "gunicorn.error" and m.startswith("Booting worker") for name, m in by_logger)
    assert ("aiimpl", "AIIMPL_SECRET_KEY is not set: using a random key for this process only") in by_logger
    access = [d for d in lines if d["logger"] == "gunicorn.access"]
    assert [(d["method"], d["path"], d["status"]) for d in access] == [("GET", "/healthz", 200)]
    assert "query-value-never-logged" not in _output(tmp_path)


def test_a_setting_that_is_not_valid_stops_gunicorn_before_its_workers(tmp_path):
    proc, _port = _gunicorn(tmp_path, AIIMPL_LOG_LEVEL="verbose")
    assert proc.wait(timeout=60) == 1
    output = _output(tmp_path)
    assert ("Error: AIIMPL_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
            "not 'verbose'") in output
    assert "Traceback" not in output
    assert "Booting worker" not in output
