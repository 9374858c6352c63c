"""Each failure class of the reference's "Run failure messages", produced for real."""

from __future__ import annotations

import os
import re

import pytest
import requests

from aiimpl_core.services.comments import as_text

from .conftest import FULL_GITHUB, World, git, script

FAILED = "⚠️ Session failed: "


def failure_comment(world: World) -> str:
    [comment] = [c for c in world.comments() if c.startswith("⚠️ Implementation failed: ")]
    return comment


def test_turn_limit_fails_with_the_reference_message_and_keeps_the_work(world: World) -> None:
    world.mapping(FAKE_AGENT_MODE="max_turns")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 1, out
    job = world.job(job_id)
    assert job.status == "failed"
    sha = world.remote.branches()["ai/ENG-1"]
    assert job.error == (
        "LLM invocation failed with exit code 1: Reached max turns (50). "
        f"Work so far is on branch `ai/ENG-1` (commit {sha[:7]})."
    )
    assert failure_comment(world) == f"⚠️ Implementation failed: {as_text(job.error)}"
    # the work so far was committed and pushed; no PR was opened
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    assert world.github.pull_requests("acme", "eng") == []
    lines = world.first_lines()
    assert lines[:2] == [
        "🚀 Session machine created. Cloning repo and running setup…",
        "✅ Environment ready. Claude is implementing…",
    ]
    assert lines[2].startswith(FAILED + "LLM invocation failed with exit code 1: Reached max turns (50)")
    assert lines[2].endswith(". Machine will be cleaned up.")
    assert lines[3].startswith("🧹 Session machine cleaned up. Duration: ")
    # the agent's cost and turns still travel
    assert job.turns == 50 and job.cost_usd == 1.5
    assert world.steps(job_id)["agent"].status == "failed"
    world.assert_no_secret_anywhere(job_id)


def test_agent_error_fails_with_exit_code_and_message(world: World) -> None:
    world.mapping(FAKE_AGENT_MODE="error")
    job_id = world.dispatch()

    code, _ = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed" and job.log_label == "session_failed"
    assert job.error.startswith("LLM invocation failed with exit code 1: API Error: 500 ")
    assert "Overloaded" in job.error
    assert failure_comment(world) == f"⚠️ Implementation failed: {as_text(job.error)}"
    assert "ai/ENG-1" not in world.remote.branches()  # nothing to save


def test_no_changes_fails_with_nothing_to_commit(world: World) -> None:
    world.mapping(FAKE_AGENT_MODE="noop")
    job_id = world.dispatch()

    code, _ = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error == "Nothing to commit: Claude left no file changes in the working tree"
    assert job.log_label == "pr_not_found"
    assert failure_comment(world) == (
        "⚠️ Implementation failed: Nothing to commit: Claude left no file changes in the working tree"
    )
    assert any(c.startswith("Log excerpt (`pr_not_found`)") for c in world.comments())
    assert "ai/ENG-1" not in world.remote.branches()


@FULL_GITHUB
def test_refused_pull_request_fails_with_githubs_status_and_message(world: World) -> None:
    # the base branch exists in git but GitHub refuses it: 422, and no pull request of the branch
    # is open to continue with
    world.remote.commit({"CHANGELOG.md": "develop\n"}, "start develop", branch="develop")
    world.mapping(default_branch="develop")
    job_id = world.dispatch()

    code, _ = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error == "PR creation failed with HTTP 422: Validation Failed (PullRequest base invalid)"
    assert failure_comment(world) == f"⚠️ Implementation failed: {as_text(job.error)}"
    assert world.remote.show("ai/ENG-1", "greeting.txt")  # the push itself went through
    assert world.steps(job_id)["pull-request"].status == "failed"
    assert world.github.pull_requests("acme", "eng") == []
    [lookup] = world.github.server.requests_to("GET", "/repos/acme/eng/pulls")
    assert lookup.query == {
        "head": ["acme:ai/ENG-1"], "base": ["develop"], "state": ["open"], "per_page": ["100"]
    }


def open_pull_request_by_hand(world: World, head: str = "ai/ENG-1", base: str = "main") -> int:
    """A pull request opened on GitHub before the session (by an earlier run, or a person)."""
    world.github.add_branch("acme", "eng", head)
    resp = requests.post(
        f"{world.github.url}/repos/acme/eng/pulls",
        timeout=10,
        headers={"Authorization": f"Bearer {world.github.personal_token}"},
        json={"title": "earlier attempt", "head": head, "base": base},
    )
    assert resp.status_code == 201
    return int(resp.json()["number"])


