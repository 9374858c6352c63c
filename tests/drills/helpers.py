"""Small helpers shared by the drills: post as a runner does, read jobs back, and run the
orchestrator's processes beside the test (gunicorn's workers, pollers, another host's script)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import requests

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job
from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import FakeRunner
from aiimpl_core.testing.ports import free_port


def env_of(runner: FakeRunner, job_id: int) -> dict[str, str]:
    """The session environment the fake runner received for a job (tokens, nonce …)."""
    return dict(runner.runs[job_id].request.env)


def result_request(runner: FakeRunner, job_id: int, **body: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of ``POST /runner/result`` as the job's session sends them (``body``
    takes the arguments of the kit's :func:`~aiimpl_core.testing.orchestrator.result_request`)."""
    return orchestrator.result_request(env_of(runner, job_id), **body)


def progress_request(
    runner: FakeRunner, job_id: int, step_id: str = "agent"
) -> tuple[dict[str, Any], dict[str, str]]:
    return orchestrator.progress_request(env_of(runner, job_id), step_id, step_type="agent",
                                         started_at="2026-11-29T06:00:00Z")


def jobs() -> list[Job]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(Job).order_by(Job.id)).all())


def job_of(issue_key: str) -> Job:
    found = [j for j in jobs() if j.issue_key == issue_key]
    assert len(found) == 1, (issue_key, [(j.id, j.status) for j in found])
    return found[0]


def jobs_per_issue() -> Counter[str]:
    return Counter(j.issue_key for j in jobs())


# -- the orchestrator's processes ----------------------------------------------------------------

POLL_WORKER = os.path.join(os.path.dirname(__file__), "poll_worker.py")


@contextmanager
def gunicorn_serving(tmp_path: Path, app_module: str, environ: dict[str, str]) -> Iterator[str]:
    """gunicorn with the production configuration serving ``app_module``'s ``app`` (its source,
    written to ``tmp_path``), with ``environ``'s ``AIIMPL_*`` settings in place of the test's;
    yields the base URL."""
    # each worker process that loaded the module says so (as a line of its pid): the races need
    # every worker taking connections, not only the first to answer (which a loaded machine may
    # leave alone for a while)
    (tmp_path / "served_app.py").write_text(app_module + _SAYS_LOADED)
    port = free_port()
    env = _module_environ(tmp_path, environ)
    env.update(AIIMPL_BIND=f"127.0.0.1:{port}", AIIMPL_PUBLIC_URL=f"http://127.0.0.1:{port}",
               XDG_RUNTIME_DIR=str(tmp_path))
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115
    # connections made before a race (:func:`connected`) are kept open longer than the production
    # configuration's 5 s: on a loaded machine they may wait longer than that for the release, and
    # one closed as its request goes out would fail the race for nothing
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:aiimpl_core.gunicorn_conf",
                             "--keep-alive", "300", "served_app:app"], env=env, stdout=log, stderr=log,
                            cwd=tmp_path)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc, tmp_path / "gunicorn.log")
        loaded = tmp_path / "workers.loaded"
        workers = int(environ.get("AIIMPL_WORKERS") or 1)
        wait_until(lambda: loaded.exists() and len(loaded.read_text().split()) >= workers,
                   f"every one of the {workers} workers loaded the app")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


#: appended to a served module: a gunicorn worker that imported it adds its pid to ``workers.loaded``
_SAYS_LOADED = """

if __name__ != "__main__":
    import os as _os

    with open(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "workers.loaded"), "a") as _said:
        _said.write(f"{_os.getpid()}\\n")
"""


