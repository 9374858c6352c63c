"""Contract tests per provider kind.

Subclass one in your plugin's test suite and provide the fixtures it names; every test in the
class then runs against your provider::

    from aiimpl_core.testing.contract import RunnerBackendContract

    class TestMyRunner(RunnerBackendContract):
        @pytest.fixture
        def runner_backend(self, ...):
            return MyBackend(make_context(...))

        @pytest.fixture
        def dispatch_request(self):
            return sample_dispatch_request()

``make_context(config, clock=..., secret=...)`` builds the context a provider's constructor takes;
``secret`` is a ``(name, scope) -> str | None`` function standing for the secrets API.
``sample_dispatch_request(job_id, phase, **fields)`` is a request to dispatch, and
``sample_in_flight_run(request, result)`` the run the reconciler then asks ``poll_runs`` and
``cancel`` about.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from ..errors import AiimplError, NotFound, PluginContractError
from ..http import HttpClient
from ..orm import run_name_for
from ..providers import ConfigVar, ModelProvider, ProviderContext, RunnerBackend, TicketingProvider
from ..types import (
    CheckResult,
    Comment,
    DispatchRequest,
    DispatchResult,
    InFlightRun,
    MappingView,
    Phase,
    RunPhase,
    RunState,
    Stage,
    TrackerIssue,
    TriggeredPage,
)


def make_context(
    config: Mapping[str, Any] | None = None, *, provider: type[Any] | None = None, **kw: Any
) -> ProviderContext:
    """A provider context for tests (no app needed).

    :param config: the settings, as the orchestrator's configuration holds them.
    :param provider: a provider class whose ``config_vars`` defaults fill the settings ``config``
        does not give, as the orchestrator does (without it, ``config`` is taken as it is).
    """
    values = dict(config or {})
    for var in getattr(provider, "config_vars", ()) if provider is not None else ():
        if values.get(var.name) in (None, "") and var.default is not None:
            values[var.name] = var.default
    return ProviderContext(config=values, http=lambda base_url="", **o: HttpClient(base_url, **o), **kw)


def sample_mapping(**kw: Any) -> MappingView:
    values: dict[str, Any] = dict(team_key="ENG", owner="acme", repo="api", default_branch="main")
    values.update(kw)
    return MappingView(**values)


def sample_dispatch_request(
    job_id: int = 1, phase: Phase = Phase.IMPLEMENTATION, **kw: Any
) -> DispatchRequest:
    mapping = kw.pop("mapping", None) or sample_mapping()
    values: dict[str, Any] = dict(
        job_id=job_id,
        phase=phase,
        issue_key="ENG-1",
        mapping=mapping,
        branch="ai/ENG-1",
        base_branch=mapping.default_branch,
        run_name=run_name_for("ENG-1", phase.value, job_id),  # as the orchestrator names a run
        env={"AIIMPL_URL": "http://orchestrator.test", "AIIMPL_JOB_ID": str(job_id), "AIIMPL_NONCE": "n0nce"},
        secret_names=frozenset({"AIIMPL_NONCE"}),
    )
    values.update(kw)
    return DispatchRequest(**values)


def sample_in_flight_run(
    request: DispatchRequest, result: DispatchResult | None = None, **kw: Any
) -> InFlightRun:
    """The run the reconciler asks ``poll_runs`` and ``cancel`` about after ``dispatch(request)``
    answered ``result``: its ``run_id`` (``None`` without a result, as for a run not linked yet),
    dispatched now; ``kw`` sets other fields (``started_at``, ``lifetime_seconds``,
    ``dispatched_at``)."""
    run = InFlightRun.of_dispatch(request, result.run_id if result is not None else None, datetime.now(UTC))
    return dataclasses.replace(run, **kw)


def _valid_mapping_dict(**kw: Any) -> dict[str, Any]:
    return {"teamKey": "ENG", "owner": "acme", "repo": "api", "defaultBranch": "main",
            "provider": "anthropic", "executionMode": "github-actions", **kw}


class _ProviderBasics:
    provider_fixture = ""
    base: type = object

    @pytest.fixture
    def provider(self, request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(self.provider_fixture)

    def test_contract_is_concrete_subclass(self, provider: Any) -> None:
        assert isinstance(provider, self.base)
        assert not inspect.isabstract(type(provider))

    def test_contract_has_id_and_display_name(self, provider: Any) -> None:
        assert isinstance(type(provider).id, str) and type(provider).id
        assert isinstance(type(provider).display_name, str) and type(provider).display_name

    def test_contract_config_vars_are_named_for_the_project(self, provider: Any) -> None:
        """A tuple (or list, as the core loads) of ``ConfigVar``, each named ``AIIMPL_…`` (the
        project's namespace: the operator's environment holds others) with a help text."""
        config_vars = type(provider).config_vars
        assert isinstance(config_vars, (tuple, list)), (
            f"config_vars is a {type(config_vars).__name__}, not a tuple (a single ConfigVar needs a "
            "trailing comma: (ConfigVar(...),))"
        )
        for var in config_vars:
            assert isinstance(var, ConfigVar), f"config_vars holds {var!r}, not a ConfigVar"
            assert var.name.startswith("AIIMPL_"), (
                f"ConfigVar {var.name}: a setting's name starts with AIIMPL_ (e.g. AIIMPL_{var.name})")
            assert var.help, f"ConfigVar {var.name} has no help (aiimpl config shows it)"

    def test_contract_is_configured_is_bool(self, provider: Any) -> None:
        assert isinstance(provider.is_configured(), bool)

    def test_contract_constructs_without_settings(self, provider: Any) -> None:
        """The orchestrator builds every installed provider, configured or not: a missing setting is
        for ``is_configured()`` to report (``aiimpl check``, the setup hint), not for the constructor
        to raise (the provider would then fail every use with "could not be set up")."""
        bare = _unconfigured(provider)
        assert isinstance(bare.is_configured(), bool)

    def test_contract_check_answers_check_results(self, provider: Any) -> None:
        """``check`` (``aiimpl check``; optional) answers one :class:`CheckResult` per thing checked,
        or raises one of the project's errors (reported as a failed connection)."""
        if not provider.is_configured():
            pytest.skip("check is only called on a configured provider")
        try:
            answer = provider.check([])
        except AiimplError:
            return
        # no result at all (None) reports the provider configured, with no further check
        for result in list(answer or ()):
            assert isinstance(result, CheckResult), result
            assert isinstance(result.name, str) and result.name
            assert isinstance(result.ok, bool) and isinstance(result.detail, str)


