"""Edge cases an operator meets: a reviewer whose blockers quote code, an issue with a long
title, GitHub failing the pull request it created, a stop while the branch is being pushed, and an
agent that commits by itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aiimpl_core.session import prompts

from .conftest import FULL_GITHUB, World, git, script
from .test_session_failures import open_pull_request_by_hand
from .test_session_lifetime import _stop_once


def test_review_blockers_quoting_code_with_braces_are_a_verdict() -> None:
    """Reviewers quote code: a blocker holding ``{}`` or ``${VAR}`` is still a blocker, not an
    answer without a verdict (which would let the job end ``completed``)."""
    assert prompts.parse_review('{"approved": false, "blockers": ["`parse()` returns {} on error"]}') == (
        False, ["`parse()` returns {} on error"]
    )
    fenced = '```json\n{\n  "approved": false,\n  "blockers": ["uses ${TOKEN} unquoted"]\n}\n```'
    assert prompts.parse_review(fenced) == (False, ["uses ${TOKEN} unquoted"])
    nested = 'Checked {"a": 1}.\n{"approved": true, "blockers": [], "notes": {"style": "ok"}}'
    assert prompts.parse_review(nested) == (True, [])


def test_a_long_issue_title_still_opens_the_pull_request(world: World) -> None:
    """GitHub refuses a pull request title over 256 characters (422 "title is too long"); a Jira
    summary may be 255 characters before the issue key is put in front of it."""
    world.mapping()
    title = "Make the importer " + "really " * 33 + "robust"
    assert len(title) > 240
    job_id = world.dispatch(title=title)

    code, out = world.run_session(job_id)

    assert code == 0, out
    [pr] = world.github.pull_requests("acme", "eng")
    assert len(pr.title) <= 256
    assert pr.title.startswith("ENG-1: Make the importer really") and pr.title.endswith("…")


def test_a_secret_in_the_issue_title_is_masked_in_the_commit_message_as_in_the_pull_request(
    world: World,
) -> None:
    """The commit message is built from the issue's title and URL, like the pull request's title,
    and is pushed to the repository: a secret of the session there is masked in both (it was
    pushed as it is in the commit message). The secret is the session's own here (a variable
    whose name says it is one), so the orchestrator, which stores the title, knows nothing of it."""
    value = "legacy-0123456789abcdef"
    world.mapping()
    job_id = world.dispatch(title=f"Rotate the key {value}")

    code, out = world.run_session(job_id, LEGACY_API_TOKEN=value)

    assert code == 0, out
    message = git("log", "-1", "--format=%B", "ai/ENG-1", cwd=world.remote.bare)
    assert message.startswith("ENG-1: Rotate the key [REDACTED]\n"), message
    [pr] = world.github.pull_requests("acme", "eng")
    assert pr.title == "ENG-1: Rotate the key [REDACTED]"


def test_a_secret_the_cut_of_a_long_description_goes_through_is_masked_in_the_pull_request(
    world: World,
) -> None:
    """The pull request quotes the issue's description, cut at 4,000 characters: cut first, a secret
    across the cut lost its end, and the piece left was no longer masked (39 of its 40 characters
    went to GitHub). So was a secret a line break of the description splits, each line quoted."""
    value = "legacy-0123456789abcdef0123456789abcdef"
    world.mapping()
    description = f"Rotate {value[:20]}\n{value[20:]} too.\n" + "a" * (4000 - 40 - len(value) // 2) + value
    job_id = world.dispatch(description=description)

    code, out = world.run_session(job_id, LEGACY_API_TOKEN=value)

    assert code == 0, out
    [pr] = world.github.pull_requests("acme", "eng")
    body = pr.body or ""
    assert "Resolves" in body and "aaaa" in body and body.count("[REDACTED]") == 2, body[:300]
    assert value[:12] not in body and value[-12:] not in body, body


@pytest.mark.parametrize("cost", ["NaN", "1e999"])
def test_a_cost_json_cannot_write_loses_no_report(world: World, cost: str) -> None:
    """An agent's answer may hold a number JSON reads and cannot write (``NaN``, ``1e999``, read as
    an infinity): the bodies that carried it could not be sent, taken as the orchestrator being
    unreachable, and the result was given up on after the PR was open (the job stayed running)."""
    world.mapping(FAKE_AGENT_COST=cost)
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed", (job.status, job.error, out)
    assert job.cost_usd == pytest.approx(0.05)  # the review's; the agent's said nothing
    assert "unreachable" not in out and "InvalidJSONError" not in out, out
    assert world.steps(job_id)["agent"].status == "succeeded"


def test_sigterm_during_the_push_saves_the_work_on_the_reserve(world: World) -> None:
    """Stopped while ``git push`` runs: the commit exists, and the push is done again on the
    session's reserve, as after a stop during the commit; the work is not lost."""
    world.mapping()
    job_id = world.dispatch()
    path, marker = world.git_pausing_at(job_id, "push")
    proc, out = _stop_once(world, job_id, marker, PATH=path)

    assert proc.returncode == 1, out
    job = world.job(job_id)
    sha = world.remote.branches().get("ai/ENG-1")
    assert sha, job.error
    assert (job.status, job.error) == (
        "failed", "The session was stopped by its runner (SIGTERM) during the push. "
                  f"Work so far is on branch `ai/ENG-1` (commit {sha[:7]}).")
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    world.assert_no_secret_anywhere(job_id)


