"""The poll-cycle scene's fake Linear and fake GitHub, served from a child process of their own.

In the benchmark's own process the fakes' heap (every issue of the scene, every recorded request,
the parsed service descriptions) would be walked by each full pass of the cyclic garbage
collector, in whatever thread the pass falls, and their request handling would compete with the
orchestrator's thread for the interpreter lock: the orchestrator would be charged for the fakes'
work. In a child process they cost the orchestrator what a remote service costs it, the wait.

The parent drives the child over a pipe; every answer is ``(ok, value)``.
"""
from __future__ import annotations

import multiprocessing
import traceback
from datetime import datetime
from typing import Any


def _serve(conn: Any, teams: list[str], issues: list[tuple[str, str]]) -> None:
    from aiimpl_linear.testing import FakeLinear

    from aiimpl_core.testing.fake_github import FakeGitHub, Run

    linear = FakeLinear(request_limit=1_000_000).start()
    gh = FakeGitHub().start()
    gh.add_installation("acme")
    for n, team in enumerate(teams):
        linear.add_team(team)
        gh.add_repo("acme", f"repo-{n:03d}")
    for team, title in issues:
        linear.add_issue(team, title)

    def add_runs(runs: list[tuple[str, str, str, int, datetime]]) -> list[int]:
        ids = []
        for repo_name, run_name, branch, job_id, started in runs:
            wf = gh._workflow(gh.repo("acme", repo_name), "ai-implement.yml", None)
            if wf is None:
                raise LookupError(f"no workflow file in {repo_name}: sync the workflows first")
            with gh.lock:
                run = Run(next(gh._ids), "acme", repo_name, wf, run_name, branch, {"job_id": str(job_id)},
                          status="in_progress", created_at=started, updated_at=started,
                          run_started_at=started)
                gh.runs[run.id] = run
            ids.append(run.id)
        return ids

    commands = {
        "linear_operations": lambda: [r.operation for r in linear.requests],
        "github_requests": lambda: len(gh.requests),
        "add_runs": add_runs,
        "violations": lambda: {"github": list(gh.violations), "linear": list(linear.validation_errors)},
    }
    conn.send({
        "linear_config": linear.config(),
        "github_url": gh.url,
        "github_app_id": gh.app_id,
        "github_private_key_pem": gh.private_key_pem,
    })
    try:
        while True:
            name, args = conn.recv()
            if name == "stop":
                break
            try:
                conn.send((True, commands[name](*args)))
            except Exception:  # noqa: BLE001 - the parent raises it
                conn.send((False, traceback.format_exc()))
    finally:
        linear.stop()
        gh.stop()
        conn.close()


class RemoteFakes:
    """A child process serving the fake Linear (the ``teams``, one repository each at GitHub, and
    the triggered ``issues`` as ``(team, title)``) and the fake GitHub (App installed for ``acme``)."""

    def __init__(self, teams: list[str], issues: list[tuple[str, str]]) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, teams, issues), daemon=True)
        self.process.start()
        child.close()
        info = self._conn.recv()
        self.linear_config: dict[str, str] = info["linear_config"]
        self.github_url: str = info["github_url"]
        self.github_app_id: int = info["github_app_id"]
        self.github_private_key_pem: str = info["github_private_key_pem"]

    def call(self, name: str, *args: Any) -> Any:
        self._conn.send((name, args))
        ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"the fakes' process failed on {name}:\n{value}")
        return value

    def linear_operations(self) -> list[str]:
        """The GraphQL operation of every request the fake Linear received, in order."""
        return list(self.call("linear_operations"))

    def github_requests(self) -> int:
        return int(self.call("github_requests"))

    def add_runs(self, runs: list[tuple[str, str, str, int, datetime]]) -> list[int]:
        """In-progress workflow runs ``(repo, run name, branch, job id, started)``; their ids."""
        return list(self.call("add_runs", runs))

    def assert_clean(self) -> None:
        """Fail when any request or answer broke GitHub's or Linear's description."""
        found = self.call("violations")
        assert not found["github"], found["github"][:3]
        assert not found["linear"], found["linear"][:3]

    def stop(self) -> None:
        try:
            self._conn.send(("stop", ()))
        except OSError:
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
        self._conn.close()
