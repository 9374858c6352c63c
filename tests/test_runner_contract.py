"""The runner contract of the test kit (``aiimpl_core.testing.contract``) against backends that break
it the ways a third party's do: it fails what the orchestrator would refuse or never reconcile, says
why, and passes what the orchestrator takes."""
from __future__ import annotations

import inspect
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from aiimpl_core.providers import ConfigVar, RunnerBackend
from aiimpl_core.testing.contract import (
    RunnerBackendContract,
    _another_request,
    another_instance,
    make_context,
    sample_dispatch_request,
    sample_in_flight_run,
)
from aiimpl_core.types import DispatchResult, InFlightRun, RunPhase, RunState, SessionInfo

FAILED = (AssertionError, pytest.fail.Exception)


class _Store:
    """Where the backends below keep their runs: shared by every instance, as a remote system is."""

    runs: dict[int, str] = {}
    env: dict[int, dict[str, str]] = {}
    shown: dict[int, dict[str, Any]] = {}  # what the remote shows of a run (its name, its labels)


class Good(RunnerBackend):
    """A backend that keeps the contract: the ones below each break one rule of it."""

    id = "good"
    display_name = "Good"
    config_vars = (ConfigVar("AIIMPL_GOOD_DIR", "where runs go"),)

    def is_configured(self) -> bool:
        return bool(self.context.setting("AIIMPL_GOOD_DIR"))

    def dispatch(self, request: Any) -> DispatchResult:
        if not self.is_configured():
            raise self.not_configured()
        _Store.runs[request.job_id] = "running"
        _Store.env[request.job_id] = dict(request.env)
        _Store.shown[request.job_id] = {"name": request.run_name, "labels": self.labels(request)}
        return DispatchResult(run_id=f"run-{request.job_id}")

    def labels(self, request: Any) -> dict[str, str]:
        return {"job": str(request.job_id), "issue": request.issue_key}

    def poll_runs(self, runs: Any) -> list[RunState]:
        return [RunState(r.job_id, self.phase(r)) for r in runs]

    def phase(self, run: InFlightRun) -> Any:
        return RunPhase.RUNNING if run.job_id in _Store.runs else RunPhase.NOT_FOUND

    def cancel(self, run: InFlightRun) -> None:
        _Store.runs.pop(run.job_id, None)


def _backend(**attrs: Any) -> RunnerBackend:
    settings = {"AIIMPL_GOOD_DIR": "/runs", **attrs.pop("settings", {})}
    return type("Broken", (Good,), attrs)(make_context(settings))


def _fails(test: str, backend: RunnerBackend, **fixtures: Any) -> str:
    """What the contract's ``test`` says about ``backend`` (it must fail)."""
    with pytest.raises(FAILED) as err:
        _run(test, backend, **fixtures)
    return str(err.value)


def _run(test: str, backend: RunnerBackend, contract: type = RunnerBackendContract, **fixtures: Any) -> None:
    """``test`` of ``contract`` on ``backend``, with the contract's default fixtures."""
    parameters = inspect.signature(getattr(contract, test)).parameters
    if "another_runner_backend" in parameters:
        fixtures.setdefault("another_runner_backend", another_instance(backend))
    if "dispatch_request" in parameters:
        fixtures.setdefault("dispatch_request", sample_dispatch_request(job_id=7))
    if "another_dispatch_request" in parameters:
        fixtures.setdefault("another_dispatch_request", _another_request(fixtures["dispatch_request"]))
    if "contract_session_env" in parameters:
        fixtures.setdefault("contract_session_env", lambda run: _Store.env.get(run.job_id))
    if "contract_run_metadata" in parameters:
        fixtures.setdefault("contract_run_metadata", lambda run: _Store.shown.get(run.job_id))
    getattr(contract(), test)(backend, **fixtures)


@pytest.fixture(autouse=True)
def _empty_store() -> None:
    _Store.runs.clear()
    _Store.env.clear()
    _Store.shown.clear()


RUN_TESTS = ["test_contract_dispatch_then_poll", "test_contract_secrets_stay_out_of_run_ids_and_urls",
             "test_contract_another_instance_polls_and_cancels_the_run",
             "test_contract_polls_two_runs_in_one_call", "test_contract_polls_and_cancels_an_unlinked_run",
             "test_contract_dispatch_hands_the_env_to_the_run", "test_contract_cancel_ends_the_run",
             "test_contract_secrets_stay_out_of_what_the_remote_shows"]