class TicketingProviderContract(_ProviderBasics):
    """Fixtures: ``ticketing_provider`` (bound to a fake server holding at least one triggered
    issue) and ``contract_issue_key`` (the key of that issue); optionally
    ``contract_missing_issue_key`` (a key the tracker has no issue of)."""

    provider_fixture = "ticketing_provider"
    base = TicketingProvider

    @pytest.fixture
    def contract_done_states(self) -> frozenset[str]:
        """The names of the states ``get_issue`` reports (in ``TrackerIssue.state``) for an issue
        ``mark_done`` closed, compared case-folded: by default ``Done`` (the completed state Linear
        and Jira name so, and the kit's ``FakeTracker``). Override it with your tracker's, as your
        fake server holds them; a ``stage`` of ``Stage.DONE`` is taken too."""
        return frozenset({"Done"})

    @pytest.fixture
    def contract_missing_issue_key(self, contract_issue_key: str) -> str:
        """A key the tracker has no issue of: by default ``contract_issue_key`` with 100,000 added to
        its number (``ENG-1`` → ``ENG-100001``). Override it for a key that does not end with a
        number, or a fake that holds such an issue."""
        return _missing_key(contract_issue_key)

    def test_contract_iter_triggered_pages(
        self, provider: TicketingProvider, contract_issue_key: str
    ) -> None:
        team = provider.team_of(contract_issue_key)
        pages = list(provider.iter_triggered([team]))
        assert pages and all(isinstance(p, TriggeredPage) for p in pages)
        assert pages[-1].complete
        issues = [i for p in pages for i in p.issues]
        assert all(isinstance(i, TrackerIssue) for i in issues)
        found = [i for i in issues if i.key == contract_issue_key]
        assert found, "the triggered issue is listed"
        assert found[0].team_key == team and found[0].triggered and found[0].provider == type(provider).id

    def test_contract_iter_triggered_of_no_team_answers(self, provider: TicketingProvider) -> None:
        """The core lists a tracker that no mapping names too, with ``[]`` (its triggered issues show
        as ``no-mapping``): it answers without error, with one empty complete page when it can only
        search mapped teams (a listing that raises backs the tracker off, cycle after cycle)."""
        try:
            pages = list(provider.iter_triggered([]))
        except Exception as exc:  # noqa: BLE001 - the contract names what was raised
            raise AssertionError(
                f"iter_triggered([]) raised {_raised(exc)}: the core calls it with no team while no "
                "mapping names the tracker; yield one empty, complete TriggeredPage when the tracker "
                "can only search mapped teams"
            ) from exc
        assert pages, "iter_triggered([]) yielded no page: yield one empty, complete TriggeredPage"
        assert all(isinstance(p, TriggeredPage) for p in pages), (
            f"iter_triggered([]) yielded {', '.join(sorted({type(p).__name__ for p in pages}))}, not only "
            "TriggeredPages")
        assert pages[-1].complete, "the last page of iter_triggered([]) is not complete"
        assert all(isinstance(i, TrackerIssue) for p in pages for i in p.issues)

    def test_contract_get_issue(self, provider: TicketingProvider, contract_issue_key: str) -> None:
        issue = provider.get_issue(contract_issue_key)
        assert isinstance(issue, TrackerIssue) and issue.key == contract_issue_key
        assert isinstance(issue.description, str)
        assert all(isinstance(c, Comment) for c in issue.comments)

    def test_contract_get_issue_of_a_missing_key_raises_not_found(
        self, provider: TicketingProvider, contract_missing_issue_key: str
    ) -> None:
        """``aiimpl dispatch`` and the outbox tell an issue that is gone from a tracker that failed
        by :class:`~aiimpl_core.errors.NotFound` alone."""
        key = contract_missing_issue_key
        try:
            answer = provider.get_issue(key)
        except NotFound:
            return
        except Exception as exc:  # noqa: BLE001 - the contract names what was raised
            pytest.fail(f"get_issue({key!r}) raised {type(exc).__name__}: {exc}; an issue the tracker does "
                        "not have raises aiimpl_core.errors.NotFound")
        pytest.fail(f"get_issue({key!r}) answered {answer!r}; an issue the tracker does not have raises "
                    "aiimpl_core.errors.NotFound (override contract_missing_issue_key if the fake has it)")

    def test_contract_post_comment_round_trips(
        self, provider: TicketingProvider, contract_issue_key: str
    ) -> None:
        comment = provider.post_comment(contract_issue_key, "contract **check**")
        assert isinstance(comment, Comment)
        bodies = [c.body for c in provider.get_issue(contract_issue_key).comments]
        assert any("contract" in b for b in bodies)

    @pytest.mark.parametrize("retry", [False, True], ids=["first-try", "retry-of-a-try-never-stored"])
    def test_contract_post_comment_once_posts_once(
        self, provider: TicketingProvider, contract_issue_key: str, retry: bool
    ) -> None:
        """The outbox sends every comment through ``post_comment_once``; a retry whose earlier tries
        were never stored posts it too."""
        marker = _marker()
        comment = provider.post_comment_once(contract_issue_key, f"contract {marker}", ref=str(uuid.uuid4()),
                                             retry=retry)
        assert isinstance(comment, Comment), f"post_comment_once answered {comment!r}, not a Comment"
        assert _copies(provider, contract_issue_key, marker) == 1

    def test_contract_post_comment_once_retry_leaves_one_copy(
        self, provider: TicketingProvider, contract_issue_key: str
    ) -> None:
        """A retry after a try that was stored (its answer lost) finds the comment by its ``ref``;
        only a tracker that overrides ``post_comment_once`` can (the default posts again)."""
        marker, ref = _marker(), str(uuid.uuid4())
        first = provider.post_comment_once(contract_issue_key, f"contract {marker}", ref=ref, retry=False)
        again = provider.post_comment_once(contract_issue_key, f"contract {marker}", ref=ref, retry=True)
        assert isinstance(again, Comment), f"post_comment_once answered {again!r}, not a Comment"
        if type(provider).post_comment_once is TicketingProvider.post_comment_once:
            pytest.skip("post_comment_once is the base class's: a retry posts the comment again")
        copies = _copies(provider, contract_issue_key, marker)
        assert copies == 1, f"a retry with the ref of a stored comment left {copies} copies on the issue"
        if first.id is not None and again.id is not None:
            assert again.id == first.id, "a retry answers the comment the first try stored"

    @pytest.mark.parametrize("stage", [Stage.PLANNING, Stage.IMPLEMENTING, Stage.PR_OPENED,
                                       Stage.IMPLEMENTATION_FAILED])
    def test_contract_set_stage_is_idempotent(self, provider: TicketingProvider, contract_issue_key: str,
                                              stage: Stage) -> None:
        provider.set_stage(contract_issue_key, stage)
        once = provider.get_issue(contract_issue_key)
        provider.set_stage(contract_issue_key, stage)
        twice = provider.get_issue(contract_issue_key)
        assert set(once.labels) == set(twice.labels) and once.state == twice.state
        assert not twice.triggered, "a stage the orchestrator sets removes the trigger"
        if stage in (Stage.PLANNING, Stage.IMPLEMENTING, Stage.PR_OPENED):
            assert twice.stage == stage

    @pytest.mark.parametrize("stage", [Stage.PLANNING, Stage.IMPLEMENTING])
    def test_contract_set_stage_takes_the_issue_out_of_the_listing(
        self, provider: TicketingProvider, contract_issue_key: str, stage: Stage
    ) -> None:
        """The stage the core sets when it dispatches an issue takes the trigger away in the listing
        too: a listing that still shows it triggered, once the stage change is delivered, dispatches
        the issue again (docs/engine.md, "Once per trigger"). The contract's fake server shows a
        write in the listing at once; a real tracker's search that lags behind is the core's to
        handle."""
        team = provider.team_of(contract_issue_key)
        provider.set_stage(contract_issue_key, stage)
        listed = [i for p in provider.iter_triggered([team]) for i in p.issues
                  if isinstance(i, TrackerIssue) and i.key == contract_issue_key and i.triggered]
        assert not listed, (
            f"iter_triggered([{team!r}]) still lists {contract_issue_key} as triggered after "
            f"set_stage({contract_issue_key!r}, {stage}): list only the issues that carry the trigger now, "
            "with triggered as get_issue reads it"
        )
        assert not provider.get_issue(contract_issue_key).triggered, (
            f"get_issue reads {contract_issue_key} as triggered after set_stage(…, {stage})")

    def test_contract_mark_done(self, provider: TicketingProvider, contract_issue_key: str,
                                contract_done_states: frozenset[str]) -> None:
        """``mark_done`` closes the issue out in the tracker, as Linear's (its team's completed
        workflow state) and Jira's (a transition to a status of the done category) do: ``get_issue``
        then reads a done state (one of ``contract_done_states``) or the stage ``Stage.DONE``, and no
        trigger. Taking the trigger away alone leaves the issue open. A second call, as the outbox
        may send, keeps it so."""
        provider.mark_done(contract_issue_key)
        done = provider.get_issue(contract_issue_key)
        names = {name.casefold() for name in contract_done_states}
        assert done.stage == Stage.DONE or (done.state or "").casefold() in names, (
            f"get_issue reads {contract_issue_key} after mark_done with state {done.state!r} and stage "
            f"{done.stage}, not done: close the issue out in the tracker (a done status or workflow "
            "state, as Linear's and Jira's mark_done move it to Done), so that get_issue reports it "
            "as its state (override the contract_done_states fixture with your tracker's done states, "
            f"now {sorted(contract_done_states)}) or as stage Stage.DONE; taking the trigger away alone "
            "leaves the issue open"
        )
        assert not done.triggered, (
            f"get_issue reads {contract_issue_key} as triggered after mark_done: an issue that is done "
            "carries no trigger (the poller would dispatch it again)"
        )
        provider.mark_done(contract_issue_key)
        again = provider.get_issue(contract_issue_key)
        assert _done_view(again) == _done_view(done), (
            f"a second mark_done changed {contract_issue_key} again ({_done_view(done)} → "
            f"{_done_view(again)}): an issue already done stays as it is"
        )

    def test_contract_validate_mapping_accepts_its_own_settings(self, provider: TicketingProvider) -> None:
        provider.validate_mapping(_valid_mapping_dict(ticketing={"provider": type(provider).id}))


