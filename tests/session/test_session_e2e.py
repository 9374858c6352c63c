"""End to end: the session program against the real orchestrator, a git remote and fake GitHub."""

from __future__ import annotations

import pytest

from aiimpl_core.testing.pytest_plugin import database_url  # noqa: F401 - on both databases (see conftest)

from .conftest import World, script

PROGRESS_SUCCESS = [
    "🚀 Session machine created. Cloning repo and running setup…",
    "✅ Environment ready. Claude is implementing…",
    "📝 Claude finished. PR #1 opened: https://github.com/acme/eng/pull/1",
    "🧪 Running verification script…",
    "✅ Verification passed",
]


def test_success_opens_a_pr_with_the_progress_comments_in_order(world: World) -> None:
    world.remote.commit(
        {
            ".ai-implement/setup.sh": script("echo setting up; touch .setup-ran"),
            ".ai-implement/verify.sh": script("""
            test -f greeting.txt && echo all good
            cp .git/config "$CONFIG_SNAPSHOT"  # after the push: what git kept of its credentials
        """),
        }
    )
    snapshot = world.tmp / "git-config-after-push"
    world.mapping(CONFIG_SNAPSHOT=str(snapshot))
    job_id = world.dispatch("ENG-1", title="Greet the user", description="Add a greeting file.")

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed", (job.status, job.error, out)
    # the branch holds the agent's work, on top of the base branch
    branches = world.remote.branches()
    assert "ai/ENG-1" in branches
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    # the PR on GitHub: title and body from the issue, linking back to it
    [pr] = world.github.pull_requests("acme", "eng")
    assert (pr.head, pr.base) == ("ai/ENG-1", "main")
    assert pr.title == "ENG-1: Greet the user"
    assert "https://tracker.test/ENG-1" in (pr.body or "")
    assert job.pr_url == "https://github.com/acme/eng/pull/1" and job.pr_number == 1
    # the ticket: the reference's progress comments in order, then the outcome
    lines = world.first_lines()
    assert lines[:5] == PROGRESS_SUCCESS
    assert lines[5].startswith("🧹 Session machine cleaned up. Duration: ")
    assert "🔗 PR #1 is ready for review: https://github.com/acme/eng/pull/1" in lines
    assert any(line.startswith("🤖 Agent usage: 9 turns · $0.30") for line in lines), lines
    # cost and turns of both passes (agent 7 turns $0.25, review 2 turns $0.05) reach the job
    assert job.turns == 9 and job.cost_usd == pytest.approx(0.30)
    assert job.duration_seconds and job.duration_seconds > 0
    # every step was reported, in order, and succeeded
    steps = world.steps(job_id)
    for step_id in (
        "token",
        "context",
        "clone",
        "setup",
        "agent",
        "commit",
        "push",
        "pull-request",
        "verify",
        "review",
    ):
        assert steps[step_id].status == "succeeded", (step_id, steps[step_id].detail)
    assert steps["setup"].detail["source"] == "repository"
    # the agent got the issue in its prompt, its turn limit, and none of the job's credentials
    [call, review] = world.agent_calls()
    assert "Greet the user" in call["prompt"] and "Add a greeting file." in call["prompt"]
    assert call["max_turns"] == 50 and review["max_turns"] == 10
    assert call["options"] == [
        "-p",
        "--output-format",
        "json",
        "--max-turns",
        "50",
        "--permission-mode",
        "acceptEdits",
    ]
    assert "greeting.txt" in review["prompt"]  # the reviewer reads the diff
    for hidden in ("AIIMPL_NONCE", "AIIMPL_RESULT_TOKEN", "AIIMPL_PROGRESS_TOKEN", "AIIMPL_CONTEXT_TOKEN"):
        assert hidden not in call["env_names"]
    assert "ANTHROPIC_API_KEY" in call["env_names"]
    # git credentials never landed in the clone's or the remote's configuration
    config = snapshot.read_text()
    assert '[remote "origin"]' in config and world.git_server.url in config
    assert "x-access-token" not in config and "helper" not in config
    for token in world.github.issued_tokens:
        assert token.token not in config
    # the remote saw the clone and the push authenticated with installation tokens
    assert world.git_server.pushes() and all(r.status == 200 for r in world.git_server.pushes())
    world.assert_no_secret_anywhere(job_id)


def test_the_main_cli_runs_the_same_session(world: World) -> None:
    """Runner images call ``aiimpl session run`` (the GitHub Actions templates do)."""
    import os
    import shutil
    import sys

    # the script beside this interpreter (the environment the suite runs in), else on PATH
    aiimpl = shutil.which("aiimpl", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                          os.environ.get("PATH", "")]))
    assert aiimpl, "the aiimpl console script is installed with the core"
    world.mapping(AIIMPL_REVIEW="false")
    job_id = world.dispatch()

    code, out = world.run_session(job_id, command=(aiimpl, "session", "run"))

    assert code == 0, out
    assert world.job(job_id).status == "completed"
    assert world.steps(job_id)["review"].status == "skipped"
    assert len(world.agent_calls()) == 1  # no review pass


def test_a_tracker_outage_does_not_stop_the_session(world: World) -> None:
    """``/api/status`` answers 500 while the tracker is down; the run goes on and its result lands."""
    from aiimpl_core.testing.fakes import fail_with

    world.mapping()
    job_id = world.dispatch()
    world.tracker.fail["post_comment"] = fail_with(503, "tracker unavailable")

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed" and job.pr_number == 1
    assert "status event session_created was not accepted" in out
    assert world.comments() == []  # nothing could be posted; the orchestrator keeps them queued