@pytest.mark.parametrize("test", [*RUN_TESTS, "test_contract_constructs_without_settings",
                                  "test_contract_unconfigured_dispatch_raises_a_project_error",
                                  "test_contract_check_answers_check_results"])
def test_runner_contract_passes_a_backend_that_keeps_it(test: str) -> None:
    _run(test, _backend())


@pytest.mark.parametrize("test", RUN_TESTS)
def test_runner_contract_takes_a_phase_given_as_its_string_value(test: str) -> None:
    """The reconciler takes ``"running"`` for ``RunPhase.RUNNING``: so does the contract."""
    _run(test, _backend(phase=lambda self, run: Good.phase(self, run).value))


@pytest.mark.parametrize(("field", "value", "said"), [
    ("timeout_reason", "too-long", "the timeout_reason 'too-long', not a TimeoutReason"),
    ("log_label", "oops", "the log_label 'oops', not a LogLabel"),
    ("exit_code", "1", "the exit_code '1', not an integer"),
    ("detail", 42, "the detail 42, not a string"),
])
def test_runner_contract_fails_a_state_the_reconciler_refuses(field: str, value: Any, said: str) -> None:
    """One such state fails the whole poll of the backend in the orchestrator."""
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        return [RunState(r.job_id, RunPhase.RUNNING, **{field: value}) for r in runs]

    message = _fails("test_contract_dispatch_then_poll", _backend(poll_runs=poll_runs))
    assert f"poll_runs of 'good' answered {said}" in message


def test_runner_contract_says_what_poll_runs_must_answer() -> None:
    message = _fails("test_contract_dispatch_then_poll", _backend(poll_runs=lambda self, runs: None))
    assert message.startswith("poll_runs of 'good' answered NoneType, not a list of RunState")


def test_runner_contract_fails_a_poll_that_leaves_out_the_run_it_dispatched() -> None:
    """A run left out is left as it is: its job would wait until 10 minutes past its lifetime."""
    message = _fails("test_contract_dispatch_then_poll", _backend(poll_runs=lambda self, runs: []))
    assert message.startswith("poll_runs left out job 7, which it was asked about")


def test_runner_contract_names_the_job_ids_it_was_not_asked_about() -> None:
    """A job id of another type (``'7'`` for ``7``) is a state the reconciler never matches."""
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        return [RunState(str(r.job_id), RunPhase.RUNNING) for r in runs]

    message = _fails("test_contract_dispatch_then_poll", _backend(poll_runs=poll_runs))
    assert message.startswith("poll_runs answered states for job ids it was not asked about: '7' (str)")


def test_runner_contract_fails_two_states_for_one_job() -> None:
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        return [RunState(r.job_id, phase) for r in runs for phase in (RunPhase.RUNNING, RunPhase.FAILED)]

    message = _fails("test_contract_dispatch_then_poll", _backend(poll_runs=poll_runs))
    assert message.startswith("poll_runs answered 2 states for job 7")


@pytest.mark.parametrize(("result", "said"), [
    (None, "dispatch answered None, not a DispatchResult"),
    (DispatchResult(run_id=7), "DispatchResult.run_id is int 7, not a string or None"),
    (DispatchResult(run_id="r1", run_url={"href": "https://runs.test/r1"}),
     "DispatchResult.run_url is dict {'href': 'https://runs.test/r1'}, not a string or None"),
    (DispatchResult(run_id="r" * 256), "DispatchResult.run_id is 256 characters long"),
])
@pytest.mark.parametrize("test", RUN_TESTS)
def test_runner_contract_fails_a_dispatch_result_the_orchestrator_cannot_store(
    test: str, result: Any, said: str
) -> None:
    """A run id or URL the job's row cannot take leaves the job without its run (its session started)."""
    message = _fails(test, _backend(dispatch=lambda self, request: result))
    assert message.startswith(said)