@FULL_GITHUB
def test_the_pull_request_already_open_for_the_branch_is_continued_with(world: World) -> None:
    world.mapping()
    number = open_pull_request_by_hand(world)
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    url = f"https://github.com/acme/eng/pull/{number}"
    # reported exactly as a pull request the session opened
    assert job.status == "completed", (job.status, job.error)
    assert (job.pr_number, job.pr_url) == (number, url)
    assert f"📝 Claude finished. PR #{number} opened: {url}" in world.first_lines()
    assert f"🔗 PR #{number} is ready for review: {url}" in world.first_lines()
    step = world.steps(job_id)["pull-request"]
    assert step.status == "succeeded"
    assert step.detail["prNumber"] == number and step.detail["reused"] is True
    assert world.steps(job_id)["review"].status == "succeeded"  # the lifecycle went on
    [pr] = world.github.pull_requests("acme", "eng")
    assert pr.title == "earlier attempt"  # left as it was; the push updated it
    [create] = world.github.server.requests_to("POST", "/repos/acme/eng/pulls")[1:]
    assert create.status == 422
    [lookup] = world.github.server.requests_to("GET", "/repos/acme/eng/pulls")
    assert lookup.query["head"] == ["acme:ai/ENG-1"] and lookup.query["state"] == ["open"]


def test_a_closed_pull_request_of_the_branch_is_not_reused(world: World) -> None:
    world.mapping()
    number = open_pull_request_by_hand(world)
    [earlier] = world.github.pull_requests("acme", "eng")
    earlier.state = "closed"  # closed (or merged) since
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed"
    assert job.pr_number == number + 1
    assert f"📝 Claude finished. PR #{number + 1} opened: {job.pr_url}" in world.first_lines()
    assert [p.state for p in world.github.pull_requests("acme", "eng")] == ["closed", "open"]
    assert "reused" not in world.steps(job_id)["pull-request"].detail
    # GitHub accepted the new one at once: nothing was looked up (the fast subset has no listing)
    assert world.github.server.requests_to("GET", "/repos/acme/eng/pulls") == []


@FULL_GITHUB
def test_the_pull_request_lookup_failing_keeps_githubs_refusal(world: World) -> None:
    world.mapping()
    open_pull_request_by_hand(world)
    world.github.fail_next("GET", r"/repos/acme/eng/pulls$", 503, "Service Unavailable", times=3)
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error == (
        "PR creation failed with HTTP 422: Validation Failed "
        "(A pull request already exists for acme:ai/ENG-1.)"
    )
    assert "looking up the open pull request of ai/ENG-1 failed" in out
    assert world.steps(job_id)["pull-request"].status == "failed"


def test_clone_failure_fails_with_gits_exit_code(world: World) -> None:
    world.mapping(default_branch="no-such-branch")
    job_id = world.dispatch()

    code, _ = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed"
    assert re.match(r"git clone failed \(exit 128\): .*no-such-branch", job.error, re.DOTALL), job.error
    assert failure_comment(world) == f"⚠️ Implementation failed: {as_text(job.error)}"
    assert world.agent_calls() == []  # the agent never ran
    assert world.first_lines()[1].startswith(FAILED + "git clone failed (exit 128)")


def test_setup_failure_names_the_step_and_its_output(world: World) -> None:
    world.remote.commit(
        {".ai-implement/setup.sh": script("echo 'npm ERR! missing script: build' >&2; exit 7")}
    )
    world.mapping()
    job_id = world.dispatch()

    code, _ = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error == "Setup failed (exit 7): npm ERR! missing script: build"
    assert world.agent_calls() == []


def test_mapping_setup_command_runs_when_the_repository_has_none(world: World) -> None:
    marker = world.tmp / "mapping-setup-ran"
    world.mapping(AIIMPL_SETUP_COMMAND=f"echo ran > {marker}")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert marker.read_text() == "ran\n"
    assert world.steps(job_id)["setup"].detail["source"] == "mapping"


def test_leaked_secrets_are_redacted_everywhere(world: World) -> None:
    world.mapping(FAKE_AGENT_MODE="leak")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error.startswith("LLM invocation failed with exit code 3: ")
    assert "[REDACTED]" in job.error and "[REDACTED]" in (job.log_excerpt or "")
    names = world.env_of(job_id)["AIIMPL_SECRET_NAMES"].split(",")
    assert "ANTHROPIC_API_KEY" in names and "DEPLOY_KEY" in names
    assert "deploy: https://example.test/?d=[REDACTED] raw=[REDACTED]" in (job.log_excerpt or "")
    world.assert_no_secret_anywhere(job_id)


def test_review_blockers_end_the_job_review_failed(world: World) -> None:
    world.mapping(FAKE_REVIEW="block")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "review_failed"
    assert job.log_label == "post_push_review_not_approved"
    assert job.pr_url == "https://github.com/acme/eng/pull/1"
    assert "The new greeting has no test" in job.log_excerpt
    comments = world.comments()
    assert "⚠️ Implementation failed: the post-push review flagged 2 blockers" in comments
    assert any(
        c.startswith("Log excerpt (`post_push_review_not_approved`)") and "README still describes" in c
        for c in comments
    )


