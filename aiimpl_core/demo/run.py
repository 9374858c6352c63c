"""The ``aiimpl demo`` flow: set up the sandbox, trigger one issue, and watch it become a PR."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import hookimpl
from ..errors import AiimplError
from ..testing.fakes import FakeTracker
from ..types import STAGE_TITLES, JobStatus, Stage
from .local_runner import LocalProcessBackend
from .sandbox_github import SandboxGitHub

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


def _git(*args: str, cwd: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "Demo", "GIT_AUTHOR_EMAIL": "demo@sandbox.invalid",
                        "GIT_COMMITTER_NAME": "Demo", "GIT_COMMITTER_EMAIL": "demo@sandbox.invalid"})


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
        self.echo(f"  job {job_id} ({issue_key}): {old.value if old else 'new'} -> {new.value}")
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
    __name__ = "demo-local-runner"

    @hookimpl
    def aiimpl_register_runner_backends(self, register: Callable[..., None]) -> None:
        register(LocalProcessBackend)


def check_port(port: int) -> None:
    """Raise :class:`AiimplError` when nothing can listen on ``127.0.0.1:port``."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise AiimplError(f"port {port} is not free ({exc.strerror}): pick another with --port") from None


def prepare_workdir(workdir: str) -> None:
    """Make ``workdir`` an empty working directory marked as the demo's.

    A directory the demo made before (it holds :data:`MARKER`) is emptied; an empty one is used as
    it is; anything else is left alone and refused, so that the demo never deletes an operator's files.
    """
    if os.path.isdir(workdir):
        entries = os.listdir(workdir)
        if entries and MARKER not in entries:
            raise AiimplError(f"{workdir} is not empty and was not made by `aiimpl demo`: "
                              "pick an empty or new directory with --dir")
        for name in entries:
            path = os.path.join(workdir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    elif os.path.lexists(workdir):
        raise AiimplError(f"{workdir} is not a directory: pick an empty or new directory with --dir")
    else:
        os.makedirs(workdir)
    with open(os.path.join(workdir, MARKER), "w") as fh:
        fh.write("Made by `aiimpl demo`, which empties this directory when it runs again.\n")


def run_demo(
    workdir: str, port: int, *, exit_when_done: bool, timeout: float, echo: Callable[[str], None]
) -> int:
    from flask_migrate import upgrade

    from .. import create_app
    from ..auth import admin
    from ..cli.devserver import make_dev_server
    from ..services import dispatch

    workdir = os.path.abspath(workdir)
    check_port(port)
    prepare_workdir(workdir)
    git_root = make_repository(workdir)
    github = SandboxGitHub(git_root).start()
    tracker = FakeTracker("sandbox", display_name="Sandbox tracker (demo)")
    narrator = Narrator(echo)
    tracker.on_comment.append(narrator.comment)
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
    app = create_app(config, plugins=[tracker.plugin, LocalRunnerPlugin(), narrator], load_entrypoints=False)
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the narration is the demo's output
    with app.app_context():
        upgrade()
    try:  # (taken since check_port looked)
        server = make_dev_server("127.0.0.1", port, app, host_option=None)
    except AiimplError:
        github.stop()
        raise
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

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
    started = time.monotonic()
    try:
        while not narrator.done.wait(0.5):
            if time.monotonic() - started > timeout:
                echo(f"the demo job did not finish within {timeout:.0f} s; see {workdir}/session-*.log")
                return 1
        time.sleep(1.5)  # let the last comments go out
        with app.app_context():
            from ..extensions import db
            from ..orm import Job

            job = db.session.query(Job).order_by(Job.id.desc()).first()
            if job is not None and job.pr_url:
                echo(f"PR opened: {job.pr_url}")
        ok = narrator.final_status is JobStatus.COMPLETED
        if exit_when_done:
            return 0 if ok else 1
        echo("The demo keeps serving the UI; press Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        stop.set()
        poller.join(timeout=10)
        server.shutdown()
        github.stop()


def _admin_token(app: Any, admin: Any) -> str:
    with app.test_request_context():
        return admin.issue_session()