def test_runner_contract_fails_a_polled_run_id_longer_than_a_job_keeps() -> None:
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        return [RunState(r.job_id, RunPhase.RUNNING, run_id="r" * 300) for r in runs]

    message = _fails("test_contract_dispatch_then_poll", _backend(poll_runs=poll_runs))
    assert message.startswith("RunState.run_id is 300 characters long")


def test_runner_contract_says_what_a_cancel_that_raises_for_a_run_already_gone_must_do() -> None:
    def cancel(self: Any, run: InFlightRun) -> None:
        del _Store.runs[run.job_id]

    message = _fails("test_contract_another_instance_polls_and_cancels_the_run", _backend(cancel=cancel))
    assert message.startswith("cancel raised KeyError (7) for a run it had cancelled already")


def test_runner_contract_says_what_a_poll_of_a_cancelled_run_must_answer() -> None:
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        if any(r.job_id not in _Store.runs for r in runs):
            raise LookupError("no such run")
        return Good.poll_runs(self, runs)

    message = _fails("test_contract_another_instance_polls_and_cancels_the_run",
                     _backend(poll_runs=poll_runs))
    assert message.startswith("poll_runs raised LookupError (no such run) for a run that was cancelled")
    assert "answer NOT_FOUND" in message


def test_contract_fails_a_constructor_that_raises_without_its_settings() -> None:
    def __init__(self: Any, context: Any) -> None:  # noqa: N807
        super(Good, self).__init__(context)
        self.root = context.setting("AIIMPL_GOOD_DIR").rstrip("/")

    message = _fails("test_contract_constructs_without_settings", _backend(__init__=__init__))
    assert message.startswith("Broken(context) raised AttributeError")
    assert "is_configured()" in message


def test_contract_constructs_with_the_defaults_of_the_config_vars() -> None:
    """The orchestrator answers a ``ConfigVar``'s default for an unset variable: so does the kit."""
    def __init__(self: Any, context: Any) -> None:  # noqa: N807
        super(Good, self).__init__(context)
        self.command = context.setting("AIIMPL_GOOD_COMMAND").split()

    vars_ = (*Good.config_vars, ConfigVar("AIIMPL_GOOD_COMMAND", "runs a session", default="run it"))
    backend = _backend(__init__=__init__, config_vars=vars_, settings={"AIIMPL_GOOD_COMMAND": "run"})
    _run("test_contract_constructs_without_settings", backend)


def test_runner_contract_fails_an_unconfigured_dispatch_that_raises_a_foreign_error() -> None:
    """The job's failure then says only ``unexpected error (TypeError)``, not what to set."""
    def dispatch(self: Any, request: Any) -> DispatchResult:
        return DispatchResult(run_id=self.context.setting("AIIMPL_GOOD_DIR") + "/run")

    message = _fails("test_contract_unconfigured_dispatch_raises_a_project_error",
                     _backend(dispatch=dispatch))
    assert message.startswith("dispatch raised TypeError (unsupported operand type(s) for +: 'NoneType' and "
                              "'str') while is_configured() is false")


def test_runner_contract_fails_an_unconfigured_dispatch_that_starts_a_run() -> None:
    message = _fails("test_contract_unconfigured_dispatch_raises_a_project_error",
                     _backend(dispatch=lambda self, request: DispatchResult(run_id="r1")))
    assert message.startswith("dispatch answered DispatchResult(run_id='r1'")


def test_runner_contract_skips_the_unconfigured_dispatch_of_a_backend_that_needs_no_setting() -> None:
    with pytest.raises(pytest.skip.Exception):
        _run("test_contract_unconfigured_dispatch_raises_a_project_error",
             _backend(is_configured=lambda self: True))


def test_contract_takes_a_check_that_answers_none() -> None:
    """``aiimpl check`` reports such a provider configured, with no further check."""
    _run("test_contract_check_answers_check_results", _backend(check=lambda self, mappings: None))


def test_sample_in_flight_run_is_the_run_the_reconciler_asks_about() -> None:
    request = sample_dispatch_request(job_id=3)
    run = sample_in_flight_run(request, DispatchResult(run_id="r3"))
    assert (run.job_id, run.run_id, run.run_name, run.issue_key) == (3, "r3", request.run_name, "ENG-1")
    assert sample_in_flight_run(request).run_id is None
    assert sample_in_flight_run(request, lifetime_seconds=60).lifetime_seconds == 60