def test_review_without_a_verdict_does_not_block(world: World) -> None:
    world.mapping(FAKE_REVIEW="mumble")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed"
    assert any(c.startswith("⚠️ The post-push review could not decide") for c in world.comments())


@pytest.mark.parametrize("mode", ["verify_rewrite", "verify_delete"])
def test_verification_runs_the_script_as_cloned_not_as_the_agent_left_it(world: World, mode: str) -> None:
    """An agent that rewrites ``.ai-implement/verify.sh`` to ``exit 0`` does not make verification
    pass, and one that deletes it does not skip it: the script runs as the session cloned it. The
    agent's change to it is pushed as any other, for the review and the people to see."""
    world.remote.commit({".ai-implement/verify.sh": script("echo '2 tests failed: test_greeting'; exit 1")})
    world.mapping(FAKE_AGENT_MODE=mode)
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    [failed] = [c for c in world.comments() if c.startswith("❌ Verification failed: ")]
    assert "2 tests failed: test_greeting" in failed
    step = world.steps(job_id)["verify"]
    assert (step.status, step.detail["exitCode"]) == ("succeeded", 1)
    pushed = git("ls-tree", "-r", "--name-only", "ai/ENG-1", cwd=world.remote.bare).split()
    if mode == "verify_rewrite":
        assert world.remote.show("ai/ENG-1", ".ai-implement/verify.sh") == "exit 0\n"
    else:
        assert ".ai-implement/verify.sh" not in pushed


def test_a_verification_script_that_is_a_link_runs_as_cloned_and_the_tree_is_left_as_committed(
    world: World
) -> None:
    """``verify.sh`` a link to the project's own check (written out as the link's target text, it
    ran as a command and always failed with exit 127); after verification the work tree holds the
    agent's committed version again, for the reviewer and for a person attaching."""
    (world.remote.seed_dir / "ci").mkdir(exist_ok=True)
    (world.remote.seed_dir / ".ai-implement").mkdir(exist_ok=True)
    (world.remote.seed_dir / ".ai-implement" / "verify.sh").symlink_to("../ci/check.sh")
    world.remote.commit({"ci/check.sh": script("echo 'all 12 checks passed'")})
    world.mapping(FAKE_AGENT_MODE="verify_rewrite")
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_SESSION_MODE="interactive",
                                  AIIMPL_SESSION_HOLDER="session-entrypoint")

    assert code == 0, out
    assert "✅ Verification passed" in world.first_lines(), world.comments()
    tree = re.search(r"the work tree is kept for a person to attach: (\S+)", out).group(1)
    assert open(os.path.join(tree, ".ai-implement", "verify.sh")).read() == "exit 0\n"  # the agent's
    assert git("status", "--porcelain", cwd=tree).strip() == ""


def test_a_verification_script_git_cannot_put_in_place_fails_verification_not_skips_it(world: World) -> None:
    """An agent that leaves ``.ai-implement`` so that git cannot write the cloned script there (a
    folder without write access) made verification read as "no script" and skipped it."""
    import shutil as _shutil

    world.remote.commit({".ai-implement/verify.sh": script("exit 1")})
    world.mapping()
    job_id = world.dispatch()
    real_git = _shutil.which("git")
    wrapped = world.tmp / "git-refusing-the-script"
    wrapped.mkdir()
    (wrapped / "git").write_text(  # as git says it when the folder cannot be written
        "#!/bin/sh\n"
        'case "$*" in *"checkout "*" -- .ai-implement/verify.sh"*) '
        "echo \"error: unable to create file .ai-implement/verify.sh: Permission denied\" >&2; "
        "exit 255;; esac\n"
        f'exec {real_git} "$@"\n')
    (wrapped / "git").chmod(0o755)

    code, out = world.run_session(job_id, PATH=f"{wrapped}{os.pathsep}{world.session_env(job_id)['PATH']}")

    assert code == 0, out
    [failed] = [c for c in world.comments() if c.startswith("❌ Verification failed: exit 1")]
    assert "the cloned .ai-implement/verify.sh could not be put in place" in failed
    assert "Permission denied" in failed


def test_an_unapproved_review_without_a_blocker_is_no_verdict(world: World) -> None:
    """``{"approved": false, "blockers": []}`` (or blank blockers) names nothing to fix: the job
    ends with its pull request and a note, as after an answer without a verdict (it ended
    ``review_failed`` with "the post-push review flagged 0 blockers")."""
    world.mapping(FAKE_REVIEW="unapproved")
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert (job.status, job.error) == ("completed", None)
    assert ("⚠️ The post-push review could not decide (it did not approve the change but named no "
            "blocker); please review the pull request yourself.") in world.comments()
    assert world.steps(job_id)["review"].detail["verdict"] is None


