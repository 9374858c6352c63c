"""`aiimpl demo` stops what it started on Ctrl-C, SIGTERM and its timeout, and reads only its log
settings of the operator's environment."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from aiimpl_core.demo import local_runner, run, stopping
from aiimpl_core.testing.ports import free_port

SESSION_ARGS = "aiimpl_core.cli session run"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIIMPL_", "RUNNER_MODE"))}
    return {**env, **extra}


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every process: pid -> (parent pid, state, command line). ``-ww``: the whole command line, whatever
    width COLUMNS gives the terminal."""
    out = subprocess.run(["ps", "-ww", "-A", "-o", "pid=,ppid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    table = {}
    for line in out.splitlines():
        pid, ppid, stat, *args = line.split(None, 3)
        table[int(pid)] = (int(ppid), stat, args[0] if args else "")
    return table


def _descendants(root: int) -> dict[int, str]:
    """The processes below ``root`` (children, theirs, ...): pid -> command line."""
    table = _processes()
    found: dict[int, str] = {}
    parents = {root}
    while parents:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in parents and pid not in found}
        found.update({pid: table[pid][2] for pid in children})
        parents = children
    return found


def _alive(pids) -> list[str]:  # noqa: ANN001
    """Those of ``pids`` still running (a zombie waiting to be reaped is not)."""
    table = _processes()
    return [f"{pid} {table[pid][2]}" for pid in pids if pid in table and not table[pid][1].startswith("Z")]


class Demo:
    """``aiimpl demo`` in its own process group, as a terminal runs a foreground job."""

    def __init__(self, tmp_path, *args: str, env: dict[str, str] | None = None) -> None:  # noqa: ANN001
        self.workdir = tmp_path / "demo"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiimpl_core.cli", "demo", "--dir", str(self.workdir),
             "--port", str(free_port()), *args],
            env=env or _clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tmp_path, start_new_session=True,
        )
        #: every process seen below the demo
        self.seen: dict[int, str] = {}

    def watch(self) -> None:
        self.seen.update(_descendants(self.proc.pid))

    def wait_for_session(self, within: float = 60.0) -> int:
        """The pid of the demo's session process, once it runs."""
        until = time.monotonic() + within
        while time.monotonic() < until and self.proc.poll() is None:
            self.watch()
            sessions = [pid for pid, args in self.seen.items() if SESSION_ARGS in args]
            if sessions:
                return sessions[0]
            time.sleep(0.05)
        out, err = self.finish()
        raise AssertionError(f"no session process was started:\n{out}\n{err}")

    def finish(self, timeout: float = 60.0) -> tuple[str, str]:
        return self.proc.communicate(timeout=timeout)

    def kill_all(self) -> None:
        """Whatever the test saw and left running (a failing test leaves nothing behind)."""
        for pid in [self.proc.pid, *self.seen]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def demos():
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.kill_all()


