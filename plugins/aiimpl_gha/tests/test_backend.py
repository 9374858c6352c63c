"""The github-actions backend against the fake GitHub (every exchange checked by the fake)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from aiimpl_core.errors import DispatchError, DispatchUnanswered, ProviderConfigError, ProviderError
from aiimpl_core.github.app_auth import TOKENS
from aiimpl_core.http import HttpClient
from aiimpl_core.testing.contract import (
    RunnerBackendContract,
    make_context,
    sample_dispatch_request,
    sample_in_flight_run,
    sample_mapping,
)
from aiimpl_core.testing.fake_github import FakeGitHub, Run
from aiimpl_core.types import DispatchRequest, InFlightRun, LogLabel, Phase, RunPhase, TimeoutReason

from aiimpl_gha.backend import GitHubActionsBackend
from aiimpl_gha.config import CREDENTIAL_INPUTS

from .conftest import fake_github, github_config, list_runs_late, synced

SECRET = "sk-ant-very-secret-value"


def full_request(job_id: int = 1, phase: Phase = Phase.IMPLEMENTATION, **kw: object) -> DispatchRequest:
    env = {
        "AIIMPL_URL": "http://orchestrator.test",
        "AIIMPL_JOB_ID": str(job_id),
        "AIIMPL_PHASE": phase.value,
        "AIIMPL_ISSUE_KEY": "ENG-1",
        "AIIMPL_REPOSITORY": "acme/api",
        "AIIMPL_BRANCH": "ai/ENG-1",
        "AIIMPL_NONCE": "nonce-123",
        "AIIMPL_RESULT_TOKEN": "result.jwt",
        "AIIMPL_PROGRESS_TOKEN": "progress.jwt",
        "AIIMPL_CONTEXT_TOKEN": "context.jwt",
        "ANTHROPIC_API_KEY": SECRET,
        "EXTRA": "visible",
    }
    secret_names = frozenset(
        {
            "AIIMPL_NONCE",
            "AIIMPL_RESULT_TOKEN",
            "AIIMPL_PROGRESS_TOKEN",
            "AIIMPL_CONTEXT_TOKEN",
            "ANTHROPIC_API_KEY",
        }
    )
    return sample_dispatch_request(
        job_id,
        phase,
        env=env,
        secret_names=secret_names,
        run_name=f"AI-Implement ENG-1 {phase.value} job-{job_id}",
        **kw,
    )


def in_flight(
    request: DispatchRequest, run_id: str | None = None, dispatched_at: datetime | None = None
) -> InFlightRun:
    return sample_in_flight_run(request, run_id=run_id, dispatched_at=dispatched_at or datetime.now(UTC))


def install(gh: FakeGitHub, backend: GitHubActionsBackend, **mapping_kw: object) -> None:
    backend.sync_workflows(sample_mapping(**mapping_kw))


class TestContract(RunnerBackendContract):
    # the session's own credentials travel in their own workflow inputs, which the workflow masks
    # (README, "Inputs are visible to anyone who can read the repository's Actions")
    public_secret_names = frozenset(CREDENTIAL_INPUTS.values())

    @pytest.fixture
    def gh(self, aiimpl_specs_dir: str) -> Iterator[FakeGitHub]:
        """The contract cancels the runs it dispatched (found by name before they are linked):
        cancelling is outside the fast subset."""
        with fake_github(aiimpl_specs_dir, full=True) as fake:
            yield fake

    @pytest.fixture
    def runner_backend(self, gh: FakeGitHub, backend: GitHubActionsBackend) -> GitHubActionsBackend:
        install(gh, backend)
        return backend

    @pytest.fixture
    def dispatch_request(self) -> DispatchRequest:
        return full_request()

    @pytest.fixture
    def contract_run_metadata(self, gh: FakeGitHub) -> object:
        """What GitHub shows of a workflow run to whoever reads the repository's Actions: its name
        (``display_title``), branch and ``workflow_dispatch`` inputs."""
        def shown(run: InFlightRun) -> dict[str, object]:
            found = gh.runs[int(run.run_id)] if run.run_id else gh.run_named(run.run_name)
            return {"display_title": found.title, "head_branch": found.head_branch, "inputs": found.inputs}
        return shown


def test_flags() -> None:
    cls = GitHubActionsBackend
    assert (cls.id, cls.runner_mode) == ("github-actions", "gha")
    assert cls.mapping_selectable and cls.supports_workflow_sync and cls.supports_gap_fill
    assert not cls.supports_secrets and not cls.supports_sessions


def test_dispatch_sends_the_inputs_on_the_default_branch(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    install(gh, backend)
    result = backend.dispatch(full_request(7))
    run = gh.run_named("job-7")
    # GitHub's answer names the run: the job is linked to it at once
    assert (result.run_id, result.linked) == (str(run.id), True)
    assert result.run_url == f"https://github.com/acme/api/actions/runs/{run.id}"
    [call] = gh.server.requests_to("POST", "/actions/workflows/ai-implement.yml/dispatches")
    assert call.json["ref"] == "main" and call.json["return_run_details"] is True
    inputs = call.json["inputs"]
    assert inputs["run_name"] == "AI-Implement ENG-1 implementation job-7"
    assert (inputs["job_id"], inputs["phase"], inputs["issue_key"]) == ("7", "implementation", "ENG-1")
    assert inputs["orchestrator_url"] == "http://orchestrator.test"
    assert (inputs["nonce"], inputs["result_token"]) == ("nonce-123", "result.jwt")
    env = json.loads(inputs["env"])
    assert env["EXTRA"] == "visible" and env["AIIMPL_BRANCH"] == "ai/ENG-1"
    assert "AIIMPL_NONCE" not in env  # credentials travel only in their own (masked) inputs
    # a secret of the session's environment is never sent to GitHub: inputs are public
    for request in gh.requests:
        assert SECRET not in request.body.decode()
    # the run the fake created carries the job's run name
    assert run.head_branch == "main" and run.workflow.file == "ai-implement.yml"


@pytest.mark.parametrize("server", ["ignored", "refused"])
def test_a_server_without_run_details_makes_one_run_linked_by_its_name(
    gh: FakeGitHub, backend: GitHubActionsBackend, server: str
) -> None:
    # GitHub Enterprise Server before return_run_details: answers 204 all the same, or refuses the key
    install(gh, backend)
    gh.run_details = server
    request = full_request(7)
    result = backend.dispatch(request)
    assert result.run_id is None and not result.linked
    [run] = gh.runs_of("acme", "api")  # a refused key made no run; the dispatch without it made one
    calls = gh.server.requests_to("POST", "/dispatches")
    expected = [True] if server == "ignored" else [True, None]
    assert [c.json.get("return_run_details") for c in calls] == expected
    assert all(c.json["inputs"] == calls[0].json["inputs"] for c in calls)
    [state] = backend.poll_runs([in_flight(request)])
    assert state.phase is RunPhase.PENDING and state.run_id == str(run.id)


def test_a_dispatch_answered_with_an_unreadable_body_is_linked_by_name(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    # a proxy's page in place of GitHub's 200: the dispatch was made, only its run is not named
    install(gh, backend)
    gh.garble_next("POST", "/dispatches$")
    request = full_request(7)
    result = backend.dispatch(request)
    assert result.run_id is None
    [run] = gh.runs_of("acme", "api")
    [state] = backend.poll_runs([in_flight(request)])
    assert state.run_id == str(run.id)


def short_timeout_backend(gh: FakeGitHub, seconds: float) -> GitHubActionsBackend:
    context = dataclasses.replace(
        make_context(github_config(gh)),
        http=lambda base_url="", **kw: HttpClient(base_url, **{**kw, "timeout": seconds}),
    )
    return GitHubActionsBackend(context)


@pytest.mark.parametrize("lost", ["timeout", "gateway"])
def test_a_dispatch_without_an_answer_is_linked_to_the_run_github_made(
    gh: FakeGitHub, backend: GitHubActionsBackend, lost: str
) -> None:
    # no answer came back (a read timeout, a gateway's 504), yet GitHub made the run: failing the
    # job would leave that run to nobody, so it is found by its name and the job linked to it
    install(gh, backend)
    if lost == "timeout":
        backend = short_timeout_backend(gh, 1.0)
        gh.delay_next("POST", "/dispatches$", 1.5)
    else:
        gh.fail_next("POST", "/dispatches$", 504, "We couldn't respond to your request in time.", done=True)
    result = backend.dispatch(full_request(7))
    [run] = gh.runs_of("acme", "api")  # the dispatch was not sent twice
    assert (result.run_id, result.run_url) == (str(run.id), f"https://github.com/acme/api/actions/runs/{run.id}")
    [listing] = gh.server.requests_to("GET", "/actions/runs")
    assert listing.query["event"] == ["workflow_dispatch"]


@pytest.mark.parametrize("lost", ["timeout", "gateway"])
def test_a_run_github_lists_only_after_the_dispatch_is_linked_by_a_later_poll(
    gh: FakeGitHub, backend: GitHubActionsBackend, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    # the dispatch's answer is lost and the one listing it makes does not show the run yet (GitHub
    # lists runs a few seconds late): the dispatch is said unanswered (the core keeps the job
    # dispatched without a run and backs off), and a later poll links the run
    install(gh, backend)
    if lost == "timeout":
        backend = short_timeout_backend(gh, 1.0)
        gh.delay_next("POST", "/dispatches$", 1.5)
    else:
        gh.fail_next("POST", "/dispatches$", 502, "Server Error", done=True)
    list_runs_late(gh, monkeypatch)
    request = full_request(7)
    with pytest.raises(DispatchUnanswered) as err:
        backend.dispatch(request)
    assert err.value.status == (None if lost == "timeout" else 502)
    assert "and lists no run of it yet" in err.value.message
    assert len(gh.server.requests_to("GET", "/actions/runs")) == 1  # it looked once
    [run] = gh.runs_of("acme", "api")
    [state] = backend.poll_runs([in_flight(request)])
    assert (state.phase, state.run_id) == (RunPhase.PENDING, str(run.id))
    assert state.run_url == f"https://github.com/acme/api/actions/runs/{run.id}"
    assert len(gh.runs_of("acme", "api")) == 1  # never dispatched again


def test_a_dispatch_without_an_answer_and_no_run_is_looked_for_by_its_exact_name(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    install(gh, backend)
    earlier = full_request(6)
    backend.dispatch(earlier)  # an earlier job of the same issue, whose run goes on
    gh.fail_next("POST", "/dispatches$", 502, "Server Error")  # refused before GitHub made a run
    request = full_request(7)
    with pytest.raises(DispatchUnanswered):
        backend.dispatch(request)
    assert len(gh.server.requests_to("GET", "/actions/runs")) == 1  # it looked
    backend.dispatch(full_request(70))  # a later job whose name starts with job 7's
    assert sorted(r.title for r in gh.runs_of("acme", "api")) == [
        "AI-Implement ENG-1 implementation job-6",
        "AI-Implement ENG-1 implementation job-70",
    ]
    # no run of another job is taken for job 7's: it is not found (the core ends it run_not_found
    # once its window has passed)
    [state] = backend.poll_runs([in_flight(request)])
    assert (state.phase, state.run_id) == (RunPhase.NOT_FOUND, None)
    # a refusal made no run: nothing is looked for
    gh.set_workflow_state("acme", "api", "ai-implement.yml", "disabled_manually")
    with pytest.raises(DispatchError) as err:
        backend.dispatch(full_request(8))
    assert not isinstance(err.value, DispatchUnanswered)
    assert err.value.status == 422 and len(gh.server.requests_to("GET", "/actions/runs")) == 2


def test_a_failed_lookup_after_a_dispatch_without_an_answer_leaves_the_run_to_the_polls(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    install(gh, backend)
    gh.fail_next("POST", "/dispatches$", 504, "We couldn't respond to your request in time.", done=True)
    gh.fail_next("GET", "/actions/runs$", 503, "Service Unavailable", times=3)
    request = full_request(7)
    with pytest.raises(DispatchUnanswered):
        backend.dispatch(request)
    gh.failures.clear()
    [run] = gh.runs_of("acme", "api")
    [state] = backend.poll_runs([in_flight(request)])
    assert state.run_id == str(run.id)


def test_a_dispatch_never_sent_fails_without_looking_for_its_run(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    # no token could be had (GitHub answered 503): the dispatch never went out, so no run was made
    install(gh, backend)
    TOKENS.clear()
    gh.fail_next("POST", "/access_tokens$", 503, "Service Unavailable", times=10)
    with pytest.raises(DispatchError) as err:
        backend.dispatch(full_request(7))
    gh.failures.clear()
    assert err.value.status == 503 and not isinstance(err.value, DispatchUnanswered)
    assert gh.server.requests_to("POST", "/dispatches") == [] == gh.server.requests_to("GET", "/actions/runs")


def test_dispatch_uses_the_configured_workflow_file(gh: FakeGitHub) -> None:
    backend = GitHubActionsBackend(
        make_context({**github_config(gh), "AIIMPL_GHA_WORKFLOW_FILE": "custom.yml"})
    )
    backend.sync_workflows(sample_mapping())
    assert gh.file("acme", "api", ".github/workflows/custom.yml") == synced("ai-implement.yml")
    backend.dispatch(full_request())
    assert gh.server.requests_to("POST", "/actions/workflows/custom.yml/dispatches")


def test_planning_uses_the_mappings_planning_workflow(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    mapping = sample_mapping(planning_enabled=True, planning_workflow_file="plan.yml")
    backend.sync_workflows(mapping)
    assert gh.file("acme", "api", ".github/workflows/plan.yml") == synced("ai-implement-planning.yml")
    backend.dispatch(full_request(3, Phase.PLANNING, mapping=mapping))
    assert gh.server.requests_to("POST", "/actions/workflows/plan.yml/dispatches")
    assert gh.run_named("job-3").workflow.file == "plan.yml"


def test_gap_fill_dispatches_the_gap_fill_workflow(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    install(gh, backend)
    backend.dispatch_gap_fill(full_request(9, Phase.GAP_ANALYSIS, pr_number=42))
    assert gh.server.requests_to("POST", "/actions/workflows/ai-implement-gap-fill.yml/dispatches")
    assert gh.run_named("job-9").inputs["phase"] == "gap-analysis"


def test_refused_dispatch_carries_githubs_status_and_message(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    # a workflow file without a workflow_dispatch trigger
    gh.put_file("acme", "api", ".github/workflows/ai-implement-gap-fill.yml", "name: x\non: push\njobs: {}\n")
    with pytest.raises(DispatchError) as err:
        backend.dispatch_gap_fill(full_request(1, Phase.GAP_ANALYSIS))
    assert err.value.status == 422
    assert err.value.detail == "Workflow does not have 'workflow_dispatch' trigger"
    # no workflow at all
    with pytest.raises(DispatchError) as err:
        backend.dispatch(full_request())
    assert err.value.status == 404 and err.value.detail == "Not Found"


def test_dispatch_of_a_disabled_workflow_carries_githubs_message(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    install(gh, backend)
    gh.set_workflow_state("acme", "api", "ai-implement.yml", "disabled_manually")
    with pytest.raises(DispatchError) as err:
        backend.dispatch(full_request())
    assert err.value.status == 422
    assert err.value.detail == "Cannot trigger a 'workflow_dispatch' on a disabled workflow"
    assert gh.runs_of("acme", "api") == []


def test_poll_links_by_name_with_one_listing_per_repository(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    gh.add_repo("acme", "web")
    install(gh, backend)
    install(gh, backend, repo="web")
    requests_ = [full_request(n) for n in (1, 2, 3)]
    web = full_request(4, mapping=sample_mapping(repo="web"))
    for r in [*requests_, web]:
        backend.dispatch(r)
    # a run of another job with the same repository is not confused with ours
    not_dispatched = full_request(5)
    gh.server.reset()

    states = {
        s.job_id: s for s in backend.poll_runs([in_flight(r) for r in [*requests_, web, not_dispatched]])
    }

    listings = gh.server.requests_to("GET", "/actions/runs")
    assert len(listings) == 2, "one listing per repository per cycle"
    assert all(r.query.get("event") == ["workflow_dispatch"] for r in listings)
    assert states[5].phase is RunPhase.NOT_FOUND
    for job_id in (1, 2, 3, 4):
        run = gh.run_named(f"job-{job_id}")
        assert states[job_id].phase is RunPhase.PENDING and states[job_id].run_id == str(run.id)
        assert states[job_id].run_url.endswith(f"/actions/runs/{run.id}")


@pytest.mark.parametrize(
    ("status", "conclusion", "phase"),
    [
        ("queued", None, RunPhase.PENDING),
        ("in_progress", None, RunPhase.RUNNING),
        ("completed", "success", RunPhase.SUCCEEDED),
        ("completed", "failure", RunPhase.FAILED),
        ("completed", "cancelled", RunPhase.FAILED),
        ("completed", "timed_out", RunPhase.TIMED_OUT),
    ],
)
def test_run_states(
    gh: FakeGitHub, backend: GitHubActionsBackend, status: str, conclusion: str | None, phase: RunPhase
) -> None:
    install(gh, backend)
    request = full_request()
    backend.dispatch(request)
    run = gh.run_named("job-1")
    gh.advance_run(run.id, status, conclusion)
    [state] = backend.poll_runs([in_flight(request)])
    assert state.phase is phase and state.run_id == str(run.id)
    if phase is RunPhase.TIMED_OUT:
        assert state.timeout_reason is TimeoutReason.TIMED_OUT
    if phase is RunPhase.FAILED:
        assert state.log_label is LogLabel.SESSION_FAILED
        expected = {
            "failure": "the GitHub Actions run failed",
            "cancelled": "the GitHub Actions run was cancelled",
        }
        assert state.detail == f"{expected[conclusion]}: https://github.com/acme/api/actions/runs/{run.id}"


def test_a_run_cancelled_past_the_lifetime_is_a_timeout(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    # GitHub ends a job that reaches its timeout-minutes with the conclusion ``cancelled``
    install(gh, backend)
    request = full_request()
    backend.dispatch(request)
    run = gh.run_named("job-1")
    gh.advance_run(run.id, "in_progress")
    dispatched = datetime.now(UTC) - timedelta(minutes=75)
    run.created_at = dispatched + timedelta(seconds=5)
    gh.advance_run(run.id, "completed", "cancelled")
    [state] = backend.poll_runs([in_flight(request, run_id=str(run.id), dispatched_at=dispatched)])
    assert state.phase is RunPhase.TIMED_OUT and state.timeout_reason is TimeoutReason.TIMED_OUT
    assert state.run_id == str(run.id)
    # cancelled within the lifetime (a person, or a newer run of the concurrency group): a failure
    later = dispatched + timedelta(minutes=30)
    [state] = backend.poll_runs([in_flight(request, run_id=str(run.id), dispatched_at=later)])
    assert state.phase is RunPhase.FAILED and "was cancelled" in (state.detail or "")


def test_poll_ignores_runs_older_than_the_dispatch(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    install(gh, backend)
    request = full_request()
    backend.dispatch(request)
    run = gh.run_named("job-1")
    run.created_at = datetime.now(UTC) - timedelta(days=3)  # an old run of a job id reused elsewhere
    [state] = backend.poll_runs([in_flight(request)])
    assert state.phase is RunPhase.NOT_FOUND


def test_poll_failure_of_every_repository_raises(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    """An outage of GitHub's (a 5xx) is raised, for the reconciler to back off; a refusal that
    concerns the repository (its 404) leaves its jobs as they are without."""
    install(gh, backend)
    gh.fail_next("GET", "/actions/runs", 503, "Service Unavailable", times=5)
    with pytest.raises(ProviderError):
        backend.poll_runs([in_flight(full_request())])
    gh.failures.clear()
    gh.fail_next("GET", "/actions/runs", 404, "Not Found", times=5)
    assert backend.poll_runs([in_flight(full_request())]) == []


@pytest.mark.parametrize("existing", [False, True])
def test_a_write_github_made_though_its_answer_was_lost_is_a_sync_done(
    gh: FakeGitHub, backend: GitHubActionsBackend, existing: bool
) -> None:
    """A gateway's 502 after GitHub wrote the file: the client's second PUT was refused (422 "sha"
    wasn't supplied, or 409 for a sha no longer the file's) and the sync failed, the file written."""
    mapping = sample_mapping()
    if existing:
        gh.put_file("acme", "api", ".github/workflows/ai-implement.yml", "an old version")
    gh.fail_next("PUT", "/contents/.github/workflows/ai-implement.yml", 502, "Bad Gateway", done=True)
    result = backend.sync_workflows(mapping)
    assert ".github/workflows/ai-implement.yml" in (result.updated if existing else result.created)
    puts = [r for r in gh.requests if r.method == "PUT" and r.path.endswith("/ai-implement.yml")]
    assert len(puts) == 2
    assert backend.sync_workflows(mapping).unchanged  # (as written)


@pytest.mark.parametrize("gh", ["full"], indirect=True)
def test_an_installation_without_workflows_write_still_dispatches_and_polls(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    """Every token asked for the sync's permissions too (contents and workflows write): an
    installation without them (an organisation installing the workflow files itself, a new
    permission not yet accepted) could neither dispatch nor poll. Only the sync needs them."""
    install(gh, backend)  # (the files, by the first installation)
    gh.installations.clear()
    gh.add_installation("acme", permissions={"actions": "write", "contents": "read", "metadata": "read"})
    TOKENS.clear()
    request = full_request()
    result = backend.dispatch(request)
    [state] = backend.poll_runs([in_flight(request, run_id=result.run_id)])
    assert state.run_id == result.run_id
    backend.cancel(in_flight(request, run_id=result.run_id))
    assert all(r.ok for r in backend.check([sample_mapping()]) if r.name.startswith(("workflow", "gap-fill")))
    with pytest.raises(ProviderError) as refused:
        backend.sync_workflows(sample_mapping())
    assert refused.value.status == 422 and "not granted" in refused.value.message
    asked = [r.json["permissions"] for r in gh.requests if r.path.endswith("/access_tokens")]
    assert {"actions": "write"} in asked and {"actions": "read", "contents": "read"} in asked


def test_sync_twice_writes_once(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    mapping = sample_mapping()
    first = backend.sync_workflows(mapping)
    assert set(first.created) == {
        ".github/workflows/ai-implement.yml",
        ".github/workflows/ai-implement-gap-fill.yml",
    }
    commits = len(gh.commits("acme", "api"))
    second = backend.sync_workflows(mapping)
    assert second.created == () and second.updated == ()
    assert set(second.unchanged) == set(first.created)
    assert len(gh.commits("acme", "api")) == commits == 2
    assert len(gh.server.requests_to("PUT")) == 2
    assert first.warnings == second.warnings == ()


@pytest.mark.parametrize("public_url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_a_sync_for_a_public_url_only_this_host_reaches_writes_the_files_with_a_warning(
    gh: FakeGitHub, public_url: str | None
) -> None:
    """Unset, AIIMPL_PUBLIC_URL is http://127.0.0.1:8000: the workflows installed the session
    program from there and every run failed at its install, though the sync said nothing (only
    ``aiimpl check`` did). The files are still written (a runner on this host reaches it)."""
    settings = github_config(gh) | {"AIIMPL_PUBLIC_URL": public_url}
    backend = GitHubActionsBackend(make_context(settings))
    result = backend.sync_workflows(sample_mapping())
    assert len(result.created) == 2
    host = {"http://127.0.0.1:8000": "127.0.0.1", "http://localhost:8000": "localhost",
            "http://[::1]:8000": "::1"}[public_url]
    assert result.warnings == (
        f"AIIMPL_PUBLIC_URL names {host}, an address of this host only: GitHub's runners cannot reach it, "
        "so their sessions can neither install the session program from it nor report to it and every "
        "job of ENG fails; set it to the URL runners reach this orchestrator at",
    )
    text = gh.file("acme", "api", ".github/workflows/ai-implement.yml")
    assert f"{public_url}/runner/session-package/" in text


@pytest.mark.parametrize(("lifetime", "minutes"), [(None, 70), ("3600", 70), ("7200", 130), ("5401", 101)])
def test_the_workflows_job_timeout_follows_the_session_lifetime(
    gh: FakeGitHub, lifetime: str | None, minutes: int
) -> None:
    """GitHub ends the job at its timeout-minutes as cancelled, which reads as the session's timeout
    only once its lifetime has passed: a fixed 70 cut a longer lifetime short as a plain failure."""
    settings = github_config(gh) | ({"AIIMPL_SESSION_LIFETIME_SECONDS": lifetime} if lifetime else {})
    backend = GitHubActionsBackend(make_context(settings))
    result = backend.sync_workflows(sample_mapping(planning_enabled=True))
    assert len(result.created) == 3
    for name in ("ai-implement.yml", "ai-implement-gap-fill.yml", "ai-implement-planning.yml"):
        text = gh.file("acme", "api", f".github/workflows/{name}")
        assert text == synced(name, minutes)
        assert f"timeout-minutes: {minutes}\n" in text


@pytest.mark.parametrize(("settings", "planning", "said"), [
    ({}, "ai-implement.yml", "planningWorkflowFile must not be ai-implement.yml"),
    ({}, "ai-implement-gap-fill.yml", "planningWorkflowFile must not be ai-implement-gap-fill.yml"),
    ({"AIIMPL_GHA_WORKFLOW_FILE": "mine.yml"}, "mine.yml", "planningWorkflowFile must not be mine.yml"),
], ids=["implementation", "gap-fill", "configured"])
def test_a_planning_workflow_sharing_another_phases_file_is_refused(
    gh: FakeGitHub, settings: dict[str, str], planning: str, said: str
) -> None:
    """Two templates in one file: each sync wrote one over the other, and never settled."""
    backend = GitHubActionsBackend(make_context(github_config(gh) | settings))
    with pytest.raises(ProviderConfigError, match=said):
        backend.validate_mapping({"planningWorkflowFile": planning})
    backend.validate_mapping({"planningWorkflowFile": "ai-implement-planning.yml"})


def test_two_phases_configured_into_one_file_are_refused_by_the_sync(gh: FakeGitHub) -> None:
    settings = github_config(gh) | {"AIIMPL_GHA_GAP_FILL_WORKFLOW_FILE": "ai-implement.yml"}
    backend = GitHubActionsBackend(make_context(settings))
    with pytest.raises(ProviderConfigError, match="would be installed as ai-implement.yml"):
        backend.sync_workflows(sample_mapping())
    assert gh.server.requests_to("PUT") == []


@pytest.mark.parametrize("name", ["AIIMPL_GHA_WORKFLOW_FILE", "AIIMPL_GHA_GAP_FILL_WORKFLOW_FILE"])
@pytest.mark.parametrize("value", ["../../README.md", "/abs.yml", "sub/dir.yml", "a b.yml", "ai.txt"])
def test_a_workflow_file_setting_that_is_no_file_name_is_refused(gh: FakeGitHub, name: str, value: str):
    """A path in the setting was followed: `../../README.md` made the sync read and overwrite the
    repository's README (and say `ok`). `aiimpl config` says it; every use refuses it, writing
    nothing."""
    said = f"{name} must be a workflow file name in .github/workflows"
    assert (GitHubActionsBackend.settings_problem({name: value}) or "").startswith(said)
    backend = GitHubActionsBackend(make_context(github_config(gh) | {name: value}))
    with pytest.raises(ProviderConfigError, match=said):
        backend.sync_workflows(sample_mapping())
    with pytest.raises(ProviderConfigError, match=said):
        backend.validate_mapping({})
    assert gh.server.requests_to("PUT") == []
    for fine in ("", None, "ai-implement.yml", "my_flow-2.yaml"):
        assert GitHubActionsBackend.settings_problem({name: fine}) is None


def test_sync_updates_a_changed_file_with_its_sha(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    gh.put_file("acme", "api", ".github/workflows/ai-implement.yml", "name: old\non: push\njobs: {}\n")
    result = backend.sync_workflows(sample_mapping())
    assert result.updated == (".github/workflows/ai-implement.yml",)
    assert gh.file("acme", "api", ".github/workflows/ai-implement.yml") == synced("ai-implement.yml")
    put = gh.server.requests_to("PUT", "/contents/.github/workflows/ai-implement.yml")[0]
    assert put.json["sha"]


def test_sync_failure_reports_githubs_message(gh: FakeGitHub) -> None:
    gh.add_repo("other", "repo")
    gh.add_installation("other", permissions={"contents": "write", "actions": "write", "metadata": "read"})
    backend = GitHubActionsBackend(make_context(github_config(gh)))
    with pytest.raises(ProviderError) as err:
        backend.sync_workflows(sample_mapping(owner="other", repo="repo"))
    assert err.value.message == "The permissions requested are not granted to this installation."


def test_a_repository_without_the_app_is_said_so_not_githubs_not_found(gh: FakeGitHub) -> None:
    """GitHub's answer to the installation lookup is a bare "Not Found": a sync's error and a
    gap-fill's ``detail`` (which show GitHub's message) said only that, like a missing workflow."""
    gh.add_repo("elsewhere", "ops")  # no installation of the App there
    backend = GitHubActionsBackend(make_context(github_config(gh)))
    with pytest.raises(ProviderError) as synced:
        backend.sync_workflows(sample_mapping(owner="elsewhere", repo="ops"))
    not_installed = "the GitHub App is not installed on elsewhere/ops (or there is no such repository)"
    assert synced.value.message == not_installed
    with pytest.raises(DispatchError) as dispatched:
        backend.dispatch_gap_fill(full_request(mapping=sample_mapping(owner="elsewhere", repo="ops"),
                                               phase=Phase.GAP_ANALYSIS))
    assert dispatched.value.status == 404
    assert dispatched.value.detail == not_installed  # gap-fill's detail


def test_validate_mapping_checks_the_planning_workflow_file(backend: GitHubActionsBackend) -> None:
    backend.validate_mapping({"planningWorkflowFile": "plan.yml"})
    with pytest.raises(ProviderConfigError) as err:
        backend.validate_mapping({"planningWorkflowFile": "../evil.yml"})
    assert "planningWorkflowFile" in err.value.message
    with pytest.raises(ProviderConfigError):
        backend.validate_mapping({"planningWorkflowFile": "plan.yml\n"})  # $ matches before a newline


def test_not_configured_without_github_settings() -> None:
    assert GitHubActionsBackend(make_context({})).is_configured() is False


def running_run(gh: FakeGitHub, backend: GitHubActionsBackend) -> tuple[DispatchRequest, Run]:
    """Job 1 dispatched, and its run on GitHub in progress."""
    install(gh, backend)
    request = full_request()
    backend.dispatch(request)
    run = gh.run_named("job-1")
    gh.advance_run(run.id, "in_progress")
    return request, run


def test_a_linked_run_beyond_the_listing_is_read_directly(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    request, run = running_run(gh, backend)
    run.created_at = datetime.now(UTC) - timedelta(days=3)  # older than any listing reaches
    [state] = backend.poll_runs([in_flight(request, run_id=str(run.id))])
    assert state.phase is RunPhase.RUNNING and state.run_id == str(run.id)
    assert gh.server.requests_to("GET", f"/actions/runs/{run.id}")
    # a linked run GitHub no longer knows is reported not found
    del gh.runs[run.id]
    [state] = backend.poll_runs([in_flight(request, run_id=str(run.id))])
    assert state.phase is RunPhase.NOT_FOUND


@pytest.mark.parametrize("gh", ["full"], indirect=True)  # cancelling is outside the fast subset
def test_cancel_asks_github_once_per_linked_run(
    gh: FakeGitHub, backend: GitHubActionsBackend, caplog: pytest.LogCaptureFixture
) -> None:
    request, run = running_run(gh, backend)

    other = full_request(2)  # not linked, and no run of its name listed yet: nothing to cancel
    backend.cancel(in_flight(other))
    assert gh.server.requests_to("POST", "/cancel") == []

    backend.cancel(in_flight(request, run_id=str(run.id)))
    assert (gh.runs[run.id].status, gh.runs[run.id].conclusion) == ("completed", "cancelled")
    [state] = backend.poll_runs([in_flight(request, run_id=str(run.id))])
    assert state.phase is RunPhase.FAILED and "was cancelled" in (state.detail or "")

    caplog.clear()
    backend.cancel(in_flight(request, run_id=str(run.id)))  # completed already: GitHub's 409
    assert len(gh.server.requests_to("POST", f"/actions/runs/{run.id}/cancel")) == 2
    assert not [r for r in caplog.records if r.levelname == "WARNING"]

    gh.fail_next("POST", r"/cancel$", 500, "Server Error")
    backend.cancel(in_flight(request, run_id=str(run.id)))  # best effort: logged, not raised
    assert "cancelling workflow run" in caplog.text and "Server Error" in caplog.text


@pytest.mark.parametrize("gh", ["full"], indirect=True)  # cancelling is outside the fast subset
def test_cancel_of_a_run_not_linked_yet_finds_it_by_its_name(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    # an operator cancels the job before a reconcile cycle linked its run: the job ends, so no
    # later cycle would look for the run, which must not go on
    request, run = running_run(gh, backend)
    backend.dispatch(full_request(11))  # another job's run, named alike ("job-1" in "job-11")
    backend.cancel(in_flight(request))
    [cancel] = gh.server.requests_to("POST", "/cancel")
    assert cancel.path.endswith(f"/actions/runs/{run.id}/cancel")
    assert (gh.runs[run.id].status, gh.runs[run.id].conclusion) == ("completed", "cancelled")
    assert [r.status for r in gh.runs.values() if r.id != run.id] == ["queued"]


def test_a_listing_github_ends_before_the_oldest_dispatch_calls_no_run_past_it_missing(
    gh: FakeGitHub, backend: GitHubActionsBackend, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """GitHub lists at most 1,000 runs of a listing filtered by event (here: two pages of one). A
    job not linked yet whose run lay past the pages read was reported not found, and ended
    ``run_not_found`` though its run ran; it is left as it is for the cycle, as on a failed listing."""
    from aiimpl_core.github import client as github_client

    monkeypatch.setattr(github_client, "RUNS_PER_PAGE", 1)
    monkeypatch.setattr(github_client, "RUN_PAGES", 2)
    install(gh, backend)
    now = datetime.now(UTC)
    requests_ = {n: full_request(n) for n in (1, 2, 3, 4, 5)}
    for n in (1, 2, 3):
        backend.dispatch(requests_[n])
        gh.run_named(f"job-{n}").created_at = now - timedelta(minutes=40 - 10 * n)  # 30, 20, 10 ago
    minutes_ago = {1: 31, 2: 21, 3: 11, 4: 5, 5: 45}  # dispatched; 4 and 5 made no run
    runs = [in_flight(requests_[n], dispatched_at=now - timedelta(minutes=m)) for n, m in minutes_ago.items()]
    gh.server.reset()

    states = {s.job_id: s for s in backend.poll_runs(runs)}

    assert len(gh.server.requests_to("GET", "/actions/runs")) == 2, "two pages, all there are"
    assert states[3].phase is RunPhase.PENDING and states[2].phase is RunPhase.PENDING
    # job 4 was dispatched after the oldest run listed: its run would have been listed
    assert states[4].phase is RunPhase.NOT_FOUND
    # jobs 1 and 5 were dispatched before it: their runs may lie past what GitHub listed
    assert 1 not in states and 5 not in states
    assert "fill all 2 pages of 1 read" in caplog.text and "left as they are" in caplog.text
    # a linked run past the pages read is read by its id, as before
    run1 = gh.run_named("job-1")
    linked = in_flight(requests_[1], run_id=str(run1.id), dispatched_at=now - timedelta(minutes=31))
    [state] = backend.poll_runs([linked])
    assert state.phase is RunPhase.PENDING and state.run_id == str(run1.id)


@pytest.mark.parametrize("gh", ["full"], indirect=True)  # cancelling is outside the fast subset
def test_cancel_of_a_run_not_linked_past_a_listing_cut_short_says_so(
    gh: FakeGitHub, backend: GitHubActionsBackend, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The run was said not to be listed yet (and left to go on) when the listing merely ended
    before it; one among the pages read is found and cancelled."""
    from aiimpl_core.github import client as github_client

    monkeypatch.setattr(github_client, "RUNS_PER_PAGE", 1)
    monkeypatch.setattr(github_client, "RUN_PAGES", 1)
    install(gh, backend)
    old, new = full_request(1), full_request(2)
    backend.dispatch(old)
    gh.run_named("job-1").created_at = datetime.now(UTC) - timedelta(minutes=10)
    backend.dispatch(new)
    caplog.set_level("INFO")
    backend.cancel(in_flight(old, dispatched_at=datetime.now(UTC) - timedelta(minutes=11)))
    assert gh.server.requests_to("POST", "/cancel") == []
    assert "no workflow run named" not in caplog.text
    assert "cancelling workflow run 'AI-Implement ENG-1 implementation job-1' failed" in caplog.text
    assert "fill all 1 pages of 1 read" in caplog.text
    backend.cancel(in_flight(new, dispatched_at=datetime.now(UTC) - timedelta(minutes=11)))
    [cancel] = gh.server.requests_to("POST", "/cancel")
    assert cancel.path.endswith(f"/actions/runs/{gh.run_named('job-2').id}/cancel")