def test_failed_verification_is_reported_with_its_output(world: World) -> None:
    world.remote.commit({".ai-implement/verify.sh": script("echo '2 tests failed: test_greeting'; exit 1")})
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed"  # the PR is open; the reviewer saw the failure
    [failed] = [c for c in world.comments() if c.startswith("❌ Verification failed: ")]
    assert "2 tests failed: test_greeting" in failed
    lines = world.first_lines()
    assert lines.index("🧪 Running verification script…") < lines.index(failed.split("\n", 1)[0])
    review_prompt = world.agent_calls()[1]["prompt"]
    assert "2 tests failed: test_greeting" in review_prompt


def test_refused_push_fails_with_gits_message(world: World) -> None:
    hook = world.remote.bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\necho 'GH006: Protected branch update failed for refs/heads/ai/ENG-1.' >&2\nexit 1\n"
    )
    hook.chmod(0o755)
    world.mapping()
    job_id = world.dispatch()

    code, _ = world.run_session(job_id)

    assert code == 1
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error.startswith("git push failed (exit 1): ")
    assert "GH006: Protected branch update failed" in job.error and "pre-receive hook declined" in job.error
    assert failure_comment(world) == f"⚠️ Implementation failed: {as_text(job.error)}"
    assert world.github.pull_requests("acme", "eng") == []


@FULL_GITHUB
def test_a_rerun_continues_from_the_work_an_earlier_attempt_saved(world: World) -> None:
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    world.mapping(FAKE_AGENT_MODE="max_turns")
    first = world.dispatch()
    assert world.run_session(first)[0] == 1
    saved = world.remote.branches()["ai/ENG-1"]

    row = db.session.scalar(db.select(Mapping))
    row.extra_env = {**row.extra_env, "FAKE_AGENT_MODE": "edit"}
    db.session.commit()
    second = world.dispatch()  # the trigger applied again
    code, out = world.run_session(second)

    assert code == 0, out
    assert world.job(second).status == "completed"
    # both attempts' work is on the branch: the second built on the first, nothing was forced over it
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n" * 2
    log = world.remote.branches()["ai/ENG-1"]
    assert saved != log
    from .conftest import git

    assert git("merge-base", "--is-ancestor", saved, log, cwd=world.remote.bare) == ""
    assert world.steps(second)["clone"].detail["resumedFrom"] == "ai/ENG-1"


@FULL_GITHUB
def test_a_rerun_after_review_failed_continues_with_the_open_pull_request(world: World) -> None:
    """The documented way out of "Implementation failed": apply the trigger again. The first run's
    pull request is still open; the re-run pushes to its branch and carries on with it."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    world.mapping(FAKE_REVIEW="block")
    first = world.dispatch()
    assert world.run_session(first)[0] == 0
    assert world.job(first).status == "review_failed"
    assert world.tracker.stage_labels("ENG-1") == set()  # "Implementation failed": AI labels removed
    after_first = world.remote.branches()["ai/ENG-1"]

    row = db.session.scalar(db.select(Mapping))
    row.extra_env = {**row.extra_env, "FAKE_REVIEW": "approve"}
    db.session.commit()
    second = world.dispatch()  # the trigger applied again
    code, out = world.run_session(second)

    assert code == 0, out
    job = world.job(second)
    url = "https://github.com/acme/eng/pull/1"
    assert job.status == "completed", (job.status, job.error)
    assert (job.pr_number, job.pr_url) == (1, url)
    # one pull request: the first run's, now holding both runs' commits
    [pr] = world.github.pull_requests("acme", "eng")
    assert (pr.number, pr.state, pr.head, pr.base) == (1, "open", "ai/ENG-1", "main")
    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n" * 2
    assert git("merge-base", "--is-ancestor", after_first, "ai/ENG-1", cwd=world.remote.bare) == ""
    # the second run's comments are those of a run that opened its pull request
    lines = world.first_lines()
    second_run = lines[lines.index("🚀 Session machine created. Cloning repo and running setup…", 1) :]
    assert second_run[:3] == [
        "🚀 Session machine created. Cloning repo and running setup…",
        "✅ Environment ready. Claude is implementing…",
        f"📝 Claude finished. PR #1 opened: {url}",
    ]
    assert f"🔗 PR #1 is ready for review: {url}" in second_run
    assert not any(line.startswith("⚠️") for line in second_run), second_run
    assert world.tracker.stage_labels("ENG-1") == {"Ready for Review"}
    steps = world.steps(second)
    assert steps["pull-request"].status == "succeeded" and steps["pull-request"].detail["reused"] is True
    assert steps["review"].status == "succeeded"


def _squash_merge(world: World, number: int) -> str:
    """Merge pull request ``number`` as GitHub's squash merge does (one new commit on main holding
    the branch's changes; the branch left where it was, not deleted); the branch's commit."""
    from datetime import UTC, datetime

    tip = world.remote.branches()["ai/ENG-1"]
    world.remote.commit({"greeting.txt": world.remote.show("ai/ENG-1", "greeting.txt")},
                        f"ENG-1: Greet the user (#{number})")
    [pr] = [p for p in world.github.pull_requests("acme", "eng") if p.number == number]
    pr.state, pr.merged_at, pr.head_sha = "closed", datetime.now(UTC), tip
    return tip


def _rerun_started_over(world: World) -> tuple[int, str]:
    """The issue's job dispatched again and its session run, checked to have completed with a new
    pull request from the branch, which now holds this run's work on main alone: the job's id and
    the session's output."""
    main = world.remote.branches()["main"]
    second = world.dispatch()  # the trigger applied again
    code, out = world.run_session(second)

    assert code == 0, out
    job = world.job(second)
    assert job.status == "completed", (job.status, job.error)
    assert job.pr_number == 2
    assert [p.state for p in world.github.pull_requests("acme", "eng")] == ["closed", "open"]
    tip = world.remote.branches()["ai/ENG-1"]
    assert git("rev-parse", f"{tip}^", cwd=world.remote.bare).strip() == main
    assert git("rev-list", "--count", f"{main}..{tip}", cwd=world.remote.bare).strip() == "1"
    return second, out


