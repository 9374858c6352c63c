"""Long runs: expiring repository tokens, the wall-clock budget, and a stop from the runner."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .conftest import FULL_GITHUB, OWNER, REPO, World, script, wait_until


def _stop_once(world: World, job_id: int, marker: Path, **overrides: str) -> tuple[subprocess.Popen, str]:
    """Run the job's session (its environment with ``overrides``), send it SIGTERM as soon as
    ``marker`` exists, and wait for its end."""
    proc = world.start_session(job_id, **overrides)
    wait_until(marker.exists, f"{marker.name} written by the session", running=proc)
    return proc, _stop(world, proc)


def _stop(world: World, proc: subprocess.Popen, timeout: float = 60) -> str:
    """Send the running session SIGTERM and wait for its end; its output."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    world.outputs.append(out)
    return out


def _cloned(world: World) -> bool:
    """Whether the session's clone has fetched the repository (git's upload-pack answered)."""
    return any(r.method == "POST" and r.service == "git-upload-pack" and r.status == 200
               for r in world.git_server.requests)


def test_push_after_the_clone_token_expired_gets_a_fresh_token(world: World) -> None:
    """GitHub installation tokens live one hour; here eight seconds stand for it and an agent
    run of ten seconds for the seventy minutes: the push must still authenticate. (The push itself
    must end within the fresh token's life: four seconds were too few on a loaded machine.)"""
    world.github.token_ttl = timedelta(seconds=8)
    world.mapping(FAKE_AGENT_MODE="slow", FAKE_AGENT_SLEEP="10", AIIMPL_TOKEN_REFRESH_SECONDS="2")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed"
    served = [r for r in world.git_server.requests if r.status == 200]
    clone_token = next(r.password for r in served if r.service == "git-upload-pack")
    push = world.git_server.pushes()[-1]
    assert push.status == 200 and push.password != clone_token
    issued = {t.token: t for t in world.github.issued_tokens}
    # the clone's token had expired by the time of the push: the helper fetched a new one
    assert issued[clone_token].expires_at <= datetime.now(UTC)
    assert push.password in issued
    assert len(world.github.issued_tokens) >= 2
    world.assert_no_secret_anywhere(job_id)


def test_wall_clock_budget_stops_the_agent_and_pushes_the_work_so_far(world: World) -> None:
    world.mapping(FAKE_AGENT_MODE="hang")
    job_id = world.dispatch()

    started = time.monotonic()
    code, out = world.run_session(job_id, timeout=90, AIIMPL_LIFETIME_SECONDS="8")
    elapsed = time.monotonic() - started

    assert code == 1, out
    assert elapsed < 60  # the agent (which never ends by itself) was stopped, not left to the 90 s timeout
    job = world.job(job_id)
    # the run exceeded its time budget: timed out, with its runner's lifetime as the reason
    assert (job.status, job.timeout_reason, job.log_label) == ("timed_out",) + ("machine_timeout",) * 2
    sha = world.remote.branches()["ai/ENG-1"]
    assert job.error == (
        "the wall-clock budget of 8s ran out while the agent was running. "
        f"Work so far is on branch `ai/ENG-1` (commit {sha[:7]})."
    )
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    lines = world.first_lines()
    # the reason's own full stop is not doubled by the template's
    assert lines[2] == f"⚠️ Session timed out: {job.error[:-1]}. Machine will be cleaned up."
    assert lines[3].startswith("🧹 Session machine cleaned up. Duration: ")
    assert f"⚠️ Implementation failed: {job.error}" in world.comments()


def test_sigterm_stops_the_agent_cleanly_and_saves_the_work(world: World) -> None:
    marker = world.tmp / "agent-started"
    world.mapping(FAKE_AGENT_MODE="hang", FAKE_AGENT_STARTED=str(marker))
    job_id = world.dispatch()

    proc, out = _stop_once(world, job_id, marker)

    assert proc.returncode == 1, out
    job = world.job(job_id)
    assert job.status == "failed"
    sha = world.remote.branches()["ai/ENG-1"]
    assert job.error == (
        "The session was stopped by its runner (SIGTERM) while the agent was running. "
        f"Work so far is on branch `ai/ENG-1` (commit {sha[:7]})."
    )
    assert world.first_lines()[2] == f"⚠️ Session failed: {job.error[:-1]}. Machine will be cleaned up."
    world.assert_no_secret_anywhere(job_id)