def _missing_key(key: str) -> str:
    found = re.fullmatch(r"(.*?)([0-9]+)", key)
    if found is None:
        pytest.fail(f"{key!r} does not end with a number: override the contract_missing_issue_key "
                    "fixture with a key the tracker has no issue of")
    return f"{found[1]}{int(found[2]) + 100_000}"


def _done_view(issue: TrackerIssue) -> tuple[Any, ...]:
    """What of an issue tells it is done: its state, stage and whether it carries the trigger."""
    return issue.state, issue.stage, issue.triggered


def _marker() -> str:
    """A word found in one comment only (no markup a tracker could rewrite)."""
    return f"once{uuid.uuid4().hex[:12]}"


def _copies(provider: TicketingProvider, key: str, marker: str) -> int:
    """How many of the issue's comments, read back with ``get_issue``, hold ``marker``."""
    return sum(marker in c.body for c in provider.get_issue(key).comments)


class RunnerBackendContract(_ProviderBasics):
    """Fixtures: ``runner_backend`` and ``dispatch_request`` (a request it can dispatch)."""

    provider_fixture = "runner_backend"
    base = RunnerBackend

    def test_contract_capability_flags_are_bools(self, provider: RunnerBackend) -> None:
        for flag in ("supports_sessions", "supports_secrets", "supports_workflow_sync", "supports_gap_fill",
                     "mapping_selectable"):
            assert isinstance(getattr(type(provider), flag), bool), flag

    def test_contract_capabilities_are_implemented(self, provider: RunnerBackend) -> None:
        cls = type(provider)
        pairs = {"supports_sessions": ("list_sessions", "destroy_session"),
                 "supports_workflow_sync": ("sync_workflows",),
                 "supports_gap_fill": ("dispatch_gap_fill",)}
        for flag, methods in pairs.items():
            if getattr(cls, flag):
                for name in methods:
                    assert getattr(cls, name) is not getattr(RunnerBackend, name), f"{flag} needs {name}()"

    #: ``True`` when the remote lists a run some time after ``dispatch`` answered (an eventually
    #: consistent API): the contract then takes ``NOT_FOUND`` for a run polled right after its dispatch.
    #: Otherwise a run just dispatched must be found (a backend that never finds its runs ends every
    #: job ``run_not_found``).
    runs_listed_late = False

    #: Names in ``request.env`` of the secrets your remote shows with a run on purpose (the
    #: github-actions backend's workflow inputs carry the session's one-time nonce and run tokens:
    #: readable by whoever reads the repository's Actions, masked in the run's logs): the check of
    #: what the remote shows of a run (``contract_run_metadata``) leaves their values out.
    public_secret_names: frozenset[str] = frozenset()

    #: Seconds the contract polls a run for after ``cancel`` returned, until ``poll_runs`` reports it
    #: ended: a remote that stops a run in the background (a container's stop grace, GitHub's
    #: asynchronous cancel) may report it ``RUNNING`` until then. Raise it on the contract's subclass
    #: when your fake remote takes longer.
    cancel_ends_within = 30.0

    @pytest.fixture
    def another_runner_backend(self, provider: RunnerBackend) -> RunnerBackend:
        """A second instance on the same configuration, as another process builds it (the poller
        that dispatched is not the one that polls next, nor the server that cancels): by default
        :func:`another_instance`, the class of a fresh copy of the backend's module, so that what
        the module keeps is not shared. Override it when your fixture does more than
        ``YourBackend(context)`` (``another_instance(your_backend)`` keeps the fresh module)."""
        return another_instance(provider)

    @pytest.fixture
    def another_dispatch_request(self, dispatch_request: DispatchRequest) -> DispatchRequest:
        """A request for another job and issue than ``dispatch_request``'s, in flight at the same
        time: by default ``dispatch_request`` with the next job id and issue number (``ENG-1`` job 7
        → ``ENG-2`` job 8) in its fields, run name and env. Override it when that is not one your
        backend can dispatch."""
        return _another_request(dispatch_request)

    @pytest.fixture
    def contract_session_env(self) -> Any:
        """``None``, or a function taking the :class:`InFlightRun` of a dispatched run and answering
        the environment the remote system starts its session with, as your fake remote sees it:
        the contract then checks that ``request.env`` reached the run (without it the session
        cannot call back)."""
        return None

    @pytest.fixture
    def contract_run_metadata(self) -> Any:
        """``None``, or a function taking the :class:`InFlightRun` of a dispatched run and answering
        what your fake remote shows of the run to whoever can see it there, beyond its id and URL:
        its name, labels or tags, metadata, command line, workflow inputs (a string, or mappings and
        sequences of them, read whole, keys too). The contract then checks that no secret of
        ``request.env`` (those ``request.secret_names`` names) is in it."""
        return None

    def test_contract_dispatch_then_poll(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest
    ) -> None:
        result = _dispatched(provider, dispatch_request)
        run = sample_in_flight_run(dispatch_request, result)
        try:
            states = _states(provider.poll_runs([run]), provider, [run])
            assert run.job_id in {s.job_id for s in states}, (
                f"poll_runs left out job {run.job_id}, which it was asked about right after its dispatch: "
                "answer a RunState for every run asked about (PENDING while it waits, NOT_FOUND when there "
                "is no such run); a run left out is left as it is, and its job waits until 10 minutes "
                "past its lifetime"
            )
            self._assert_found(states, run, "right after its dispatch")
        finally:
            _cancel(provider, run, "after polling it")

    def _assert_found(self, states: Sequence[RunState], run: InFlightRun, when: str,
                      backend: str = "poll_runs") -> None:
        """A run the backend has is not ``NOT_FOUND`` (unless the class sets ``runs_listed_late``)."""
        if self.runs_listed_late:
            return
        phase = _phase_of(states, run)
        assert phase is not RunPhase.NOT_FOUND, (
            f"{backend} answered NOT_FOUND for job {run.job_id} (run_id {run.run_id!r}) {when}: the "
            "reconciler ends a job whose run is not found (run_not_found); find the run by the run_id "
            "dispatch answered, or by request.run_name (set runs_listed_late = True on the contract's "
            "subclass when the remote lists a run only some time after its dispatch)"
        )

    def test_contract_polls_two_runs_in_one_call(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest,
        another_dispatch_request: DispatchRequest,
    ) -> None:
        """The reconciler polls all of a backend's runs in one call: each state is its own run's,
        whatever the order of the runs asked about (not paired with a listing by position)."""
        first = sample_in_flight_run(dispatch_request, _dispatched(provider, dispatch_request))
        second = sample_in_flight_run(another_dispatch_request,
                                      _dispatched(provider, another_dispatch_request))
        runs = [first, second]
        try:
            for asked in (runs, runs[::-1]):
                states = _states(provider.poll_runs(asked), provider, asked)
                _assert_each_answered(states, asked)
                _assert_own_run_ids(states, runs)
                for run in runs:
                    self._assert_found(states, run, "right after its dispatch, polled with another run")
            # a change to one run (its cancel) shows on that run's job alone
            _cancel(provider, first, "after polling it")
            before = {s.job_id: RunPhase(s.phase) for s in states}
            for asked in (runs, runs[::-1]):
                states = _states(provider.poll_runs(asked), provider, asked)
                _assert_each_answered(states, asked, "after one of them was cancelled")
                _assert_own_run_ids(states, runs)
                phase = _phase_of(states, second)
                assert phase not in _ENDED or before.get(second.job_id) in _ENDED, (
                    f"poll_runs answered {phase} for job {second.job_id}, whose run nobody cancelled, "
                    f"after job {first.job_id}'s run was cancelled (it answered "
                    f"{before.get(second.job_id)} before), polling jobs {[r.job_id for r in asked]} in one "
                    "call: match each run to its own state (by its run_id or run_name), not by position"
                )
        finally:
            _cancel(provider, first, "after polling it")
            _cancel(provider, second, "after polling it")

    def test_contract_polls_and_cancels_an_unlinked_run(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest
    ) -> None:
        """After a dispatch whose answer was lost (``DispatchUnanswered``) the reconciler polls and
        cancels the job's run with ``run_id`` ``None``: find it by ``run.run_name`` (or answer
        ``NOT_FOUND``); one poll that raises leaves every run of the backend unreconciled."""
        run = sample_in_flight_run(dispatch_request, _dispatched(provider, dispatch_request))
        unlinked = sample_in_flight_run(dispatch_request)
        try:
            _polled(provider, [unlinked],
                    "for a run with run_id None (not linked yet: its dispatch was not answered)",
                    "find it by run.run_name, or answer NOT_FOUND")
            _cancel(provider, unlinked, "for a run with run_id None (not linked yet)")
        finally:
            _cancel(provider, run, "after polling it")

    def test_contract_cancel_ends_the_run(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest
    ) -> None:
        """``cancel`` stops the run: the core cancels the run of a job an operator cancelled, and of
        one past its lifetime, and counts on it no longer working (its session would go on with the
        job's branch and credentials). ``poll_runs`` then reports the run ended (``NOT_FOUND``,
        ``FAILED``, ``SUCCEEDED`` or ``TIMED_OUT``), within ``cancel_ends_within`` seconds. A class
        that keeps the base class's ``cancel`` (which does nothing: a run meets its lifetime) is
        skipped."""
        if type(provider).cancel is RunnerBackend.cancel:
            pytest.skip("cancel is the base class's: a run meets its lifetime")
        run = sample_in_flight_run(dispatch_request, _dispatched(provider, dispatch_request))
        try:
            _cancel(provider, run, "after dispatching it")
            deadline = time.monotonic() + self.cancel_ends_within
            while True:
                phase = _phase_of(_polled(provider, [run], "for a run that was cancelled",
                                          "answer NOT_FOUND for a run that is gone"), run)
                if phase in _ENDED or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            assert phase in _ENDED, (
                f"poll_runs still answered {phase} for job {run.job_id} (run_id {run.run_id!r}) "
                f"{self.cancel_ends_within:g} s after cancel returned: cancel stops the run (the core "
                "cancels the run of a job an operator cancelled, or past its lifetime, and no longer "
                "follows it), and poll_runs then reports it ended (NOT_FOUND, FAILED, SUCCEEDED or "
                "TIMED_OUT); set cancel_ends_within on the contract's subclass when your remote stops a "
                "run in the background for longer"
            )
        finally:
            _cancel(provider, run, "for a run it had cancelled already")

    def test_contract_dispatch_hands_the_env_to_the_run(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest, contract_session_env: Any
    ) -> None:
        """The session calls back with ``request.env`` (the orchestrator's URL, its job id, its
        nonce): a run started without it never reports."""
        if contract_session_env is None:
            pytest.skip("no contract_session_env fixture: the env a run starts with is not checked")
        run = sample_in_flight_run(dispatch_request, _dispatched(provider, dispatch_request))
        try:
            env = dict(contract_session_env(run) or {})
            missing = sorted(name for name, value in dispatch_request.env.items() if env.get(name) != value)
            assert not missing, (
                f"the run of job {run.job_id} started without {', '.join(missing)} of request.env (or with "
                "another value): the session reads them to call back; pass request.env to the run"
            )
        finally:
            _cancel(provider, run, "after dispatching it")

    def test_contract_unconfigured_dispatch_raises_a_project_error(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest
    ) -> None:
        """``dispatch`` is called for a mapping's jobs whether the backend is configured or not: one
        of the project's errors (``DispatchError``, ``self.not_configured()``) puts its message in
        the job's failure; anything else only its class."""
        bare = _unconfigured(provider)
        if bare.is_configured():
            pytest.skip("the backend is configured without any setting")
        try:
            result = bare.dispatch(dispatch_request)
        except AiimplError:
            return
        except Exception as exc:  # noqa: BLE001 - the contract names what was raised
            raise AssertionError(
                f"dispatch raised {_raised(exc)} while is_configured() is false: the job's failure then "
                f"says only 'unexpected error ({type(exc).__name__})'; raise "
                "aiimpl_core.errors.DispatchError, or self.not_configured(), naming what to set"
            ) from exc
        if isinstance(result, DispatchResult):
            _cancel(bare, sample_in_flight_run(dispatch_request, result), "after an unconfigured dispatch")
        raise AssertionError(
            f"dispatch answered {result!r} while is_configured() is false: raise "
            "aiimpl_core.errors.DispatchError, or self.not_configured(), naming what to set"
        )

    def test_contract_secrets_stay_out_of_run_ids_and_urls(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest
    ) -> None:
        """A run's id and URL are shown in the API, the UI and the ticket's comments, unmasked."""
        secrets = [v for k, v in dispatch_request.env.items() if k in dispatch_request.secret_names and v]
        result = _dispatched(provider, dispatch_request)
        run = sample_in_flight_run(dispatch_request, result)
        try:
            shown = [result.run_id, result.run_url]
            for state in _states(provider.poll_runs([run]), provider, [run]):
                shown += [state.run_id, state.run_url]
            for value in filter(None, shown):
                assert not any(secret in value for secret in secrets), f"a secret is in {value!r}"
        finally:
            _cancel(provider, run, "after polling it")

    def test_contract_secrets_stay_out_of_what_the_remote_shows(
        self, provider: RunnerBackend, dispatch_request: DispatchRequest, contract_run_metadata: Any
    ) -> None:
        """A run's name, labels, metadata and workflow inputs, and the sessions ``list_sessions``
        answers (``GET /api/sessions``), are shown unmasked to whoever can see them: the request's
        secrets (the job's nonce, its run tokens, the team's secrets) stay in the session's
        environment. Without ``contract_run_metadata`` only the sessions are read."""
        if contract_run_metadata is None and not type(provider).supports_sessions:
            pytest.skip("no contract_run_metadata fixture: what the remote shows of a run is not checked")
        secrets = {name: value for name, value in dispatch_request.env.items()
                   if name in dispatch_request.secret_names and name not in self.public_secret_names
                   and isinstance(value, str) and value}
        run = sample_in_flight_run(dispatch_request, _dispatched(provider, dispatch_request))
        try:
            shown = list(_texts(contract_run_metadata(run), "contract_run_metadata(run)")
                         if contract_run_metadata is not None else ())
            if type(provider).supports_sessions:
                for index, session in enumerate(provider.list_sessions()):
                    shown += _texts(dataclasses.asdict(session), f"list_sessions()[{index}]")
            found = sorted({f"{name} in {where}" for where, text in shown
                            for name, value in secrets.items() if value in text})
            assert not found, (
                f"the remote shows a secret of request.env with the run of job {run.job_id}: "
                f"{'; '.join(found)}. Names, labels, metadata and workflow inputs are public to whoever "
                "can see the run: pass secrets in the session's environment only (set "
                "public_secret_names on the contract's subclass for a secret your remote shows on "
                "purpose)"
            )
        finally:
            _cancel(provider, run, "after dispatching it")

    def test_contract_another_instance_polls_and_cancels_the_run(
        self, provider: RunnerBackend, another_runner_backend: RunnerBackend,
        dispatch_request: DispatchRequest,
    ) -> None:
        """Nothing a later call needs lives on the instance; cancelling twice, and polling a run that
        is gone, raise nothing (one poll that raises leaves every run of the backend unreconciled)."""
        result = _dispatched(provider, dispatch_request)
        run = sample_in_flight_run(dispatch_request, result)
        states = _states(provider.poll_runs([run]), provider, [run])
        self._assert_found(states, run, "right after its dispatch")
        seen = {s.job_id: s.phase for s in states}
        other = {s.job_id: s.phase
                 for s in _states(another_runner_backend.poll_runs([run]), another_runner_backend, [run])}
        if seen.get(run.job_id, RunPhase.NOT_FOUND) is not RunPhase.NOT_FOUND:
            assert other.get(run.job_id, RunPhase.NOT_FOUND) is not RunPhase.NOT_FOUND, (
                f"the instance that dispatched reports {seen[run.job_id]}, another instance "
                f"{other.get(run.job_id, 'nothing')}: keep what poll_runs needs in the remote system, the "
                "run id or your own storage, not on the instance nor in a module (another process has "
                "its own; the other instance is of a fresh copy of the backend's module)"
            )
        _cancel(another_runner_backend, run, "from another instance than the one that dispatched it")
        _cancel(another_runner_backend, run, "for a run it had cancelled already")
        _polled(provider, [run], "for a run that was cancelled",
                "answer NOT_FOUND for a run that is gone (a poll that raises leaves every run of the "
                "backend as it is, and backs the backend off)")

    def test_contract_poll_nothing_is_empty(self, provider: RunnerBackend) -> None:
        assert list(provider.poll_runs([])) == []

    def test_contract_sessions_list(self, provider: RunnerBackend) -> None:
        if type(provider).supports_sessions:
            assert isinstance(list(provider.list_sessions()), list)

    def test_contract_validate_mapping_accepts_valid(self, provider: RunnerBackend) -> None:
        provider.validate_mapping(_valid_mapping_dict(executionMode=type(provider).id))


