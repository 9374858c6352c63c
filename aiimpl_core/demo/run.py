"""The ``aiimpl demo`` flow: set up the sandbox, trigger one issue, and watch it become a PR."""
from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from .. import hookimpl
from ..errors import AiimplError
from ..testing.fakes import FakeTracker
from ..types import STAGE_TITLES, JobStatus, Stage
from .local_runner import LocalProcessBackend, SessionProcesses, backend_for, base_environment
from .sandbox_github import SandboxGitHub
from .stopping import GaveUp, Interrupted, StopSignals

TEAM = "DEMO"
ISSUE = "DEMO-1"
OWNER, REPO = "sandbox", "demo-app"

VERIFY = """#!/usr/bin/env bash
# Verification script of the demo repository: the unit tests must pass.
set -euo pipefail
python3 -m unittest discover -q
"""

#: written into a working directory the demo made, so that it only ever empties its own
MARKER = ".aiimpl-demo"

README = """# demo-app

A tiny repository created by `aiimpl demo`. The demo issue asks for a greeting helper.
"""

#: the operator's variables the demo's app reads: its log settings only. The demo sets the rest
#: itself: a RUNNER_MODE, AIIMPL_SCHEDULER, AIIMPL_BACKEND_CAPS or AIIMPL_DISABLED_PLUGINS meant for
#: a real orchestrator would keep the demo from dispatching, or poll before its database exists
APP_SETTINGS_PASSED = ("AIIMPL_LOG_LEVEL", "AIIMPL_LOG_FORMAT", "AIIMPL_TRACE_PLUGINS")


def app_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the demo's app is built with: :data:`APP_SETTINGS_PASSED` of ``environ``
    (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    return {name: env[name] for name in APP_SETTINGS_PASSED if env.get(name)}


def _git(*args: str, cwd: str) -> None:
    # (the operator's GIT_DIR or GIT_WORK_TREE would point these commands at another repository)
    identity = {"GIT_AUTHOR_NAME": "Demo", "GIT_AUTHOR_EMAIL": "demo@sandbox.invalid",
                "GIT_COMMITTER_NAME": "Demo", "GIT_COMMITTER_EMAIL": "demo@sandbox.invalid"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**base_environment(), **identity})


def make_repository(root: str) -> str:
    """A bare repository ``<root>/git/sandbox/demo-app.git`` with a first commit on ``main``."""
    bare = os.path.join(root, "git", OWNER, f"{REPO}.git")
    seed = os.path.join(root, "seed")
    os.makedirs(os.path.dirname(bare), exist_ok=True)
    _git("init", "--bare", "-b", "main", bare, cwd=root)
    os.makedirs(os.path.join(seed, ".ai-implement"))
    with open(os.path.join(seed, "README.md"), "w") as fh:
        fh.write(README)
    with open(os.path.join(seed, ".ai-implement", "verify.sh"), "w") as fh:
        fh.write(VERIFY)
    os.chmod(os.path.join(seed, ".ai-implement", "verify.sh"), 0o755)
    _git("init", "-b", "main", cwd=seed)
    _git("add", ".", cwd=seed)
    _git("commit", "-m", "Initial commit", cwd=seed)
    _git("push", bare, "main", cwd=seed)
    shutil.rmtree(seed)
    return os.path.join(root, "git")


class Narrator:
    """Prints what happens, as it happens, and remembers the outcome."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.done = threading.Event()
        self.final_status: JobStatus | None = None

    @hookimpl
    def aiimpl_job_status_changed(
        self, job_id: int, issue_key: str, old: JobStatus | None, new: JobStatus
    ) -> None:
        if old is None:  # the reference's first status: no run is linked yet
            self.echo(f"  job {job_id} ({issue_key}) created: {new.value}")
        else:
            self.echo(f"  job {job_id} ({issue_key}): {old.value} -> {new.value}")
        if new.terminal:
            self.final_status = new
            self.done.set()

    @hookimpl
    def aiimpl_issue_stage_changed(self, issue_key: str, old: Stage | None, new: Stage) -> None:
        self.echo(f"  {issue_key} stage: {STAGE_TITLES.get(new, new.value)}")

    def comment(self, key: str, body: str) -> None:
        first = body.strip().splitlines()[0] if body.strip() else ""
        self.echo(f"  comment on {key}: {first}")


class LocalRunnerPlugin:
    """Registers the ``local-process`` backend, keeping its sessions in ``sessions``."""

    __name__ = "demo-local-runner"

    def __init__(self, sessions: SessionProcesses) -> None:
        self.sessions = sessions

    @hookimpl
    def aiimpl_register_runner_backends(self, register: Callable[..., None]) -> None:
        register(backend_for(self.sessions))


def check_port(port: int) -> None:
    """Raise :class:`AiimplError` when nothing can listen on ``127.0.0.1:port``."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise AiimplError(f"port {port} is not free ({exc.strerror}): pick another with --port") from None