def test_git_repositories_the_agent_left_in_the_work_tree_are_left_out_and_said(world: World) -> None:
    """A `git init` without a commit failed the commit step ('git add failed (exit 128): error:
    'vendor/lib/' does not have a commit checked out'), the agent's work lost; a clone became a
    pointer to a commit no remote has, its files in no pull request and never checked for secrets."""
    agent = world.tmp / "nesting-agent.sh"
    agent.write_text(script(f"""
        echo "hello from the agent" > greeting.txt
        mkdir -p vendor/lib && git -C vendor/lib init -q && echo y > vendor/lib/y.txt
        git clone -q {world.remote.bare} "ref upstream"
        echo "Done."
    """))
    world.mapping(AIIMPL_AGENT_COMMAND=f"bash {agent} {{prompt_file}}", AIIMPL_REVIEW="false")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed", world.job(job_id).error
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    tree = git("ls-tree", "-r", "ai/ENG-1", cwd=world.remote.bare)
    assert "160000" not in tree and "vendor" not in tree and "upstream" not in tree
    said = ("⚠️ Not committed: `ref upstream`, `vendor/lib`: git repositories of their own inside the "
            "work tree (cloned or created during the run), whose files git would not add (add them as "
            "files, or as submodules).")
    assert said in world.comments()
    assert world.steps(job_id)["commit"].detail["leftOut"] == ["ref upstream", "vendor/lib"]


def test_a_secret_the_agent_committed_itself_is_never_pushed(world: World) -> None:
    """Agents that commit on their own (aider does by default; Claude Code with wider
    permissions may): their commits are checked for secrets like the session's own."""
    agent = world.tmp / "committing-agent.sh"
    agent.write_text(script("""
        echo "hello from the agent" > greeting.txt
        echo "ANTHROPIC_API_KEY=$ANTHROPIC_API_KEY" > .env
        git add -A
        git -c user.name=agent -c user.email=agent@example.test commit -q -m "the agent's own commit"
        echo "Done."
    """))
    world.mapping(AIIMPL_AGENT_COMMAND=f"bash {agent} {{prompt_file}}", AIIMPL_REVIEW="false")
    job_id = world.dispatch()
    before = world.remote.branches()

    code, out = world.run_session(job_id)

    assert code == 1, out
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error.startswith("The changes hold the value of a secret of the session (in .env): nothing "
                                "was committed or pushed")
    assert world.remote.branches() == before
    assert world.github.pull_requests("acme", "eng") == []
    world.assert_no_secret_anywhere(job_id)


@FULL_GITHUB
def test_a_pull_request_github_created_before_failing_its_answer_is_used(world: World) -> None:
    """GitHub may answer 502 to a pull request it has created all the same: the session looks the
    branch's open pull request up, as after a 422, instead of failing a job whose PR is open."""
    world.mapping()
    number = open_pull_request_by_hand(world)  # what GitHub created before its 502
    world.github.fail_next("POST", r"/repos/acme/eng/pulls$", 502, "Server Error")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert (job.status, job.pr_number) == ("completed", number), job.error
    assert world.steps(job_id)["pull-request"].detail["reused"] is True


