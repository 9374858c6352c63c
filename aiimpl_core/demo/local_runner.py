"""Runner backend ``local-process``: runs the session program as a child process of this one.

For the demo and for trying the whole loop on a laptop; sessions share this machine's
environment, so it is only registered by ``aiimpl demo``, never through an entry point.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar

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


class LocalProcessBackend(RunnerBackend):
    id = "local-process"
    display_name = "Local process (sandbox)"
    supports_sessions = True
    mapping_selectable = True

    #: the processes of this interpreter, by job id (shared by the app's provider instances)
    processes: ClassVar[dict[int, subprocess.Popen[bytes]]] = {}
    logs: ClassVar[dict[int, str]] = {}
    redactors: ClassVar[dict[int, Redactor]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        env = dict(os.environ)
        env.update(request.env)
        workdir = self.context.setting("AIIMPL_DEMO_WORKDIR") or os.getcwd()
        log_path = os.path.join(workdir, f"session-{request.job_id}.log")
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiimpl_core.cli", "session", "run"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
        )
        with self._lock:
            self.processes[request.job_id] = proc
            self.logs[request.job_id] = log_path
            self.redactors[request.job_id] = Redactor(request.env[n] for n in request.secret_names)
        return DispatchResult(run_id=f"pid-{proc.pid}", run_url=None, linked=True)

    def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        now = self.context.clock()
        states = []
        for run in runs:
            proc = self.processes.get(run.job_id)
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
        path = self.logs.get(job_id)
        if not path or not os.path.exists(path):
            return ""
        with open(path, "rb") as fh:
            text = b"\n".join(fh.read().splitlines()[-lines:]).decode("utf-8", "replace")
        redactor = self.redactors.get(job_id)
        return redactor.text(text) if redactor else text

    def cancel(self, run: InFlightRun) -> None:
        proc = self.processes.get(run.job_id)
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def list_sessions(self) -> Sequence[SessionInfo]:
        return [SessionInfo(id=f"pid-{p.pid}", backend=self.id, state="running", job_id=job_id)
                for job_id, p in list(self.processes.items()) if p.poll() is None]

    def destroy_session(self, session_id: str) -> bool:
        for proc in list(self.processes.values()):
            if f"pid-{proc.pid}" == session_id:
                if proc.poll() is None:
                    proc.terminate()
                return True
        return False