# -- two runs polled in one call --------------------------------------------------------------


def _by_position(run_ids: bool) -> Any:
    """A ``poll_runs`` that lists the runs once (newest first) and pairs them with the runs asked
    about by position."""
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        listing = sorted(_Store.runs, reverse=True)
        return [RunState(run.job_id, RunPhase.RUNNING if index < len(listing) else RunPhase.NOT_FOUND,
                         run_id=f"run-{listing[index]}" if run_ids and index < len(listing) else None)
                for index, run in enumerate(runs)]
    return poll_runs


def test_runner_contract_fails_a_poll_that_pairs_runs_with_a_listing_by_position() -> None:
    """Cancelling one of two runs shows on the other job: the reconciler would end the wrong job."""
    message = _fails("test_contract_polls_two_runs_in_one_call", _backend(poll_runs=_by_position(False)))
    assert message.startswith("poll_runs answered not_found for job 8, whose run nobody cancelled, after job "
                              "7's run was cancelled (it answered running before)"), message
    assert "not by position" in message


def test_runner_contract_fails_a_poll_that_answers_a_run_with_another_runs_id() -> None:
    message = _fails("test_contract_polls_two_runs_in_one_call", _backend(poll_runs=_by_position(True)))
    assert message.startswith("poll_runs answered job 7 with run_id 'run-8', job 8's run"), message


def test_runner_contract_fails_a_poll_that_answers_one_of_two_runs() -> None:
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        return Good.poll_runs(self, runs[:1])

    message = _fails("test_contract_polls_two_runs_in_one_call", _backend(poll_runs=poll_runs))
    assert message.startswith("poll_runs left out job 8 of jobs [7, 8], asked about in one call"), message


def test_another_dispatch_request_is_for_the_next_job_and_issue() -> None:
    request = _another_request(sample_dispatch_request(job_id=7))
    assert (request.job_id, request.issue_key, request.branch) == (8, "ENG-2", "ai/ENG-2")
    assert request.run_name == "AI-Implement ENG-2 implementation job-8"
    assert request.env["AIIMPL_JOB_ID"] == "8" and request.env["AIIMPL_NONCE"] == "n0nce"


# -- a run just dispatched is found ------------------------------------------------------------


def _never_finds() -> RunnerBackend:
    return _backend(poll_runs=lambda self, runs: [RunState(r.job_id, RunPhase.NOT_FOUND) for r in runs])


@pytest.mark.parametrize("test", ["test_contract_dispatch_then_poll",
                                  "test_contract_polls_two_runs_in_one_call",
                                  "test_contract_another_instance_polls_and_cancels_the_run"])
def test_runner_contract_fails_a_backend_that_never_finds_its_runs(test: str) -> None:
    """Every job would end ``run_not_found``."""
    message = _fails(test, _never_finds())
    assert message.startswith("poll_runs answered NOT_FOUND for job 7 (run_id 'run-7') right after its "
                              "dispatch"), message
    assert "runs_listed_late = True" in message


class _ListedLate(RunnerBackendContract):
    runs_listed_late = True


def test_runner_contract_takes_not_found_right_after_dispatch_from_a_remote_that_lists_runs_late() -> None:
    _run("test_contract_dispatch_then_poll", _never_finds(), contract=_ListedLate)


# -- another instance is another process's -----------------------------------------------------


class InItsModule(Good):
    """Keeps its runs in its module (``_Store``), which another process does not share."""


class Spooled(Good):
    """Keeps its runs in files, where every process finds them."""

    def dispatch(self, request: Any) -> DispatchResult:
        Path(self.context.setting("AIIMPL_GOOD_DIR"), str(request.job_id)).write_text(
            json.dumps(request.env))
        return DispatchResult(run_id=f"run-{request.job_id}")

    def phase(self, run: InFlightRun) -> Any:
        found = os.path.exists(os.path.join(self.context.setting("AIIMPL_GOOD_DIR"), str(run.job_id)))
        return RunPhase.RUNNING if found else RunPhase.NOT_FOUND

    def cancel(self, run: InFlightRun) -> None:
        Path(self.context.setting("AIIMPL_GOOD_DIR"), str(run.job_id)).unlink(missing_ok=True)