def prepare_workdir(workdir: str) -> IO[str]:
    """Make ``workdir`` an empty working directory marked as the demo's, and hold it: the answer is
    its :data:`MARKER` file, locked until it is closed.

    A directory the demo made before (it holds :data:`MARKER`) is emptied; an empty one is used as
    it is; anything else is left alone and refused, so that the demo never deletes an operator's files.
    One another demo holds (it is running) is refused too, rather than emptied under it.
    """
    if os.path.isdir(workdir):
        entries = os.listdir(workdir)
        if entries and MARKER not in entries:
            raise AiimplError(f"{workdir} is not empty and was not made by `aiimpl demo`: "
                              "pick an empty or new directory with --dir")
    elif os.path.lexists(workdir):
        raise AiimplError(f"{workdir} is not a directory: pick an empty or new directory with --dir")
    else:
        os.makedirs(workdir, exist_ok=True)
    marker = open(os.path.join(workdir, MARKER), "a+")  # noqa: SIM115 - held for the demo's life
    try:
        fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        marker.close()
        raise AiimplError(f"{workdir} is used by another `aiimpl demo` that is running: stop that one, "
                          "or pick another directory with --dir") from None
    try:
        for name in os.listdir(workdir):
            path = os.path.join(workdir, name)
            if name == MARKER:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        marker.truncate(0)
        marker.write("Made by `aiimpl demo`, which empties this directory when it runs again.\n")
        marker.flush()
    except BaseException:
        marker.close()
        raise
    return marker


def run_demo(
    workdir: str, port: int, *, exit_when_done: bool, timeout: float, echo: Callable[[str], None],
    signals: StopSignals | None = None,
) -> int:
    """Run the demo; the exit status (0: the job opened a PR).

    Whatever ends it (the job, ``timeout``, an error, :class:`Interrupted`), the demo stops what it
    started on the way out: the poller, the sessions (SIGTERM, then SIGKILL after a grace period, or
    at once on another signal of ``signals``), the server and the sandbox GitHub. Its app reads only
    :func:`app_environment` of the operator's environment.
    """
    with contextlib.ExitStack() as cleanup:
        return _run(cleanup, workdir, port, exit_when_done=exit_when_done, timeout=timeout, echo=echo,
                    signals=signals)