def _module_environ(tmp_path: Path, environ: dict[str, str]) -> dict[str, str]:
    """This process's environment with ``environ``'s ``AIIMPL_*`` settings in place of the
    test's, and the module written in ``tmp_path`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    return env


def start_app_module_script(tmp_path: Path, environ: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """The module :func:`gunicorn_serving` wrote, run as a script (its ``__main__`` part: another
    host's poller, say) with the same settings, once it printed ``ready``; its log goes to ``log``."""
    with open(log, "a") as errors:
        proc = subprocess.Popen([sys.executable, str(tmp_path / "served_app.py")], stdout=subprocess.PIPE,
                                stderr=errors, text=True, env=_module_environ(tmp_path, environ),
                                cwd=tmp_path)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise AssertionError(f"the script did not start: {line!r} {log.read_text()[-3000:]}")
    return proc


def wait_until_serving(base: str, proc: subprocess.Popen, log: Path) -> None:
    """Wait until the server ``proc`` started answers at ``base`` (a minute at most); its ``log``
    ends the failure's message when it does not."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log.read_text()[-3000:]) from None
            time.sleep(0.2)


@contextmanager
def connected(base: str) -> Iterator[requests.Session]:
    """A connection of its own to the server, made before the start."""
    with requests.Session() as session:
        session.get(base + "/healthz", timeout=30)
        yield session


def settings_of(app: Any) -> dict[str, Any]:
    """The app's ``AIIMPL_*`` settings that another process can be given (plain values)."""
    return {
        key: app.config[key]
        for key in app.config
        if key.startswith("AIIMPL_") and isinstance(app.config[key], str | int | float | bool)
    }


def start_poller(
    app: Any, output: IO[str] | None = None, interval: float = 0.1, tracker: str = "aiimpl_linear"
) -> subprocess.Popen[str]:
    """A process running poll cycles back to back with the app's configuration and database
    (``poll_worker.py``), once it is ready; ``tracker``: the tracker plugin's package it loads.
    Its lines (``cycle …`` after each cycle) go to the returned process's ``stdout`` and its log to
    its ``stderr``, or both to ``output`` (a pipe nobody reads would stop a process that runs long)."""
    config = {**settings_of(app), "AIIMPL_DATABASE_URL": app.config["AIIMPL_DATABASE_URL"],
              "AIIMPL_POLL_INTERVAL": interval}
    env = {**os.environ, "AIIMPL_DRILL_CONFIG": json.dumps(config), "AIIMPL_DRILL_TRACKER": tracker,
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    ready, writer = os.pipe()
    proc = subprocess.Popen([sys.executable, POLL_WORKER, str(writer)], stdout=output or subprocess.PIPE,
                            stderr=output or subprocess.PIPE, text=True, env=env, pass_fds=(writer,))
    os.close(writer)
    with os.fdopen(ready) as announced:
        line = announced.readline().strip()
    if line != "ready":
        proc.kill()
        err = proc.stderr.read()[-3000:] if proc.stderr else f"(its output: {getattr(output, 'name', '')})"
        raise AssertionError(f"poller did not start: {line!r} {err}")
    return proc


@contextmanager
def pollers_running(
    app: Any, tmp_path: Path, count: int, *, interval: float = 0.05, tracker: str = "aiimpl_linear"
) -> Iterator[list[Path]]:
    """``count`` poller processes (:func:`start_poller`) running cycles back to back until the block
    ends, when they are killed; yields the files their lines go to."""
    outputs = [tmp_path / f"poller-{n}.txt" for n in range(count)]
    procs = []
    try:
        for path in outputs:
            with open(path, "w") as output:
                procs.append(start_poller(app, output, interval=interval, tracker=tracker))
        yield outputs
    finally:
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)


def poller_cycles(outputs: list[Path]) -> list[list[str]]:
    """The keys each poller cycle dispatched, from the pollers' lines."""
    return [json.loads(line.split("\t")[1]) for path in outputs for line in _cycle_lines(path)]


def wait_for_whole_cycles(outputs: list[Path]) -> None:
    """Until every poller has ended two more cycles (so each listed the last issues whole)."""
    before = [len(_cycle_lines(path)) for path in outputs]
    wait_until(
        lambda: all(len(_cycle_lines(path)) >= n + 2 for path, n in zip(outputs, before, strict=True)),
        f"two more cycles of each poller (their lines: {', '.join(str(path) for path in outputs)})",
    )


def _cycle_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("cycle\t")]


def wait_until(done: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Until ``done()`` is true; fails the drill, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)