def test_a_stopped_session_is_not_held_and_says_its_machine_was_cleaned_up(world: World) -> None:
    """The entrypoint never holds after a stop: a hybrid session stopped while its agent ran kept
    its work tree and left out `🧹 Session machine cleaned up` for a machine torn down at once."""
    marker = world.tmp / "agent-started"
    world.mapping(FAKE_AGENT_MODE="hang", FAKE_AGENT_STARTED=str(marker))
    job_id = world.dispatch()

    proc, out = _stop_once(world, job_id, marker, AIIMPL_SESSION_MODE="hybrid",
                           AIIMPL_SESSION_HOLDER="session-entrypoint")

    assert proc.returncode == 1, out
    assert "the work tree is kept for a person to attach" not in out
    assert [c for c in world.comments() if c.startswith("🧹 Session machine cleaned up. Duration: ")]


def test_sigterm_during_verification_skips_the_review(world: World) -> None:
    """Stopped while the verification script runs: the pull request is open, the job ends with it,
    and no second agent run (the review) starts on a machine that is going away."""
    marker = world.tmp / "verification-started"
    world.remote.commit({".ai-implement/verify.sh": script(f"touch {marker}; sleep 60")})
    world.mapping()
    job_id = world.dispatch()

    _, out = _stop_once(world, job_id, marker)

    job = world.job(job_id)
    assert job.pr_url, out
    assert [c for c in world.agent_calls() if "You are the post-push reviewer" in c["prompt"]] == []
    assert any("The post-push review was skipped" in c for c in world.comments())


def test_sigterm_during_the_commit_saves_the_work_on_the_reserve(world: World) -> None:
    """Stopped while ``git commit`` runs: the commit is stopped with the rest, and the work is then
    committed and pushed on the session's own reserve, as after a stop during the agent's run."""
    world.mapping()
    job_id = world.dispatch()
    path, marker = world.git_pausing_at(job_id, "commit")
    proc, out = _stop_once(world, job_id, marker, PATH=path)

    assert proc.returncode == 1, out
    job = world.job(job_id)
    sha = world.remote.branches()["ai/ENG-1"]
    assert (job.status, job.error) == (
        "failed", "The session was stopped by its runner (SIGTERM) during the commit. "
                  f"Work so far is on branch `ai/ENG-1` (commit {sha[:7]}).")
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    assert world.steps(job_id)["commit"].status == "failed"
    world.assert_no_secret_anywhere(job_id)


@pytest.mark.long
def test_saving_the_work_leaves_the_result_time_before_the_budgets_end(world: World) -> None:
    """A push that hangs while the work is saved at the budget's end is given up in time for the
    result to be reported before the runner stops the machine (it was given 90 s, whatever the
    budget)."""
    world.mapping(FAKE_AGENT_MODE="hang")
    job_id = world.dispatch()
    path, _ = world.git_pausing_at(job_id, "push", seconds=300)  # the push that saves the work

    started = time.monotonic()
    code, out = world.run_session(job_id, timeout=150, AIIMPL_LIFETIME_SECONDS="20", PATH=path)
    elapsed = time.monotonic() - started

    assert code == 1, out
    # 20 s of budget, at most 10 s more to save (it was up to 90 s: the push held 300 s); room left
    # for a loaded machine's slow start of the session and its git
    assert elapsed < 80, out
    job = world.job(job_id)
    assert job.status == "timed_out"
    assert "Saving the work so far failed" in job.error
    assert "ai/ENG-1" not in world.remote.branches()


@FULL_GITHUB
def test_sigterm_while_github_does_not_answer_the_pull_request_ends_the_run_as_stopped(world: World) -> None:
    """GitHub creates the pull request, and its answer is a minute away: a stop is not held up by it
    (it was, for the request's 30 s timeout, and then the run went on as if not stopped). The
    answer gets a few seconds; the work is pushed already, and the reason says where. The pull
    request GitHub opened all the same is looked for once and goes with the result (it was never
    linked, and the issue showed no pull request)."""
    world.mapping()
    job_id = world.dispatch()
    world.github.delay_next("POST", r"^/repos/acme/eng/pulls$", 60)
    proc = world.start_session(job_id)
    wait_until(lambda: world.github.pull_requests("acme", "eng"), "the pull request on GitHub", running=proc)
    stopped_at = time.monotonic()
    out = _stop(world, proc, timeout=90)

    assert proc.returncode == 1, out
    assert time.monotonic() - stopped_at < 20, out
    job = world.job(job_id)
    sha = world.remote.branches()["ai/ENG-1"]
    assert (job.status, job.error) == (
        "failed", "The session was stopped by its runner (SIGTERM) during the creation of the pull request. "
                  f"The work is on branch `ai/ENG-1` (commit {sha[:7]}). "
                  "Pull request #1 is open for it.")
    assert world.steps(job_id)["pull-request"].status == "failed"
    assert (job.pr_number, job.pr_url) == (1, "https://github.com/acme/eng/pull/1")
    assert "🔗 PR #1 (not ready for review): https://github.com/acme/eng/pull/1" in world.first_lines()