_ENDED = frozenset({RunPhase.NOT_FOUND, RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.TIMED_OUT})


def another_instance(backend: RunnerBackend) -> RunnerBackend:
    """An instance of ``backend``'s class on its context, as another process builds it: the class
    is taken from a fresh copy of the module that defines it (executed again, not put in
    ``sys.modules``), so that state kept in that module is not shared with ``backend``. A class the
    fresh copy does not define under the same name (one made in a function) is built as it is."""
    cls = type(backend)
    fresh = _fresh_module(cls.__module__)
    found: Any = fresh
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, RunnerBackend)):
        found = cls
    return found(backend.context)


def _fresh_module(name: str) -> Any:
    try:
        spec = importlib.util.find_spec(name) if name != "__main__" else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _another_request(request: DispatchRequest) -> DispatchRequest:
    """``request`` for the next job id and the issue numbered one more, in each field that names
    them."""
    job_id = request.job_id + 1
    found = re.fullmatch(r"(.*?)([0-9]+)", request.issue_key)
    key = f"{found[1]}{int(found[2]) + 1}" if found else f"{request.issue_key}-2"

    def moved(text: str) -> str:
        if text == str(request.job_id):  # AIIMPL_JOB_ID
            return str(job_id)
        return re.sub(rf"{re.escape(request.issue_key)}(?![0-9])", key, text)

    run_name = request.run_name
    if run_name == run_name_for(request.issue_key, request.phase.value, request.job_id):
        run_name = run_name_for(key, request.phase.value, job_id)
    else:
        run_name = re.sub(rf"(?<![0-9]){request.job_id}(?![0-9])", str(job_id), moved(run_name))
    return dataclasses.replace(
        request, job_id=job_id, issue_key=key, branch=moved(request.branch), run_name=run_name,
        env={name: moved(value) if isinstance(value, str) else value for name, value in request.env.items()},
    )