@FULL_GITHUB
@pytest.mark.parametrize("later", ["unchanged", "reverted"])
def test_a_rerun_after_the_pull_request_was_squash_merged_starts_over_from_the_base(
    world: World, later: str
) -> None:
    """The issue is triggered again after its pull request was squash-merged and its branch left
    in place. The re-run continued from that branch: the merged work, whose commits are not
    main's, came back with the new pull request (reverted on main since, merging it would have
    restored it), on a tree as old as the branch. It starts over from main and replaces the branch."""
    world.mapping()
    first = world.dispatch()
    assert world.run_session(first)[0] == 0
    assert world.job(first).status == "completed"
    merged_tip = _squash_merge(world, 1)
    if later == "reverted":
        git("rm", "-q", "greeting.txt", cwd=world.remote.seed_dir)
        git("commit", "-q", "-m", "Revert ENG-1", cwd=world.remote.seed_dir)
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=world.remote.seed_dir)

    second, out = _rerun_started_over(world)
    expected = "hello from the agent\n" * (1 if later == "reverted" else 2)
    assert world.remote.show("ai/ENG-1", "greeting.txt") == expected
    clone = world.steps(second)["clone"].detail
    assert clone["resumedFrom"] is None and clone["mergedPrNumber"] == 1
    assert f"branch ai/ENG-1 was merged with pull request #1 as it stands (commit {merged_tip[:7]})" in out
    [lookup] = [r for r in world.github.server.requests_to("GET", "/repos/acme/eng/pulls")
                if r.query["state"] == ["closed"]]
    assert lookup.query["head"] == ["acme:ai/ENG-1"] and lookup.query["base"] == ["main"]


@FULL_GITHUB
def test_a_branch_with_no_history_in_common_with_the_base_is_started_over(world: World) -> None:
    """The branch's history rewritten (or main's replaced): the session continued from it, the agent
    worked on a tree that is not main's, and GitHub refused the pull request at the end (no history
    in common). It starts over from main and replaces the branch, as a merged one is."""
    world.mapping()
    orphan = world.tmp / "orphan"
    git("init", "-q", "-b", "x", str(orphan), cwd=world.tmp)
    (orphan / "other.txt").write_text("another history\n")
    git("add", "-A", cwd=orphan)
    git("-c", "user.name=a", "-c", "user.email=a@example.test", "commit", "-q", "-m", "other", cwd=orphan)
    git("push", "-q", str(world.remote.bare), "HEAD:refs/heads/ai/ENG-1", cwd=orphan)
    main = world.remote.branches()["main"]
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed", world.job(job_id).error
    tip = world.remote.branches()["ai/ENG-1"]
    assert git("rev-parse", f"{tip}^", cwd=world.remote.bare).strip() == main
    clone = world.steps(job_id)["clone"].detail
    assert clone["resumedFrom"] is None and clone["unrelatedBranch"] == "ai/ENG-1"


def _push_by_hand(world: World, text: str) -> str:
    """A commit of someone's own pushed to the branch (``later.txt`` holding ``text``); the branch's
    commit then."""
    clone = world.tmp / "by-hand"
    git("clone", "-q", "--branch", "ai/ENG-1", str(world.remote.bare), str(clone), cwd=world.tmp)
    (clone / "later.txt").write_text(text)
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "later", cwd=clone)
    git("push", "-q", "origin", "HEAD:refs/heads/ai/ENG-1", cwd=clone)
    return world.remote.branches()["ai/ENG-1"]