@FULL_GITHUB
def test_sigterm_while_github_does_not_answer_the_clones_pull_request_lookup_ends_the_run(
    world: World,
) -> None:
    """The remote has the branch, so the clone step asks GitHub for its closed pull requests, and
    GitHub's answer is a minute away: a stop ends the run at once (the lookup took its timeout three
    times over, and the run then went on to the agent)."""
    world.remote.commit({"earlier.txt": "an earlier attempt\n"}, branch="ai/ENG-1")
    world.mapping()
    job_id = world.dispatch()
    world.github.delay_next("GET", r"^/repos/acme/eng/pulls$", 60)
    proc = world.start_session(job_id)
    wait_until(lambda: _cloned(world), "the clone", running=proc)
    time.sleep(1)  # the lookup follows the clone at once
    stopped_at = time.monotonic()
    out = _stop(world, proc, timeout=150)

    assert proc.returncode == 1, out
    assert time.monotonic() - stopped_at < 20, out
    job = world.job(job_id)
    assert (job.status, job.error) == (
        "failed", "The session was stopped by its runner (SIGTERM) during the clone")
    assert world.agent_calls() == []


@FULL_GITHUB
def test_sigterm_while_nothing_runs_in_the_clone_step_ends_the_run_there(world: World) -> None:
    """The stop lands while the clone step waits 2 s for GitHub (its lookup of the branch's pull
    requests), which answers in time: the next git command of the step is not started, and the
    run ends there (it ran the agent, committed and pushed, the stop seen only by GitHub's call)."""
    world.remote.commit({"earlier.txt": "an earlier attempt\n"}, branch="ai/ENG-1")
    world.mapping()
    job_id = world.dispatch()
    world.github.delay_next("GET", r"^/repos/acme/eng/pulls$", 2)
    proc = world.start_session(job_id)
    wait_until(lambda: _cloned(world), "the clone", running=proc)
    time.sleep(0.5)  # the lookup follows the clone at once
    out = _stop(world, proc)

    assert proc.returncode == 1, out
    job = world.job(job_id)
    assert (job.status, job.error) == (
        "failed", "The session was stopped by its runner (SIGTERM) during the clone")
    assert world.agent_calls() == []



# -- a token GitHub revoked before its expiry ------------------------------------------------------


def test_a_token_github_revoked_is_replaced_though_the_orchestrator_still_has_it_cached(world: World) -> None:
    """GitHub revokes installation tokens before their hour is out (the App suspended or
    reinstalled, a token found pushed somewhere public). The orchestrator had handed the same
    cached token to every session of the repository for the rest of its hour: the clone's 401 made
    git drop it, and the new one asked for was that one again."""
    from aiimpl_core import github

    world.mapping()
    job_id = world.dispatch()
    with world.app.app_context():
        revoked, _ = github.repository_token(OWNER, REPO)  # cached by an earlier session's request
    world.github.tokens.clear()  # revoked

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed" and world.job(job_id).pr_number
    tried = [r for r in world.git_server.requests if r.password == revoked]
    assert tried and {r.status for r in tried} == {401}
    assert world.git_server.pushes()[-1].status == 200
    assert len(world.github.issued_tokens) == 2  # one new token, not one per git command
    world.assert_no_secret_anywhere(job_id)


@pytest.mark.parametrize("refusals", [1, 2])
def test_a_pull_request_refused_for_its_token_is_opened_with_a_fresh_one(world: World, refusals: int) -> None:
    """GitHub answered the pull request 401 Bad credentials (the token revoked after the push):
    the run failed with the work pushed and no pull request. Each orchestrator process has a
    token of its own cached, all revoked at once: a fresh one may be refused too (twice here)."""
    world.mapping()
    job_id = world.dispatch()
    world.github.fail_next("POST", "/pulls$", 401, "Bad credentials", times=refusals)

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed" and world.job(job_id).pr_number
    opened = [r for r in world.github.requests if r.method == "POST" and r.path.endswith("/pulls")]
    assert [r.status for r in opened] == [401] * refusals + [201]
    tokens = [r.header("Authorization") for r in opened]
    assert len(set(tokens)) == len(tokens)  # the orchestrator minted another instead of its cached one
    assert len(world.github.issued_tokens) == 1 + refusals
    world.assert_no_secret_anywhere(job_id)


def test_a_pull_request_github_keeps_refusing_fails_after_a_few_tokens(world: World) -> None:
    world.mapping()
    job_id = world.dispatch()
    world.github.fail_next("POST", "/pulls$", 401, "Bad credentials", times=10)

    code, out = world.run_session(job_id)

    assert world.job(job_id).status == "failed", out
    opened = [r for r in world.github.requests if r.method == "POST" and r.path.endswith("/pulls")]
    assert [r.status for r in opened] == [401] * 4
    assert "PR creation failed with HTTP 401" in (world.job(job_id).error or "")