def _texts(shown: Any, where: str) -> list[tuple[str, str]]:
    """Each string in ``shown`` (mappings' keys and values, sequences' items, other values as
    ``str``), with where it is (``labels['job']``)."""
    if shown is None:
        return []
    if isinstance(shown, bytes):
        return [(where, shown.decode(errors="replace"))]
    if isinstance(shown, str):
        return [(where, shown)]
    if isinstance(shown, Mapping):
        out = []
        for key, value in shown.items():
            out += [(where, str(key)), *_texts(value, f"{where}[{key!r}]")]
        return out
    if isinstance(shown, Iterable):
        return [text for index, item in enumerate(shown) for text in _texts(item, f"{where}[{index}]")]
    return [(where, str(shown))]


def _phase_of(states: Sequence[RunState], run: InFlightRun) -> RunPhase:
    return next((RunPhase(s.phase) for s in states if s.job_id == run.job_id), RunPhase.NOT_FOUND)


def _assert_each_answered(states: Sequence[RunState], runs: Sequence[InFlightRun], when: str = "") -> None:
    answered = {s.job_id for s in states}
    left = [run.job_id for run in runs if run.job_id not in answered]
    assert not left, (
        f"poll_runs left out job {', '.join(map(str, left))} of jobs {[r.job_id for r in runs]}, asked about "
        f"in one call{' ' + when if when else ''}: answer a RunState for every run asked about (the "
        "reconciler polls all of a backend's runs in one call), matched by its run_id or run_name"
    )


