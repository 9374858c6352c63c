"""The session image's recipe and its entrypoint's session modes (run with the host's ``sh``)."""

from __future__ import annotations

import os
import re
import shutil
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
    stub.write_text('#!/bin/sh\necho "session ran with $* (holder: ${AIIMPL_SESSION_HOLDER:-none})"\n'
                    'exit "${STUB_EXIT:-0}"\n')
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
        # a result not delivered (or a configuration not usable): the session kept no work tree
        # when its run succeeded, and the orchestrator sends nobody to attach
        ("hybrid", 2, False),
        ("bogus", 1, False),
        # read as the session program reads it: white space around it ignored, empty autonomous
        (" interactive\n", 0, True),
        ("", 1, False),
    ],
)
def test_session_modes_hold_as_documented(session_stub: Path, mode: str, exit_code: int, holds: bool) -> None:
    # The script counts in whole seconds (``date +%s``): with a lifetime of 2 s, a hold lasts at
    # least 1 s even when the session ends across a second boundary (with 1 s it could last 0 s).
    code, elapsed, output = run(session_stub, mode, exit_code, lifetime=2)
    assert code == exit_code  # the backend reads the session's own outcome either way
    # the session is told a hold may follow it (it keeps its work tree for one)
    assert "session ran with --flag (holder: session-entrypoint)" in output
    if holds:
        assert elapsed >= 0.9 and "staying up" in output
    else:  # (said by the script as it holds; how fast it ended is the machine's load)
        assert "staying up" not in output


def test_sigterm_ends_a_hold_at_once(session_stub: Path) -> None:
    env = {
        **os.environ,
        "AIIMPL_SESSION_COMMAND": str(session_stub),
        "AIIMPL_SESSION_MODE": "interactive",
        "AIIMPL_LIFETIME_SECONDS": "60",
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
        proc.send_signal(signal.SIGTERM)
        # ended long before the hold's 60 s were up (a loaded machine's shell may take a while to run
        # its trap)
        assert proc.wait(timeout=30) == 0
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


# -- a stop reaches the session: the script as PID 1 of its own PID namespace, like in a container --

FAKE_AIIMPL = """#!/bin/sh
trap 'echo "stopped: $*" > "$STOP_MARKER"; exit "$EXIT_ON_STOP"' TERM
echo running > "$READY_MARKER"
while :; do sleep 0.05; done
"""


def _pid_namespace_or_reason() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "-Urpf", "--mount-proc", "true"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare cannot run here: {exc}"
    if probe.returncode != 0:
        return f"no unprivileged PID namespace here: {probe.stderr.strip()[:200]}"
    return None


def _child_of(pid: int) -> int | None:
    """The process whose parent is ``pid`` (unshare's child: PID 1 of the new namespace)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields follow the last ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            return int(entry.name)
    return None


@pytest.mark.parametrize(("mode", "exit_on_stop"), [("autonomous", 0), ("hybrid", 3)])
def test_sigterm_to_pid_1_reaches_the_session_and_its_status_is_kept(
    tmp_path: Path, mode: str, exit_on_stop: int
) -> None:
    reason = _pid_namespace_or_reason()
    if reason:
        pytest.skip(reason)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aiimpl"
    fake.write_text(FAKE_AIIMPL)
    fake.chmod(0o755)
    stop_marker, ready_marker = tmp_path / "stopped", tmp_path / "ready"
    env = {
        **{k: v for k, v in os.environ.items() if k != "AIIMPL_SESSION_COMMAND"},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIIMPL_SESSION_MODE": mode,
        "AIIMPL_LIFETIME_SECONDS": "60",
        "STOP_MARKER": str(stop_marker),
        "READY_MARKER": str(ready_marker),
        "EXIT_ON_STOP": str(exit_on_stop),
    }
    proc = subprocess.Popen(
        ["unshare", "-Urpf", "--mount-proc", "sh", str(ENTRYPOINT), "--flag"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not ready_marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready_marker.exists(), "the fake session did not start"
        pid_1 = _child_of(proc.pid)
        assert pid_1 is not None
        os.kill(pid_1, signal.SIGTERM)  # what `docker stop` does
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the entrypoint did not pass SIGTERM on to the session")
        assert stop_marker.read_text().strip() == "stopped: session run --flag"
        assert code == exit_on_stop  # no hold after a stop, and the session's own status
        assert proc.stdout is not None and "staying up" not in proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