def _run(
    cleanup: contextlib.ExitStack, workdir: str, port: int, *, exit_when_done: bool, timeout: float,
    echo: Callable[[str], None], signals: StopSignals | None,
) -> int:
    from flask_migrate import upgrade

    from .. import create_app
    from ..auth import admin
    from ..cli.devserver import make_dev_server
    from ..services import dispatch

    workdir = os.path.abspath(workdir)
    check_port(port)
    cleanup.enter_context(prepare_workdir(workdir))
    git_root = make_repository(workdir)
    github = SandboxGitHub(git_root).start()
    cleanup.callback(github.stop)
    tracker = FakeTracker("sandbox", display_name="Sandbox tracker (demo)")
    narrator = Narrator(echo)
    tracker.on_comment.append(narrator.comment)
    sessions = SessionProcesses()
    code = secrets.token_urlsafe(9)
    server_url = f"http://127.0.0.1:{port}"
    config = {
        "AIIMPL_DATABASE_URL": f"sqlite:///{workdir}/aiimpl-demo.db",
        "AIIMPL_SECRET_KEY": secrets.token_hex(32),
        "AIIMPL_ADMIN_ACCESS_CODE": code,
        "AIIMPL_PUBLIC_URL": server_url,
        "AIIMPL_GITHUB_API_URL": github.api_url,
        "AIIMPL_GITHUB_TOKEN": "sandbox-token-" + secrets.token_hex(8),
        "AIIMPL_DEMO_WORKDIR": workdir,
        "AIIMPL_UI_BANNER": "Demo: a sandbox tracker, a sandbox GitHub and a local runner with a scripted "
                            "stand-in agent. Nothing here talks to Linear, Jira or GitHub.",
    }
    app = create_app(config, plugins=[tracker.plugin, LocalRunnerPlugin(sessions), narrator],
                     load_entrypoints=False, environ=app_environment())
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the narration is the demo's output
    with app.app_context():
        upgrade()
    server = make_dev_server("127.0.0.1", port, app, host_option=None)  # (taken since check_port looked)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    cleanup.callback(server.shutdown)
    # (stopped while the server still answers: a session that is told to stop reports that it was)
    cleanup.callback(sessions.stop, hurry=signals.hurry if signals else None, echo=echo)

    client = app.test_client()
    headers = {"Authorization": f"Bearer {_admin_token(app, admin)}"}
    resp = client.post("/api/mappings", headers=headers, json={
        "teamKey": TEAM, "owner": OWNER, "repo": REPO, "defaultBranch": "main", "provider": "anthropic",
        "executionMode": LocalProcessBackend.id, "maxInProgressAiIssues": 2, "branchPrefix": "ai/",
        "ticketing": {"provider": "sandbox"},
        "extraEnv": {
            "AIIMPL_GIT_BASE_URL": f"file://{git_root}",
            "AIIMPL_AGENT_COMMAND": f"{sys.executable} -m aiimpl_core.demo.agent "
                                    "--prompt-file {prompt_file} --max-turns {max_turns}",
        },
    })
    if resp.status_code >= 400:
        echo(f"could not create the demo mapping: {resp.get_json()}")
        return 1

    echo(f"AI-Implement demo (sandbox) — working directory {workdir}")
    echo(f"  admin UI:        {server_url}/ui/   (access code: {code})")
    echo(f"  sandbox GitHub:  {github.url}")
    echo(f"  sandbox tracker: issue {ISSUE} gets the AI-Implement label")
    tracker.add(ISSUE, title="Add a greeting helper",
                description="Add `greet(name)` returning `Hello, <name>!`, with unit tests.")
    echo(f"  {ISSUE} stage: {STAGE_TITLES[Stage.TRIGGERED]}")

    stop = threading.Event()

    def poll() -> None:
        with app.app_context():
            while not stop.is_set():
                try:
                    dispatch.run_cycle()
                except Exception as exc:  # noqa: BLE001 - the demo keeps going and says why
                    echo(f"  poll cycle failed: {exc}")
                stop.wait(2.0)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    def stop_polling() -> None:
        if signals is not None:
            signals.stopping = True
        stop.set()
        # (a cycle under way is let finish, for a while: a second Ctrl-C stops waiting)
        until = time.monotonic() + 10
        while poller.is_alive() and time.monotonic() < until and not (signals and signals.hurry.is_set()):
            poller.join(timeout=0.1)

    # (the first thing done on the way out: no poll cycle starts a session while they are stopped)
    cleanup.callback(stop_polling)
    started = time.monotonic()
    while not narrator.done.wait(0.5):
        if time.monotonic() - started > timeout:
            logs = sorted(glob.glob(os.path.join(workdir, "session-*.log")))
            said = f"see {', '.join(logs)}" if logs else "no session was started"
            raise GaveUp(f"gave up: the demo job did not finish within {timeout:g} s; {said}")
    status = 0 if narrator.final_status is JobStatus.COMPLETED else 1
    try:  # (the job has ended: Ctrl-C now is the way to end the demo, and its status is the job's)
        time.sleep(1.5)  # let the last comments go out
        with app.app_context():
            from ..extensions import db
            from ..orm import Job

            job = db.session.query(Job).order_by(Job.id.desc()).first()
            if job is not None and job.pr_url:
                echo(f"PR opened: {job.pr_url}")
        if exit_when_done:
            return status
        echo("The demo keeps serving the UI; press Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    except (Interrupted, KeyboardInterrupt):
        return status


def _admin_token(app: Any, admin: Any) -> str:
    with app.test_request_context():
        return admin.issue_session()