def _assert_own_run_ids(states: Sequence[RunState], runs: Sequence[InFlightRun]) -> None:
    """No state names the run id of another run asked about."""
    ids = {run.job_id: run.run_id for run in runs if run.run_id}
    for state in states:
        others = {job_id for job_id, run_id in ids.items()
                  if run_id == state.run_id and job_id != state.job_id}
        assert not others or ids.get(state.job_id) == state.run_id, (
            f"poll_runs answered job {state.job_id} with run_id {state.run_id!r}, job "
            f"{min(others)}'s run: match each run to its own state (by its run_id or run_name), not by "
            "position in a listing"
        )


def _unconfigured(provider: Any) -> Any:
    """Another instance of ``provider``'s class on a configuration that sets none of its variables:
    ``context.setting`` answers each ``ConfigVar``'s default, as in the orchestrator."""
    cls = type(provider)
    defaults = {var.name: var.default for var in cls.config_vars
                if isinstance(var, ConfigVar) and var.default is not None}
    try:
        return cls(make_context(defaults))
    except Exception as exc:  # noqa: BLE001 - the contract names what was raised
        raise AssertionError(
            f"{cls.__name__}(context) raised {_raised(exc)} with none of its settings set: the "
            "constructor may store the context and read settings, but a missing one is for "
            "is_configured() to report (the orchestrator builds the provider all the same, and each "
            "use would fail with 'could not be set up')"
        ) from exc