@pytest.mark.parametrize(("sig", "status"),
                         [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_demo_interrupted_stops_its_session_and_exits_with_the_signal_status(tmp_path, demos, sig, status):
    demo = Demo(tmp_path, "--exit-when-done", "--timeout", "120")
    demos.append(demo)
    session = demo.wait_for_session()
    time.sleep(0.5)  # (the session under way: it reports that it was stopped)
    demo.watch()
    os.killpg(demo.proc.pid, sig)  # what Ctrl-C does to the terminal's foreground job
    sent = time.monotonic()
    out, err = demo.finish(timeout=30)
    assert demo.proc.returncode == status, out + err
    assert time.monotonic() - sent < 15
    assert err.strip() == (f"aiimpl demo: interrupted ({sig.name}) before the demo job ended; "
                           "its sessions and servers are stopped")
    assert "Traceback" not in out + err
    assert f"stopping the session of job 1 (pid {session})" in out
    assert _alive(demo.seen) == []


def test_demo_that_times_out_gives_up_and_stops_its_session(tmp_path, demos):
    demo = Demo(tmp_path, "--exit-when-done", "--timeout", "1")
    demos.append(demo)
    demo.wait_for_session()
    while demo.proc.poll() is None:
        demo.watch()
        time.sleep(0.05)
    out, err = demo.finish()
    assert demo.proc.returncode == 1, out + err
    log = demo.workdir / "session-1.log"
    # (on standard error, as an interrupt's line: standard output holds the demo's story)
    said = f"Error: gave up: the demo job did not finish within 1 s; see {log}"
    assert err.strip().splitlines()[-1] == said
    assert "gave up" not in out
    assert "Traceback" not in out + err
    assert _alive(demo.seen) == []


def test_demo_ignores_the_operators_orchestrator_and_session_settings(tmp_path, demos):
    """A RUNNER_MODE, scheduler, backend cap, session work directory or GIT_DIR meant for something
    else changes nothing: the demo still walks its issue to a PR."""
    (tmp_path / "a-file").write_text("")
    env = _clean_env(RUNNER_MODE="gha", AIIMPL_SCHEDULER="1", AIIMPL_BACKEND_CAPS="local-process=0",
                     AIIMPL_POLL_INTERVAL="not a number",  # not even valid: not the demo's
                     AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/nowhere/aiimpl.db",
                     AIIMPL_WORKDIR=str(tmp_path / "a-file" / "clone"), GIT_DIR=str(tmp_path / "no-repo"))
    demo = Demo(tmp_path, "--exit-when-done", "--timeout", "120", env=env)
    demos.append(demo)
    out, err = demo.finish(timeout=180)
    assert demo.proc.returncode == 0, out + err
    stages = [line.split("stage: ", 1)[1] for line in out.splitlines() if "DEMO-1 stage: " in line]
    assert stages == ["Triggered", "Implementing", "PR opened"]
    assert "running -> completed" in out
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "no-repo").exists()


# -- the parts, in this process ---------------------------------------------------------------------

def test_demo_app_reads_only_the_operators_log_settings():
    environ = {"AIIMPL_LOG_LEVEL": "DEBUG", "AIIMPL_LOG_FORMAT": "json", "AIIMPL_TRACE_PLUGINS": "1",
               "RUNNER_MODE": "gha", "AIIMPL_SCHEDULER": "1", "AIIMPL_BACKEND_CAPS": "local-process=0",
               "AIIMPL_DATABASE_URL": "sqlite:////elsewhere.db", "AIIMPL_ANTHROPIC_API_KEY": "sk-operator",
               "PATH": "/usr/bin"}
    assert run.app_environment(environ) == {"AIIMPL_LOG_LEVEL": "DEBUG", "AIIMPL_LOG_FORMAT": "json",
                                            "AIIMPL_TRACE_PLUGINS": "1"}


def test_demo_session_gets_the_jobs_environment_and_only_the_basics_of_the_operators(tmp_path, monkeypatch):
    from aiimpl_core.providers import ProviderContext
    from aiimpl_core.types import DispatchRequest, Phase

    started = []

    class FakePopen:
        pid = 4242

        def __init__(self, argv, **kwargs):  # noqa: ANN001, ANN003
            started.append(kwargs)

    monkeypatch.setattr(local_runner.subprocess, "Popen", FakePopen)
    for name in [*local_runner.PASSED_NAMES, *(n for n in os.environ if n.startswith("LC_"))]:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"PATH": "/opt/bin:/usr/bin", "HOME": "/home/op", "LC_ALL": "C.UTF-8",
                        "RUNNER_MODE": "gha", "AIIMPL_WORKDIR": "/elsewhere", "AIIMPL_REVIEW": "false",
                        "GIT_DIR": "/some/repo", "HTTPS_PROXY": "http://proxy:3128",
                        "ANTHROPIC_API_KEY": "sk-operator", "AIIMPL_LOG_LEVEL": "DEBUG"}.items():
        monkeypatch.setenv(name, value)
    sessions = local_runner.SessionProcesses()
    backend = local_runner.backend_for(sessions)(ProviderContext(
        config={"AIIMPL_DEMO_WORKDIR": str(tmp_path)}, http=lambda *a, **k: None))
    job_env = {"AIIMPL_URL": "http://127.0.0.1:1", "AIIMPL_RESULT_TOKEN": "t0ken", "AIIMPL_JOB_ID": "7"}
    result = backend.dispatch(DispatchRequest(
        job_id=7, phase=Phase.IMPLEMENTATION, issue_key="DEMO-1", mapping=None, branch="ai/DEMO-1",
        base_branch="main", run_name="demo", env=job_env, secret_names=frozenset({"AIIMPL_RESULT_TOKEN"})))
    assert result.run_id == "pid-4242"
    (kwargs,) = started
    assert kwargs["env"] == {"PATH": "/opt/bin:/usr/bin", "HOME": "/home/op", "LC_ALL": "C.UTF-8",
                             "AIIMPL_LOG_LEVEL": "DEBUG", **job_env,
                             # nor the operator's git settings files
                             "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    assert kwargs["cwd"] == str(tmp_path) and kwargs["start_new_session"] is True
    assert sessions.logs[7] == str(tmp_path / "session-7.log")


def _stubborn(tmp_path) -> subprocess.Popen[bytes]:  # noqa: ANN001
    """A process in its own group that ignores SIGTERM, as a session stuck in its own stopping."""
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import pathlib, signal, sys, time; "
                               "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "pathlib.Path(sys.argv[1]).write_text(''); time.sleep(60)", str(ready)],
        start_new_session=True,
    )
    until = time.monotonic() + 60  # (a Python starting on a loaded machine)
    while not ready.exists() and time.monotonic() < until:
        time.sleep(0.02)
    assert ready.exists(), "the stubborn process never ignored SIGTERM"
    return proc


def test_demo_sessions_stop_kills_one_that_outlives_its_grace_and_starts_no_more(tmp_path):
    from aiimpl_core.errors import DispatchError
    from aiimpl_core.session.redact import Redactor

    sessions = local_runner.SessionProcesses()
    proc = _stubborn(tmp_path)
    sessions.procs[1] = proc
    said: list[str] = []
    began = time.monotonic()
    sessions.stop(grace=0.5, echo=said.append)
    assert proc.poll() == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 5
    assert said == [f"  stopping the session of job 1 (pid {proc.pid})"]
    with pytest.raises(DispatchError, match="the demo is stopping"):
        sessions.start(2, {}, str(tmp_path), Redactor([]))
    assert not (tmp_path / "session-2.log").exists()


def test_demo_sessions_stop_kills_at_once_when_hurried(tmp_path):
    import threading

    sessions = local_runner.SessionProcesses()
    proc = _stubborn(tmp_path)
    sessions.procs[1] = proc
    hurry = threading.Event()
    hurry.set()
    began = time.monotonic()
    sessions.stop(grace=60, hurry=hurry)
    assert proc.poll() == -signal.SIGKILL and time.monotonic() - began < 5


def test_demo_stop_signals_raise_once_then_hurry():
    previous = signal.getsignal(signal.SIGTERM)
    with stopping.StopSignals() as signals:
        with pytest.raises(stopping.Interrupted) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # (the handler runs before this ends)
        assert (raised.value.signal_name, raised.value.exit_status) == ("SIGTERM", 143)
        assert signals.stopping and not signals.hurry.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # while stopping: no exception, a hurry
        time.sleep(0.05)
        assert signals.hurry.is_set()
    assert signal.getsignal(signal.SIGTERM) is previous
