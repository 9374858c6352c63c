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
