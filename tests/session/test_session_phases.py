"""Planning (a plan, no PR) and the implementation that follows it with the approved plan."""

from __future__ import annotations

from .conftest import World


def test_planning_sends_the_plan_then_implementation_receives_it(world: World) -> None:
    world.mapping(planning=True)
    plan_job = world.dispatch("ENG-7", title="Rework greetings", description="Greet by name.")
    assert world.env_of(plan_job)["AIIMPL_PHASE"] == "planning"

    code, out = world.run_session(plan_job)

    assert code == 0, out
    job = world.job(plan_job)
    assert job.status == "completed" and job.pr_url is None
    assert job.plan and job.plan.startswith("## Plan")
    assert "ai/ENG-7" not in world.remote.branches()  # planning pushes nothing
    assert world.github.pull_requests("acme", "eng") == []
    [plan_comment] = [c for c in world.comments("ENG-7") if c.startswith("📋 Plan ready for review.")]
    assert "1. Add `greeting.txt`." in plan_comment
    assert world.tracker.stage_labels("ENG-7") == {"Plan-Complete"}
    assert "write a concise implementation plan" in world.agent_calls()[0]["prompt"]

    # a person approves by applying the trigger again: the implementation gets the plan
    impl_job = world.dispatch("ENG-7")
    assert world.env_of(impl_job)["AIIMPL_PHASE"] == "implementation"
    code, out = world.run_session(impl_job)

    assert code == 0, out
    assert world.job(impl_job).status == "completed"
    impl_prompt = world.agent_calls()[1]["prompt"]
    assert "## Approved plan" in impl_prompt and "1. Add `greeting.txt`." in impl_prompt
    assert world.github.pull_requests("acme", "eng")[0].head == "ai/ENG-7"


def test_gap_analysis_works_on_the_pr_branch_and_pushes_to_it(world: World) -> None:
    from aiimpl_core.extensions import db
    from aiimpl_core.services.gapfill import trigger_gap_fill

    world.mapping()
    first = world.dispatch("ENG-3", title="Greet twice")
    code, out = world.run_session(first)
    assert code == 0, out
    before = world.remote.branches()["ai/ENG-3"]

    answer = trigger_gap_fill("ENG-3", 1)
    db.session.remove()
    job_id = answer["jobId"]
    env = world.env_of(job_id)
    assert (env["AIIMPL_PHASE"], env["AIIMPL_BASE_BRANCH"], env["AIIMPL_PR_NUMBER"]) == (
        "gap-analysis",
        "ai/ENG-3",
        "1",
    )

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed", (job.error, out)
    # the agent's addition sits on top of the PR branch: no force, no second PR
    after = world.remote.branches()["ai/ENG-3"]
    assert after != before
    assert world.remote.show("ai/ENG-3", "greeting.txt") == "hello from the agent\n" * 2
    assert len(world.github.pull_requests("acme", "eng")) == 1
    prompt = world.agent_calls()[-2]["prompt"]  # the last call is the review
    assert "pull request #1" in prompt and "Greet twice" in prompt


def test_gap_analysis_that_finds_nothing_missing_succeeds(world: World) -> None:
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping
    from aiimpl_core.services.gapfill import trigger_gap_fill

    world.mapping()
    first = world.dispatch("ENG-4")
    assert world.run_session(first)[0] == 0
    row = db.session.scalar(db.select(Mapping))
    row.extra_env = {**row.extra_env, "FAKE_AGENT_MODE": "noop"}
    db.session.commit()
    job_id = trigger_gap_fill("ENG-4", 1)["jobId"]
    db.session.remove()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed"
    assert any(c.startswith("🔎 Gap analysis found nothing missing") for c in world.comments("ENG-4"))
