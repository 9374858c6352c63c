"""The world of the session tests: a real orchestrator, a fake GitHub, a git remote, a fake agent.

* the orchestrator is ``create_app`` with the fake tracker and a fake runner backend, served by
  werkzeug on 127.0.0.1 in a thread; the fake runner captures each dispatch's environment;
* GitHub is :class:`~aiimpl_core.testing.fake_github.FakeGitHub` (checked against GitHub's OpenAPI
  description) minting the installation tokens and taking (and listing) the pull requests;
* the git remote is a bare repository behind ``git http-backend`` that accepts only installation
  tokens the fake GitHub minted and that have not expired;
* the agent is ``fake_claude.py`` installed as ``claude`` on the session's PATH.

:meth:`World.run_session` starts ``python -m aiimpl_core.session run`` as a child process with
exactly the environment the dispatcher built, as a runner backend would.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, JobStep
from aiimpl_core.orm import Mapping as MappingRow
from aiimpl_core.services import secrets as secrets_service
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker
from aiimpl_core.testing.serving import serve_wsgi

from .gitserver import GitHttpServer

HERE = Path(__file__).parent
ANTHROPIC_KEY = "sk-ant-api03-Zx9Qw7Lm2Pv8Rt5Yn4Kc1Hd6Gf3Js0Ab-test"
TEAM_SECRET = "deploy-key+/with spaces&symbols=42"
OWNER, REPO = "acme", "eng"


def git(*args: str, cwd: str | Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "t@example.test",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


class Remote:
    """The bare repository ``acme/eng.git`` and a scratch clone to seed it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = root / OWNER / f"{REPO}.git"
        self.bare.parent.mkdir(parents=True)
        git("init", "--bare", "-q", "-b", "main", str(self.bare), cwd=root)
        self.seed_dir = root.parent / "seed"
        git("clone", "-q", str(self.bare), str(self.seed_dir), cwd=root)
        git("checkout", "-q", "-b", "main", cwd=self.seed_dir)
        self.commit({"README.md": "# eng\n"}, "initial commit")

    def commit(self, files: dict[str, str], message: str = "seed", branch: str = "main") -> str:
        for name, content in files.items():
            path = self.seed_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            if name.endswith(".sh"):
                path.chmod(path.stat().st_mode | stat.S_IXUSR)
        git("add", "-A", cwd=self.seed_dir)
        git("commit", "-q", "-m", message, cwd=self.seed_dir)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.seed_dir)
        return git("rev-parse", "HEAD", cwd=self.seed_dir).strip()

    def branches(self) -> dict[str, str]:
        out = git("for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads", cwd=self.bare)
        return dict(line.split(" ", 1) for line in out.splitlines())

    def show(self, branch: str, path: str) -> str:
        return git("show", f"{branch}:{path}", cwd=self.bare)

    def config_text(self) -> str:
        return (self.bare / "config").read_text()


@pytest.fixture
def database_url(aiimpl_databases: Any) -> str:
    """The orchestrator's database: SQLite. These tests' subject is the session program itself
    (git, the agent, budgets, failures, hostile output); the orchestrator's side of every callback
    is tested on both databases in tests/api and tests/engine, and the modules of the round trips
    between a session and the orchestrator (``test_session_e2e``, ``test_session_orchestrator``)
    take the core's fixture back, to run on both. (All on both took a fifth of the suite's time.)"""
    return aiimpl_databases.get("sqlite")


@pytest.fixture
def github(request: pytest.FixtureRequest, aiimpl_specs_dir: str) -> Iterator[FakeGitHub]:
    """The fake GitHub, checked against the fast subset of GitHub's description; a test whose
    session lists pull requests (an operation outside the subset) asks for the complete one with
    ``@pytest.mark.parametrize("github", ["full"], indirect=True)``."""
    spec = None
    if getattr(request, "param", None) == "full":
        spec = os.path.join(aiimpl_specs_dir, "github", "rest", "api.github.com.json")
    gh = FakeGitHub(spec_path=spec)
    gh.start()
    gh.add_repo(OWNER, REPO)
    gh.add_installation(OWNER, [REPO])
    yield gh
    gh.stop()


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner(secrets=True, gap_fill=True)


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, runner: FakeRunner) -> list[object]:
    return [tracker.plugin, runner.plugin]


@pytest.fixture
def aiimpl_config(github: FakeGitHub) -> dict[str, Any]:
    return {
        "AIIMPL_GITHUB_API_URL": github.url,
        "AIIMPL_GITHUB_APP_ID": str(github.app_id),
        "AIIMPL_GITHUB_PRIVATE_KEY": github.private_key_pem,
        "AIIMPL_ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "AIIMPL_SESSION_LIFETIME_SECONDS": 120,
    }


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    root = tmp_path / "remote"
    root.mkdir()
    return Remote(root)