@FULL_GITHUB
def test_a_pull_request_created_behind_an_answer_that_is_not_json_is_used(world: World) -> None:
    """A proxy in front of GitHub may pass the creation on and answer an HTML page: the pull
    request is looked up, not the job failed with the page's JSON error."""
    world.mapping()
    world.github.garble_next("POST", r"/repos/acme/eng/pulls$")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    [pr] = world.github.pull_requests("acme", "eng")
    job = world.job(job_id)
    assert (job.status, job.pr_number) == ("completed", pr.number), job.error
    assert world.steps(job_id)["pull-request"].detail["reused"] is True
    assert world.github.undocumented == ["POST /repos/acme/eng/pulls -> 201: an HTML page"]


@FULL_GITHUB
def test_a_pull_request_github_failed_to_create_keeps_its_answer(world: World) -> None:
    world.mapping()
    world.github.fail_next("POST", r"/repos/acme/eng/pulls$", 502, "Server Error")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 1, out
    assert world.job(job_id).error == "PR creation failed with HTTP 502: Server Error"
    assert world.github.pull_requests("acme", "eng") == []


def test_sigterm_right_after_the_commit_saves_the_work(world: World) -> None:
    """The stop lands between the commit and the git command after it (here: while the next one
    runs): it is a stop, with the work saved, not an unexpected failure of the session."""
    world.mapping()
    job_id = world.dispatch()
    path, marker = world.git_pausing_at(job_id, "rev-list")  # counting the commits, after the commit

    proc, out = _stop_once(world, job_id, marker, PATH=path)

    assert proc.returncode == 1, out
    job = world.job(job_id)
    sha = world.remote.branches().get("ai/ENG-1")
    assert sha, job.error
    assert (job.status, job.error) == (
        "failed", "The session was stopped by its runner (SIGTERM) during the commit. "
                  f"Work so far is on branch `ai/ENG-1` (commit {sha[:7]}).")
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    assert "Traceback" not in out


def test_sigterm_right_after_the_clone_is_a_stop(world: World) -> None:
    world.mapping()
    job_id = world.dispatch()
    path, marker = world.git_pausing_at(job_id, "checkout")  # the branch made after the clone

    proc, out = _stop_once(world, job_id, marker, PATH=path)

    assert proc.returncode == 1, out
    job = world.job(job_id)
    assert (job.status, job.error) == ("failed", "The session was stopped by its runner (SIGTERM) during "
                                                 "the clone")
    assert world.steps(job_id)["clone"].status == "failed"
    assert world.agent_calls() == []


def test_sigterm_before_the_reviews_diff_skips_the_review(world: World) -> None:
    """Stopped as git reads the diff for the reviewer: the pull request is open and the job ends
    with it, the review skipped as after a stop during verification."""
    world.mapping()
    job_id = world.dispatch()
    path, marker = world.git_pausing_at(job_id, "--stat")  # the review's diff

    proc, out = _stop_once(world, job_id, marker, PATH=path)

    assert proc.returncode == 0, out
    job = world.job(job_id)
    assert (job.status, job.pr_number) == ("completed", 1), job.error
    assert world.steps(job_id)["review"].status == "skipped"
    assert [c for c in world.agent_calls() if "You are the post-push reviewer" in c["prompt"]] == []
    assert any("The post-push review was skipped" in c for c in world.comments())


def test_a_stopped_git_command_is_never_read_as_an_answer(tmp_path: Path) -> None:
    """``rev-parse --verify`` fails when the branch does not exist: stopped, it proves nothing (an
    earlier attempt's work would be taken for absent), so it raises like any stopped command."""
    import threading

    import pytest

    from aiimpl_core.session.git import Git, GitError

    (tmp_path / "git").write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 30\n")
    (tmp_path / "git").chmod(0o755)
    stop = threading.Event()
    stop.set()
    git = Git(str(tmp_path), {"PATH": str(tmp_path)}, stop=stop)
    with pytest.raises(GitError, match=r"stopped \(signal\)"):
        git.remote_branch_exists("ai/ENG-1")
