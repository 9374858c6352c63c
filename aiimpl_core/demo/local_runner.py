"""Runner backend ``local-process``: runs the session program as a child process of this one.

For the demo and for trying the whole loop on a laptop, so it is only registered by ``aiimpl demo``,
never through an entry point. A session gets the job's environment and, from this process's, only
what a runner machine has of its own (:data:`PASSED_NAMES`): not the operator's ``RUNNER_MODE``,
``AIIMPL_*`` or git settings, which would change what the session does. The demo stops the sessions
it started when it ends (:meth:`SessionProcesses.stop`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import ClassVar

from ..errors import DispatchError
from ..providers import RunnerBackend
from ..session.redact import Redactor
from ..types import (
    DispatchRequest,
    DispatchResult,
    InFlightRun,
    LogLabel,
    RunPhase,
    RunState,
    SessionInfo,
    TimeoutReason,
)

#: the variables of this process's environment a session (and the demo's own git) gets, beside
#: ``LC_*``: where programs are (git, bash, python3), the home directory, the locale, the temporary
#: directory, and ``PYTHONPATH`` (the project run from a source checkout); and the log settings,
#: which only change what the session's log shows
PASSED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "PYTHONPATH", "AIIMPL_LOG_LEVEL", "AIIMPL_LOG_FORMAT",
})

#: seconds a session gets after SIGTERM (to stop its commands and report that it was stopped)
#: before SIGKILL
STOP_GRACE_SECONDS = 5.0


#: git's own settings files are not read: the operator's ``~/.gitconfig`` (commit signing without a
#: key, a hooks path, a URL rewrite) would change, or fail, what the session and the demo's own git
#: do, as the session in a container or on a runner never reads them (git 2.32 and later)
GIT_ISOLATION = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def base_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of ``environ`` (default ``os.environ``) a session runs with: :data:`PASSED_NAMES`
    and the locale's ``LC_*``, with git's settings files left unread (:data:`GIT_ISOLATION`)."""
    env = os.environ if environ is None else environ
    kept = {name: value for name, value in env.items() if name in PASSED_NAMES or name.startswith("LC_")}
    return {**kept, **GIT_ISOLATION}


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # the session leads a process group of its own (start_new_session): the terminal's Ctrl-C
    # does not reach it, so the demo passes the stop on
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class SessionProcesses:
    """The session processes one demo started, by job id: started by its backend, stopped by the
    demo as it ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, str] = {}
        self.redactors: dict[int, Redactor] = {}
        #: set by :meth:`stop`: a poll cycle still under way starts no session after it
        self.closed = False

    def start(self, job_id: int, env: Mapping[str, str], workdir: str, redactor: Redactor) -> int:
        """Start ``aiimpl session run`` for ``job_id`` in ``workdir``, its output in
        ``session-<job id>.log`` there; the process id."""
        log_path = os.path.join(workdir, f"session-{job_id}.log")
        with self.lock:
            if self.closed:
                raise DispatchError("the demo is stopping: no session is started",
                                    provider=LocalProcessBackend.id)
            with open(log_path, "wb") as log:  # (the child has its own descriptor of it)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "aiimpl_core.cli", "session", "run"],
                    env=dict(env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=workdir, start_new_session=True,
                )
            self.procs[job_id] = proc
            self.logs[job_id] = log_path
            self.redactors[job_id] = redactor
        return proc.pid

    def get(self, job_id: int) -> subprocess.Popen[bytes] | None:
        with self.lock:
            return self.procs.get(job_id)

    def running(self) -> dict[int, subprocess.Popen[bytes]]:
        with self.lock:
            return {job_id: p for job_id, p in self.procs.items() if p.poll() is None}

    def stop(self, grace: float = STOP_GRACE_SECONDS, *, hurry: threading.Event | None = None,
             echo: Callable[[str], None] | None = None) -> None:
        """Start no more sessions, and stop the running ones: SIGTERM to each one's process group,
        then SIGKILL to those still running ``grace`` seconds later, or as soon as ``hurry`` is set.

        Returns once every one has exited.
        """
        with self.lock:
            self.closed = True
        running = self.running()
        if not running:
            return
        if echo is not None:
            jobs = ", ".join(f"job {job_id} (pid {p.pid})" for job_id, p in sorted(running.items()))
            echo(f"  stopping the session of {jobs}")
        for proc in running.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (any(p.poll() is None for p in running.values()) and time.monotonic() < deadline
               and not (hurry is not None and hurry.is_set())):
            time.sleep(0.05)
        for proc in running.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


class LocalProcessBackend(RunnerBackend):
    id = "local-process"
    display_name = "Local process (sandbox)"
    supports_sessions = True
    mapping_selectable = True

    #: the demo's session processes (a demo registers a subclass with its own: :func:`backend_for`)
    sessions: ClassVar[SessionProcesses] = SessionProcesses()

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        env = base_environment()
        env.update(request.env)
        workdir = self.context.setting("AIIMPL_DEMO_WORKDIR") or os.getcwd()
        redactor = Redactor(request.env[n] for n in request.secret_names)
        pid = self.sessions.start(request.job_id, env, workdir, redactor)
        return DispatchResult(run_id=f"pid-{pid}", run_url=None, linked=True)

    def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        now = self.context.clock()
        states = []
        for run in runs:
            proc = self.sessions.get(run.job_id)
            if proc is None:
                states.append(RunState(job_id=run.job_id, phase=RunPhase.NOT_FOUND))
                continue
            code = proc.poll()
            started = run.started_at or run.dispatched_at
            if code is None and now - started > timedelta(seconds=run.lifetime_seconds):
                proc.terminate()
                states.append(RunState(job_id=run.job_id, phase=RunPhase.TIMED_OUT, run_id=run.run_id,
                                       timeout_reason=TimeoutReason.CONTAINER_TIMEOUT,
                                       log_label=LogLabel.CONTAINER_TIMEOUT,
                                       log_excerpt=self._tail(run.job_id)))
            elif code is None:
                states.append(RunState(job_id=run.job_id, phase=RunPhase.RUNNING, run_id=run.run_id))
            elif code == 0:
                states.append(RunState(job_id=run.job_id, phase=RunPhase.SUCCEEDED, run_id=run.run_id,
                                       exit_code=0))
            else:
                states.append(RunState(job_id=run.job_id, phase=RunPhase.FAILED, run_id=run.run_id,
                                       exit_code=code, log_label=LogLabel.SESSION_FAILED,
                                       log_excerpt=self._tail(run.job_id)))
        return states

    def _tail(self, job_id: int, lines: int = 30) -> str:
        path = self.sessions.logs.get(job_id)
        if not path or not os.path.exists(path):
            return ""
        with open(path, "rb") as fh:
            text = b"\n".join(fh.read().splitlines()[-lines:]).decode("utf-8", "replace")
        redactor = self.sessions.redactors.get(job_id)
        return redactor.text(text) if redactor else text

    def cancel(self, run: InFlightRun) -> None:
        proc = self.sessions.get(run.job_id)
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def list_sessions(self) -> Sequence[SessionInfo]:
        return [SessionInfo(id=f"pid-{p.pid}", backend=self.id, state="running", job_id=job_id)
                for job_id, p in self.sessions.running().items()]

    def destroy_session(self, session_id: str) -> bool:
        with self.sessions.lock:
            procs = list(self.sessions.procs.values())
        for proc in procs:
            if f"pid-{proc.pid}" == session_id:
                if proc.poll() is None:
                    proc.terminate()
                return True
        return False


def backend_for(sessions: SessionProcesses) -> type[LocalProcessBackend]:
    """The backend class of one demo, whose sessions are kept in ``sessions``."""
    return type(LocalProcessBackend.__name__, (LocalProcessBackend,), {"sessions": sessions})
