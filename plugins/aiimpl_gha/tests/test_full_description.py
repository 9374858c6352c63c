"""The same calls, checked against GitHub's complete REST description (not only the fast subset)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from aiimpl_core.errors import DispatchError
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.types import InFlightRun, Phase, RunPhase

from aiimpl_gha.backend import GitHubActionsBackend

from .conftest import github_config
from .test_backend import full_request


@pytest.fixture
def full_gh(aiimpl_specs_dir: str):
    path = os.path.join(aiimpl_specs_dir, "github", "rest", "api.github.com.json")
    with FakeGitHub(spec_path=path) as fake:
        fake.add_repo("acme", "api")
        fake.add_installation("acme")
        yield fake


def test_backend_round_against_the_full_description(full_gh: FakeGitHub) -> None:
    backend = GitHubActionsBackend(make_context(github_config(full_gh)))
    mapping = sample_mapping(planning_enabled=True, planning_workflow_file="plan.yml")
    assert len(backend.sync_workflows(mapping).created) == 3
    assert backend.sync_workflows(mapping).unchanged
    request = full_request(1, Phase.PLANNING, mapping=mapping)
    result = backend.dispatch(request)
    run = full_gh.run_named("job-1")
    assert result.run_id == str(run.id)  # the 200 with the run's details, checked as well
    full_gh.advance_run(run.id, "completed", "timed_out")
    flight = InFlightRun(
        job_id=1,
        phase=Phase.PLANNING,
        issue_key="ENG-1",
        mapping=mapping,
        run_id=None,
        run_name=request.run_name,
        dispatched_at=datetime.now(UTC),
    )
    [state] = backend.poll_runs([flight])
    assert state.phase is RunPhase.TIMED_OUT
    full_gh.put_file("acme", "api", ".github/workflows/ai-implement.yml", "name: x\non: push\njobs: {}\n")
    with pytest.raises(DispatchError):
        backend.dispatch(full_request(2))
    assert {r.path.split("/")[-1] for r in full_gh.requests} >= {
        "installation",
        "access_tokens",
        "dispatches",
        "runs",
    }
    full_gh.assert_clean()