def _raised(exc: BaseException) -> str:
    """An exception as a message of the contract names it: its class, and its message if any."""
    return f"{type(exc).__name__} ({exc})" if str(exc) else type(exc).__name__


def _dispatched(provider: RunnerBackend, request: DispatchRequest) -> DispatchResult:
    """``dispatch(request)``'s answer, checked as the orchestrator stores it with the job."""
    result = provider.dispatch(request)
    assert isinstance(result, DispatchResult), f"dispatch answered {result!r}, not a DispatchResult"
    for name in ("run_id", "run_url"):
        value = getattr(result, name)
        assert value is None or isinstance(value, str), (
            f"DispatchResult.{name} is {type(value).__name__} {value!r:.60}, not a string or None"
            + (" (str() a numeric id)" if name == "run_id" else "")
        )
    _fits("DispatchResult.run_id", result.run_id)
    return result


def _fits(name: str, run_id: str | None) -> None:
    """A run id the job's row can hold."""
    from ..orm import Job

    longest = Job.__table__.c.run_id.type.length
    assert run_id is None or len(run_id) <= longest, (
        f"{name} is {len(run_id)} characters long: a job keeps a run id of at most {longest} (keep "
        "a longer name in the remote system, or your own storage, and a short id here)"
    )


def _cancel(backend: RunnerBackend, run: InFlightRun, when: str) -> None:
    try:
        backend.cancel(run)
    except Exception as exc:  # noqa: BLE001 - the contract names what was raised
        raise AssertionError(
            f"cancel raised {_raised(exc)} {when}: cancel is best effort and the core calls it for "
            "runs that may have ended or gone (an operator's cancel, an overrun): do nothing for such "
            "a run"
        ) from exc