@FULL_GITHUB
def test_a_branch_that_moved_on_since_its_pull_request_was_merged_is_continued(world: World) -> None:
    """Commits pushed to the branch after its merge are work not merged: the branch is continued
    (and never forced), as one without a pull request is."""
    world.mapping()
    first = world.dispatch()
    assert world.run_session(first)[0] == 0
    merged_tip = _squash_merge(world, 1)
    later = _push_by_hand(world, "after the merge\n")

    second = world.dispatch()
    code, out = world.run_session(second)

    assert code == 0, out
    assert world.steps(second)["clone"].detail["resumedFrom"] == "ai/ENG-1"
    tip = world.remote.branches()["ai/ENG-1"]
    assert git("merge-base", "--is-ancestor", later, tip, cwd=world.remote.bare) == ""
    assert git("merge-base", "--is-ancestor", merged_tip, tip, cwd=world.remote.bare) == ""


@FULL_GITHUB
def test_a_merged_pull_request_github_cannot_look_up_leaves_the_branch_continued(world: World) -> None:
    """When GitHub cannot say whether the branch was merged, it is continued: it may hold an
    earlier attempt's work, which starting over (and replacing the branch) would throw away."""
    world.mapping()
    first = world.dispatch()
    assert world.run_session(first)[0] == 0
    merged_tip = _squash_merge(world, 1)
    world.github.fail_next("GET", r"/repos/acme/eng/pulls$", 503, "Service Unavailable", times=3)

    second = world.dispatch()
    code, out = world.run_session(second)

    assert code == 0, out
    assert "looking up the closed pull requests of ai/ENG-1 failed" in out
    assert world.steps(second)["clone"].detail["resumedFrom"] == "ai/ENG-1"
    tip = world.remote.branches()["ai/ENG-1"]
    assert git("merge-base", "--is-ancestor", merged_tip, tip, cwd=world.remote.bare) == ""


def _close_unmerged(world: World, number: int) -> str:
    """Close pull request ``number`` without a merge, as a reviewer turning it down does (the branch
    left where it was); the branch's commit."""
    tip = world.remote.branches()["ai/ENG-1"]
    [pr] = [p for p in world.github.pull_requests("acme", "eng") if p.number == number]
    pr.state, pr.head_sha = "closed", tip
    return tip


@FULL_GITHUB
def test_a_rerun_after_the_pull_request_was_closed_unmerged_starts_over_from_the_base(world: World) -> None:
    """The issue is triggered again after its pull request was closed without a merge (the work
    turned down). Continued, the re-run built on the work turned down and brought it back with
    the new pull request. It starts over from main, and its push replaces the branch."""
    world.mapping()
    first = world.dispatch()
    assert world.run_session(first)[0] == 0
    closed_tip = _close_unmerged(world, 1)

    second, out = _rerun_started_over(world)

    assert world.remote.show("ai/ENG-1", "greeting.txt") == "hello from the agent\n"
    clone = world.steps(second)["clone"].detail
    assert clone["resumedFrom"] is None and clone["closedPrNumber"] == 1 and "mergedPrNumber" not in clone
    assert (f"pull request #1 of branch ai/ENG-1 was closed without a merge as the branch stands "
            f"(commit {closed_tip[:7]}): starting over from main") in out


@FULL_GITHUB
@pytest.mark.parametrize("since", ["commits", "opened"])
def test_a_branch_closed_unmerged_is_continued_once_it_got_commits_or_a_pull_request_since(
    world: World, since: str
) -> None:
    """Commits pushed to the branch after its pull request was closed, or a pull request opened
    from it again, are work someone goes on with: the branch is continued (and never forced)."""
    from aiimpl_core.testing.fake_github import PullRequest

    world.mapping()
    first = world.dispatch()
    assert world.run_session(first)[0] == 0
    closed_tip = _close_unmerged(world, 1)
    if since == "commits":
        _push_by_hand(world, "after the close\n")
    else:
        world.github.pulls[("acme", "eng")].append(PullRequest(
            2, "acme", "eng", "ENG-1 again", "ai/ENG-1", "main", None, head_sha=closed_tip))
    later = world.remote.branches()["ai/ENG-1"]

    second = world.dispatch()
    code, out = world.run_session(second)

    assert code == 0, out
    clone_detail = world.steps(second)["clone"].detail
    assert clone_detail["resumedFrom"] == "ai/ENG-1" and "closedPrNumber" not in clone_detail
    assert world.job(second).pr_number == 2
    tip = world.remote.branches()["ai/ENG-1"]
    assert git("merge-base", "--is-ancestor", later, tip, cwd=world.remote.bare) == ""


def test_an_unusable_configuration_ends_the_job_at_once(world: World) -> None:
    world.mapping(AIIMPL_AGENT_COMMAND='claude -p "{prompt}')  # an unbalanced quote in extraEnv
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 2, out
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error == (
        "the session configuration is invalid: AIIMPL_AGENT_COMMAND is not a valid command line "
        "(No closing quotation)"
    )
    assert world.first_lines()[0] == f"⚠️ Session failed: {job.error}. Machine will be cleaned up."
    assert f"⚠️ Implementation failed: {as_text(job.error)}" in world.comments()
    assert world.agent_calls() == []


