"""The session image's recipe and its entrypoint's session modes (run with the host's ``sh``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "session.Dockerfile"
ENTRYPOINT = ROOT / "docker" / "session-entrypoint.sh"


@pytest.fixture
def session_stub(tmp_path: Path) -> Path:
    """Stands in for ``aiimpl session run``: exits with ``$STUB_EXIT`` and says it ran."""
    stub = tmp_path / "session"
    stub.write_text('#!/bin/sh\necho "session ran with $*"\nexit "${STUB_EXIT:-0}"\n')
    stub.chmod(0o755)
    return stub


def run(stub: Path, mode: str, exit_code: int, lifetime: int) -> tuple[int, float, str]:
    env = {
        **os.environ,
        "AIIMPL_SESSION_COMMAND": str(stub),
        "AIIMPL_SESSION_MODE": mode,
        "AIIMPL_LIFETIME_SECONDS": str(lifetime),
        "STUB_EXIT": str(exit_code),
    }
    started = time.monotonic()
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), "--flag"], env=env, capture_output=True, text=True, timeout=20
    )
    return proc.returncode, time.monotonic() - started, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("mode", "exit_code", "holds"),
    [
        ("autonomous", 0, False),
        ("autonomous", 1, False),
        ("interactive", 0, True),
        ("interactive", 1, True),
        ("hybrid", 0, False),
        ("hybrid", 1, True),
        ("bogus", 1, False),
    ],
)
def test_session_modes_hold_as_documented(session_stub: Path, mode: str, exit_code: int, holds: bool) -> None:
    # The script counts in whole seconds (``date +%s``): with a lifetime of 2 s, a hold lasts at
    # least 1 s even when the session ends across a second boundary (with 1 s it could last 0 s).
    code, elapsed, output = run(session_stub, mode, exit_code, lifetime=2)
    assert code == exit_code  # the backend reads the session's own outcome either way
    assert "session ran with --flag" in output
    if holds:
        assert elapsed >= 0.9 and "staying up" in output
    else:
        assert elapsed < 0.9 and "staying up" not in output


def test_sigterm_ends_a_hold_at_once(session_stub: Path) -> None:
    env = {
        **os.environ,
        "AIIMPL_SESSION_COMMAND": str(session_stub),
        "AIIMPL_SESSION_MODE": "interactive",
        "AIIMPL_LIFETIME_SECONDS": "30",
        "STUB_EXIT": "0",
    }
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        while "staying up" not in (line := proc.stdout.readline()) and time.monotonic() < deadline:
            pass
        assert "staying up" in line
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 3
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_recipe_installs_git_python_and_the_core_and_runs_the_session() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"apt-get install[^\n]*\bgit\b", text)
    assert "python3 -m venv" in text and "pip install --no-cache-dir /opt/aiimpl/src" in text
    assert 'ENTRYPOINT ["/usr/local/bin/aiimpl-session-entrypoint"]' in text
    assert "${AIIMPL_SESSION_COMMAND:-aiimpl session run}" in ENTRYPOINT.read_text()
    # every file the recipe copies from the build context exists
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