def _polled(backend: RunnerBackend, runs: Sequence[InFlightRun], when: str, advice: str) -> list[RunState]:
    """``poll_runs(runs)``'s answer, checked by :func:`_states`; a poll that raises is named, with
    ``when`` it was and ``advice``."""
    try:
        answer = backend.poll_runs(list(runs))
    except Exception as exc:  # noqa: BLE001 - the contract names what was raised
        raise AssertionError(f"poll_runs raised {_raised(exc)} {when}: {advice}") from exc
    return _states(answer, backend, runs)


def _states(
    answer: Iterable[RunState], backend: RunnerBackend, runs: Sequence[InFlightRun]
) -> list[RunState]:
    """``poll_runs``'s answer about ``runs``, checked as the reconciler takes it: anything it refuses
    fails the backend's whole poll; a state for a job it was not asked about is never matched to a
    job (a job id of another type, most often); two states for one job refuse the whole poll when
    they differ, and the kit refuses them either way."""
    # the reconciler's own check, so that the contract takes and refuses what the orchestrator does
    from ..services.reconcile import _run_states

    try:
        states = _run_states(answer, type(backend).id)
    except PluginContractError as exc:
        raise AssertionError(exc.message) from None
    asked = {run.job_id for run in runs}
    unknown = [state.job_id for state in states if state.job_id not in asked]
    assert not unknown, (
        "poll_runs answered states for job ids it was not asked about: "
        + ", ".join(f"{job_id!r} ({type(job_id).__name__})" for job_id in unknown)
        + f"; asked about {sorted(asked)}. A RunState's job_id is its InFlightRun's job_id (an int): "
        "the reconciler ignores any other"
    )
    for job_id, count in Counter(state.job_id for state in states).items():
        assert count == 1, (
            f"poll_runs answered {count} states for job {job_id}: answer one per run (the reconciler "
            "refuses the whole poll when they differ)"
        )
    for state in states:
        _fits("RunState.run_id", state.run_id)
    return states


class ModelProviderContract(_ProviderBasics):
    """Fixture: ``model_provider``; optionally ``valid_mapping`` (a mapping dict it accepts)."""

    provider_fixture = "model_provider"
    base = ModelProvider

    @pytest.fixture
    def valid_mapping(self, provider: ModelProvider) -> dict[str, Any]:
        return _valid_mapping_dict(provider=type(provider).id)

    def test_contract_validate_mapping_accepts_valid(self, provider: ModelProvider,
                                                     valid_mapping: dict[str, Any]) -> None:
        provider.validate_mapping(valid_mapping)

    def test_contract_session_env_is_strings(self, provider: ModelProvider) -> None:
        env = provider.session_env(sample_mapping(provider=type(provider).id, aws_region="us-east-1"))
        assert isinstance(env, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())

    def test_contract_secret_names_are_a_frozenset(self, provider: ModelProvider) -> None:
        names = provider.secret_env_names(sample_mapping(provider=type(provider).id))
        assert isinstance(names, frozenset)