def test_a_session_without_its_nonce_ends_the_job_with_its_result(world: World) -> None:
    """Without ``AIIMPL_NONCE``, which alone opens ``/api/status``, there is no ``⚠️ Session
    failed`` comment to post; the result token still ends the job failed with the failure notice
    and its log excerpt, and no status event is sent for nothing."""
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_NONCE="")

    assert code == 2, out
    job = world.job(job_id)
    reason = ("the session configuration is invalid: AIIMPL_NONCE is not set (One-time job nonce for "
              "/api/token, /api/status, /api/step-report)")
    assert (job.status, job.error) == ("failed", reason)
    assert world.first_lines() == [f"⚠️ Implementation failed: {as_text(reason)}",
                                   "Log excerpt (`session_failed`):"]
    assert "not accepted" not in out and "reporting the failure failed" not in out


def test_an_unusable_configuration_is_said_with_the_nonce_as_the_session_reads_it(world: World) -> None:
    """A nonce with white space around it (a value read from a file) is the nonce to the session,
    which trims it: the configuration error's ``⚠️ Session failed`` comment was refused with
    ``Invalid or expired nonce``."""
    world.mapping(AIIMPL_AGENT_COMMAND='claude -p "{prompt}')
    job_id = world.dispatch()
    nonce = world.env_of(job_id)["AIIMPL_NONCE"]

    code, out = world.run_session(job_id, AIIMPL_NONCE=f" {nonce}\n")

    assert code == 2, out
    job = world.job(job_id)
    assert job.status == "failed"
    assert world.first_lines()[0] == f"⚠️ Session failed: {job.error}. Machine will be cleaned up."


@pytest.mark.parametrize(("env", "said"), [
    ({"AIIMPL_PHASE": ""}, "AIIMPL_PHASE is not set"),
    ({"AIIMPL_PHASE": "planning"}, "AIIMPL_PHASE is planning, but the run tokens are for implementation"),
    ({"AIIMPL_BRANCH": ""}, "AIIMPL_BRANCH is not set"),
    # it failed at the checkout, after the clone, with git's "'ai/ENG 1' is not a valid branch name"
    ({"AIIMPL_BRANCH": "ai/ENG 1"}, "AIIMPL_BRANCH must be a name git accepts for a branch (see git "
                                    "check-ref-format), not 'ai/ENG 1'"),
], ids=["phase-missing", "phase-wrong", "branch-missing", "branch-invalid"])
def test_a_configuration_wrong_about_the_phase_or_branch_ends_the_job_at_once(
    world: World, env: dict[str, str], said: str
) -> None:
    """The result is reported with the run token's phase (AIIMPL_PHASE may be what is wrong): the job
    ended only at its timeout, or after the whole run had been done on the base branch."""
    world.mapping()
    job_id = world.dispatch()
    before = world.remote.branches()

    code, out = world.run_session(job_id, **env)

    assert code == 2, out
    job = world.job(job_id)
    assert job.status == "failed" and job.error.startswith(f"the session configuration is invalid: {said}")
    assert world.agent_calls() == [] and world.remote.branches() == before


@pytest.mark.parametrize("holder", [True, False], ids=["entrypoint", "no-entrypoint"])
@pytest.mark.parametrize("mode", ["interactve", "Interactive"])
def test_an_unknown_session_mode_ends_the_job_at_once(world: World, mode: str, holder: bool) -> None:
    """A session mode set by hand with a typo (a workflow's env, a Docker command) was taken as
    autonomous: the run went on and the machine a person meant to attach to was torn down. It is
    a configuration the session cannot use, said as the others are, before any work."""
    world.mapping()
    job_id = world.dispatch()
    before = world.remote.branches()

    held = {"AIIMPL_SESSION_HOLDER": "session-entrypoint"} if holder else {}
    code, out = world.run_session(job_id, AIIMPL_SESSION_MODE=mode, **held)

    assert code == 2, out
    job = world.job(job_id)
    reason = ("the session configuration is invalid: AIIMPL_SESSION_MODE must be autonomous, interactive "
              f"or hybrid, not {mode!r}")
    assert (job.status, job.error) == ("failed", reason)
    assert world.first_lines()[0] == f"⚠️ Session failed: {reason}. Machine will be cleaned up."
    assert f"⚠️ Implementation failed: {as_text(reason)}" in world.comments()
    assert world.agent_calls() == [] and world.remote.branches() == before
    assert "the work tree is kept" not in out