def test_runner_contract_fails_a_backend_that_keeps_its_runs_in_its_module() -> None:
    message = _fails("test_contract_another_instance_polls_and_cancels_the_run",
                     InItsModule(make_context({"AIIMPL_GOOD_DIR": "/runs"})))
    assert message.startswith(
        "the instance that dispatched reports running, another instance not_found"), message
    assert "nor in a module" in message


def test_runner_contract_passes_a_backend_that_keeps_its_runs_where_every_process_finds_them(
    tmp_path: Path,
) -> None:
    _run("test_contract_another_instance_polls_and_cancels_the_run",
         Spooled(make_context({"AIIMPL_GOOD_DIR": str(tmp_path)})))


def test_another_instance_is_of_a_fresh_copy_of_the_backends_module() -> None:
    backend = InItsModule(make_context({"AIIMPL_GOOD_DIR": "/runs"}))
    other = another_instance(backend)
    assert type(other) is not InItsModule and type(other).__qualname__ == "InItsModule"
    assert isinstance(other, RunnerBackend) and other.context is backend.context
    made_in_a_function = _backend()  # no fresh copy defines it: built as it is
    assert type(another_instance(made_in_a_function)) is type(made_in_a_function)


# -- a run not linked yet ----------------------------------------------------------------------


def test_runner_contract_fails_a_poll_that_raises_for_an_unlinked_run() -> None:
    """After ``DispatchUnanswered`` the reconciler polls the run with ``run_id`` ``None``."""
    def poll_runs(self: Any, runs: Any) -> list[RunState]:
        return [RunState(r.job_id, RunPhase.RUNNING, run_id=r.run_id.strip()) for r in runs]

    message = _fails("test_contract_polls_and_cancels_an_unlinked_run", _backend(poll_runs=poll_runs))
    assert message.startswith("poll_runs raised AttributeError ('NoneType' object has no attribute 'strip') "
                              "for a run with run_id None"), message


def test_runner_contract_fails_a_cancel_that_raises_for_an_unlinked_run() -> None:
    def cancel(self: Any, run: InFlightRun) -> None:
        _Store.runs.pop(int(run.run_id.removeprefix("run-")), None)

    message = _fails("test_contract_polls_and_cancels_an_unlinked_run", _backend(cancel=cancel))
    assert message.startswith("cancel raised AttributeError ('NoneType' object has no attribute "
                              "'removeprefix') for a run with run_id None"), message


# -- the env reaches the run -------------------------------------------------------------------


def test_runner_contract_fails_a_dispatch_that_drops_the_env() -> None:
    """The session could never call back."""
    def dispatch(self: Any, request: Any) -> DispatchResult:
        _Store.runs[request.job_id] = "running"
        _Store.env[request.job_id] = {}
        return DispatchResult(run_id=f"run-{request.job_id}")

    message = _fails("test_contract_dispatch_hands_the_env_to_the_run", _backend(dispatch=dispatch))
    assert message.startswith("the run of job 7 started without AIIMPL_JOB_ID, AIIMPL_NONCE, AIIMPL_URL of "
                              "request.env"), message


def test_runner_contract_skips_the_env_without_a_contract_session_env_fixture() -> None:
    with pytest.raises(pytest.skip.Exception):
        _run("test_contract_dispatch_hands_the_env_to_the_run", _backend(), contract_session_env=None)


# -- a cancel stops the run --------------------------------------------------------------------


class _QuickCancel(RunnerBackendContract):
    cancel_ends_within = 0.5


def test_runner_contract_fails_a_cancel_that_stops_nothing() -> None:
    """The run's session would go on with the job's branch and credentials after the job ended."""
    backend = _backend(cancel=lambda self, run: None)
    with pytest.raises(FAILED) as err:
        _run("test_contract_cancel_ends_the_run", backend, contract=_QuickCancel)
    assert str(err.value).startswith("poll_runs still answered running for job 7 (run_id 'run-7') 0.5 s "
                                     "after cancel returned"), err.value
    assert "set cancel_ends_within" in str(err.value)