@pytest.fixture
def git_server(remote: Remote, github: FakeGitHub) -> Iterator[GitHttpServer]:
    def check(owner: str, repo: str, username: str, password: str, write: bool) -> bool:
        record = github.tokens.get(password)
        if record is None or username != "x-access-token":
            return False
        if record.expires_at <= datetime.now(UTC):
            return False  # GitHub refuses an expired installation token
        if record.owner.lower() != owner.lower() or (
            record.repositories is not None and repo not in record.repositories
        ):
            return False
        return record.permissions.get("contents") in (("write",) if write else ("read", "write"))

    server = GitHttpServer(str(remote.root), check).start()
    yield server
    server.stop()


@pytest.fixture
def orchestrator(app: Any) -> Iterator[str]:
    with serve_wsgi(app, name="orchestrator") as live:
        app.config["AIIMPL_PUBLIC_URL"] = live.url  # what the dispatcher hands the session as AIIMPL_URL
        yield live.url


@pytest.fixture
def agent_bin(tmp_path: Path) -> Path:
    """A directory holding ``claude``: the fake agent, run by this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "claude"
    script.write_text(f"#!{sys.executable}\n" + (HERE / "fake_claude.py").read_text())
    script.chmod(0o755)
    return bin_dir


class World:
    """Everything a session test touches, with the helpers to drive and inspect it."""

    def __init__(
        self,
        app: Any,
        tracker: FakeTracker,
        runner: FakeRunner,
        github: FakeGitHub,
        remote: Remote,
        git_server: GitHttpServer,
        orchestrator: str,
        agent_bin: Path,
        tmp_path: Path,
    ) -> None:
        self.app = app
        self.tracker = tracker
        self.runner = runner
        self.github = github
        self.remote = remote
        self.git_server = git_server
        self.url = orchestrator
        self.agent_bin = agent_bin
        self.tmp = tmp_path
        self.agent_log = tmp_path / "agent-calls.jsonl"
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.outputs: list[str] = []
        self.sessions: list[int] = []  # jobs whose session ran

    def mapping(
        self, *, default_branch: str = "main", planning: bool = False, **extra_env: str
    ) -> MappingRow:
        row = MappingRow(
            team_key="ENG",
            owner=OWNER,
            repo=REPO,
            default_branch=default_branch,
            provider="anthropic",
            execution_mode="github-actions",
            ticketing={"provider": "fake-tracker"},
            planning_enabled=planning,
            planning_workflow_file="plan.yml" if planning else None,
            extra_env={
                "AIIMPL_GIT_BASE_URL": self.git_server.url,
                "FAKE_AGENT_LOG": str(self.agent_log),
                **extra_env,
            },
        )
        db.session.add(row)
        db.session.commit()
        secrets_service.set_secret("ENG", "DEPLOY_KEY", TEAM_SECRET)
        return row

    def dispatch(self, key: str = "ENG-1", **issue: Any) -> int:
        if key not in self.tracker.issues:
            issue.setdefault("title", "Greet the user")
            issue.setdefault("description", "Add a greeting file so visitors feel welcome.")
            self.tracker.add(key, **issue)
        else:
            self.tracker.trigger(key)
        report = run_cycle()
        assert report.dispatched, report
        job_id = report.dispatched[-1].job_id
        db.session.remove()  # no transaction of this thread may hold SQLite while the session writes
        return job_id

    def env_of(self, job_id: int) -> dict[str, str]:
        return dict(self.runner.runs[job_id].request.env)

    def session_env(self, job_id: int, **overrides: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.agent_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "AIIMPL_WORKDIR": str(self.tmp / f"work-{job_id}"),
        }
        env.update(self.env_of(job_id))
        env.update(overrides)
        return env

    def git_pausing_at(self, job_id: int, arg: str, seconds: int = 60) -> tuple[str, Path]:
        """The job's ``PATH`` with a ``git`` whose first command with the argument ``arg`` waits
        ``seconds`` (long enough to be stopped), and the file that says it is waiting; every other
        git command is git's own."""
        real_git = shutil.which("git")
        assert real_git
        wrapped = self.tmp / f"git-pausing-at-{arg.lstrip('-')}"
        wrapped.mkdir()
        marker, once = wrapped / "pausing", wrapped / "paused"
        (wrapped / "git").write_text(
            "#!/bin/sh\n"
            f'for arg in "$@"; do if [ "$arg" = "{arg}" ] && [ ! -e {once} ]; then '
            f"touch {once} {marker}; sleep {seconds}; fi; done\n"
            f'exec {real_git} "$@"\n'
        )
        (wrapped / "git").chmod(0o755)
        return f"{wrapped}{os.pathsep}{self.session_env(job_id)['PATH']}", marker

    def start_session(
        self, job_id: int, command: tuple[str, ...] = (), **overrides: str
    ) -> subprocess.Popen[str]:
        self.sessions.append(job_id)
        return subprocess.Popen(
            list(command or (sys.executable, "-m", "aiimpl_core.session", "run")),
            env=self.session_env(job_id, **overrides),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_session(
        self, job_id: int, timeout: float = 120, command: tuple[str, ...] = (), **overrides: str
    ) -> tuple[int, str]:
        proc = self.start_session(job_id, command, **overrides)
        out, _ = proc.communicate(timeout=timeout)
        self.outputs.append(out)
        db.session.remove()
        return proc.returncode, out

    def job(self, job_id: int) -> Job:
        db.session.expire_all()
        job = db.session.get(Job, job_id)
        assert job is not None
        return job

    def steps(self, job_id: int) -> dict[str, JobStep]:
        db.session.expire_all()
        rows = db.session.scalars(select(JobStep).where(JobStep.job_id == job_id)).all()
        return {r.step_id: r for r in rows}

    def comments(self, key: str = "ENG-1") -> list[str]:
        return list(self.tracker.comments[key])

    def first_lines(self, key: str = "ENG-1") -> list[str]:
        return [c.split("\n", 1)[0] for c in self.comments(key)]

    def agent_calls(self) -> list[dict[str, Any]]:
        if not self.agent_log.exists():
            return []
        return [json.loads(line) for line in self.agent_log.read_text().splitlines()]

    def secret_values(self, job_id: int) -> list[str]:
        """Every secret the session knew: the env's secret names plus the tokens GitHub minted."""
        env = self.env_of(job_id)
        names = [n for n in env["AIIMPL_SECRET_NAMES"].split(",") if n]
        return [env[n] for n in names] + [t.token for t in self.github.issued_tokens]

    def everything_stored_or_posted(self) -> str:
        """All rows of every table, every tracker comment, every request GitHub received, and the
        session's own output."""
        parts: list[str] = []
        db.session.expire_all()
        with db.engine.connect() as conn:
            for table in db.metadata.sorted_tables:
                for row in conn.execute(table.select()):
                    parts.append(repr(tuple(row)))
        for key, bodies in self.tracker.comments.items():
            parts.extend(f"{key}: {b}" for b in bodies)
        for rec in self.github.requests:
            if rec.path.endswith("/access_tokens"):
                continue  # GitHub's own answer carries the token to the orchestrator, by design
            parts.append(rec.body.decode("utf-8", "replace"))
            parts.append(json.dumps(rec.response_json))
        parts.extend(self.outputs)
        return "\n".join(parts)

    def assert_no_secret_anywhere(self, job_id: int) -> None:
        from urllib.parse import quote

        text = self.everything_stored_or_posted()
        for value in self.secret_values(job_id):
            for shape in {value, quote(value, safe=""), value[:12] + "\n" + value[12:]}:
                assert shape not in text, f"a secret ({len(value)} chars) leaked"


@pytest.fixture
def world(
    app: Any,
    tracker: FakeTracker,
    runner: FakeRunner,
    github: FakeGitHub,
    remote: Remote,
    git_server: GitHttpServer,
    orchestrator: str,
    agent_bin: Path,
    tmp_path: Path,
) -> Iterator[World]:
    w = World(app, tracker, runner, github, remote, git_server, orchestrator, agent_bin, tmp_path)
    yield w
    github.assert_clean()
    # whatever the test did: no secret of any session it ran was stored or posted anywhere
    for job_id in w.sessions:
        w.assert_no_secret_anywhere(job_id)


def script(body: str) -> str:
    return "#!/usr/bin/env bash\nset -euo pipefail\n" + textwrap.dedent(body).lstrip()


def wait_until(
    done: Callable[[], object], what: str, timeout: float = 60, *,
    running: subprocess.Popen[str] | None = None
) -> None:
    """Until ``done()`` is true; fails the test, naming ``what``, after ``timeout`` seconds, or at
    once (with its output) if the process ``running`` ended first."""
    deadline = time.monotonic() + timeout
    while not done():
        if running is not None and running.poll() is not None:
            out = running.stdout.read() if running.stdout else ""
            raise AssertionError(f"the process ended (exit {running.returncode}) before {what}:\n{out}")
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)


#: ``@FULL_GITHUB`` on a test: its fake GitHub is checked against GitHub's complete description
FULL_GITHUB = pytest.mark.parametrize("github", ["full"], indirect=True)


__all__ = ["ANTHROPIC_KEY", "FULL_GITHUB", "TEAM_SECRET", "World", "git", "script", "shutil", "timedelta",
           "wait_until"]