@pytest.mark.parametrize("mode", ["", "  ", " hybrid\n"])
def test_a_session_mode_is_read_without_white_space_and_empty_is_autonomous(world: World, mode: str) -> None:
    world.mapping(FAKE_AGENT_MODE="error")
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_SESSION_MODE=mode,
                                  AIIMPL_SESSION_HOLDER="session-entrypoint")

    assert code == 1, out
    assert world.job(job_id).status == "failed"
    # hybrid holds after a failure (the work tree is kept); autonomous never does
    assert ("the work tree is kept for a person to attach" in out) is (mode.strip() == "hybrid")


def test_the_repositorys_hooks_and_filters_never_run_with_the_sessions_credentials(
    world: World,
) -> None:
    """Setup (npm's husky, or an agent) points git at hooks of the repository: a pre-push that
    fails, a post-commit that asks git for the push credentials and dumps its environment, and a
    clean filter that does the same. The session's commit and push run none of the hooks; the
    filter of ``git add`` runs without the nonce, the run tokens or a credential helper that answers."""
    dump = world.tmp / "hook-env"
    ask = "printf 'protocol=http\\nhost=127.0.0.1\\n\\n' | git credential fill"
    hook = f"#!/bin/sh\nenv >> {dump}\n{ask} >> {dump} 2>&1\nexit 1\n"
    setup = (
        "mkdir -p .husky && cat > .husky/pre-push <<'HOOK'\n" + hook + "HOOK\n"
        "chmod +x .husky/pre-push && cp .husky/pre-push .husky/post-commit"
        " && cp .husky/pre-push .git/hooks/post-commit && git config core.hooksPath .husky"
        f" && git config filter.dump.clean 'sh -c \"env >> {dump}; cat\"'"
        " && echo '*.txt filter=dump' >> .git/info/attributes"
    )
    world.mapping(AIIMPL_SETUP_COMMAND=setup)
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed"  # the failing pre-push hook did not run
    env = world.env_of(job_id)
    seen = dump.read_text()
    assert "GIT_AUTHOR_NAME=" in seen  # the filter ran, in git's local environment
    assert "password=" not in seen  # no credential helper answered
    for name in ("AIIMPL_NONCE", "AIIMPL_RESULT_TOKEN", "AIIMPL_PROGRESS_TOKEN", "AIIMPL_CONTEXT_TOKEN"):
        assert env[name] not in seen
    for token in world.github.issued_tokens:
        assert token.token not in seen


@pytest.mark.parametrize("mode", ["dotenv", "dotenv_max_turns"])
def test_changes_holding_a_secret_are_never_committed_or_pushed(world: World, mode: str) -> None:
    """The agent wrote the model key into ``.env``: the session commits and pushes nothing (the
    finished run, or the work it saves at its turn limit), and says which file holds it."""
    world.mapping(FAKE_AGENT_MODE=mode)
    job_id = world.dispatch()
    before = world.remote.branches()

    code, out = world.run_session(job_id)

    assert code == 1, out
    job = world.job(job_id)
    assert job.status == "failed"
    refused = "The changes hold the value of a secret of the session (in .env): nothing was committed"
    assert f"{refused} or pushed" in job.error
    assert world.remote.branches() == before  # no branch pushed
    assert world.job(job_id).pr_url is None
    world.assert_no_secret_anywhere(job_id)


@pytest.mark.parametrize(("mode", "agent", "holder", "kept"), [
    ("hybrid", "error", True, True), ("interactive", "error", True, True),
    ("interactive", "edit", True, True), ("autonomous", "error", True, False),
    ("hybrid", "edit", True, False),
    # no entrypoint to hold the machine (a GitHub Actions run): cleaned up, whatever the mode
    ("interactive", "error", False, False),
])
def test_a_held_session_keeps_its_work_tree_for_a_person(world: World, mode: str, agent: str, holder: bool,
                                                         kept: bool) -> None:
    """Interactive mode, and hybrid after a failure, hold the machine for a person to attach and
    continue in the work tree: it is kept, and the ticket is not told the machine was cleaned up
    (the reference's comment is for a machine torn down); the tokens' state directory never is."""
    world.mapping(FAKE_AGENT_MODE=agent)
    job_id = world.dispatch()

    held = {"AIIMPL_SESSION_HOLDER": "session-entrypoint"} if holder else {}
    code, out = world.run_session(job_id, AIIMPL_SESSION_MODE=mode, **held)

    assert code == (0 if agent == "edit" else 1), out
    found = re.search(r"the work tree is kept for a person to attach: (\S+)", out)
    assert bool(found) is kept
    cleaned = [c for c in world.comments() if c.startswith("🧹 Session machine cleaned up. Duration: ")]
    assert len(cleaned) == (0 if kept else 1), world.comments()
    if found:
        tree = found.group(1)
        assert os.path.isdir(os.path.join(tree, ".git"))
        assert world.env_of(job_id)["AIIMPL_NONCE"] not in open(os.path.join(tree, ".git", "config")).read()