def test_runner_contract_waits_for_a_run_its_cancel_stops_in_the_background() -> None:
    """As a container's stop grace, or GitHub's asynchronous cancel: reported ended some time later."""
    def cancel(self: Any, run: InFlightRun) -> None:
        stop = threading.Timer(0.3, _Store.runs.pop, (run.job_id, None))
        stop.start()
        self.stops.append(stop)

    backend = _backend(cancel=cancel, stops=[])
    _run("test_contract_cancel_ends_the_run", backend)
    assert not backend.stops[0].is_alive()  # polled until the first cancel's stop was over
    for stop in backend.stops:
        stop.join()


def test_runner_contract_skips_the_cancel_check_of_a_backend_that_keeps_the_base_cancel() -> None:
    """The base class's ``cancel`` does nothing, as documented: its runs meet their lifetime."""
    with pytest.raises(pytest.skip.Exception, match="cancel is the base class's"):
        _run("test_contract_cancel_ends_the_run", _backend(cancel=RunnerBackend.cancel))


# -- what the remote shows of a run ------------------------------------------------------------


def _labelled_with(*names: str) -> Any:
    """A ``labels`` that also labels the run with these variables of its environment."""
    def labels(self: Any, request: Any) -> dict[str, str]:
        return {**Good.labels(self, request), **{name.lower(): request.env[name] for name in names}}
    return labels


def test_runner_contract_fails_a_secret_in_a_runs_labels() -> None:
    """Whoever can list the remote's runs would read the job's nonce, and could report its result."""
    message = _fails("test_contract_secrets_stay_out_of_what_the_remote_shows",
                     _backend(labels=_labelled_with("AIIMPL_NONCE")))
    assert message.startswith("the remote shows a secret of request.env with the run of job 7: AIIMPL_NONCE "
                              "in contract_run_metadata(run)['labels']['aiimpl_nonce']"), message


def test_runner_contract_takes_what_is_not_a_secret_in_a_runs_labels() -> None:
    _run("test_contract_secrets_stay_out_of_what_the_remote_shows",
         _backend(labels=_labelled_with("AIIMPL_URL", "AIIMPL_JOB_ID")))


class _NonceShown(RunnerBackendContract):
    public_secret_names = frozenset({"AIIMPL_NONCE"})


def test_runner_contract_leaves_out_the_secrets_a_remote_shows_on_purpose() -> None:
    """As GitHub Actions' workflow inputs carry the session's one-time nonce: the others are still read."""
    _run("test_contract_secrets_stay_out_of_what_the_remote_shows",
         _backend(labels=_labelled_with("AIIMPL_NONCE")), contract=_NonceShown)
    request = sample_dispatch_request(
        job_id=7, env={**sample_dispatch_request(job_id=7).env, "TEAM_TOKEN": "t0ken-value"},
        secret_names=frozenset({"AIIMPL_NONCE", "TEAM_TOKEN"}))
    with pytest.raises(FAILED, match="TEAM_TOKEN in contract_run_metadata"):
        _run("test_contract_secrets_stay_out_of_what_the_remote_shows",
             _backend(labels=_labelled_with("AIIMPL_NONCE", "TEAM_TOKEN")), contract=_NonceShown,
             dispatch_request=request)


def test_runner_contract_fails_a_secret_in_a_listed_session() -> None:
    """``GET /api/sessions`` shows what ``list_sessions`` answers, unmasked."""
    def list_sessions(self: Any) -> list[SessionInfo]:
        return [SessionInfo(id=f"run-{job_id}", backend="good", state="running", job_id=job_id,
                            log_url=f"https://runs.test/{job_id}?nonce={env['AIIMPL_NONCE']}")
                for job_id, env in _Store.env.items()]

    backend = _backend(supports_sessions=True, list_sessions=list_sessions,
                       destroy_session=lambda self, session_id: True)
    message = _fails("test_contract_secrets_stay_out_of_what_the_remote_shows", backend,
                     contract_run_metadata=None)
    assert message.startswith("the remote shows a secret of request.env with the run of job 7: AIIMPL_NONCE "
                              "in list_sessions()[0]['log_url']"), message


def test_runner_contract_skips_what_the_remote_shows_without_a_fixture_or_sessions() -> None:
    with pytest.raises(pytest.skip.Exception, match="no contract_run_metadata fixture"):
        _run("test_contract_secrets_stay_out_of_what_the_remote_shows", _backend(),
             contract_run_metadata=None)
