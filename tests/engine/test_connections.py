"""Connections: a failing tracker or backend delays only itself; one poll_runs call per backend;
the webhook entry point; listing leases."""

from __future__ import annotations

import pytest

from aiimpl_core.errors import PluginContractError, ProviderConfigError, ProviderError
from aiimpl_core.services import poller
from aiimpl_core.services.dispatch import dispatch_issue, run_cycle, run_cycle_for_issues
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker, fail_with
from aiimpl_core.types import RunPhase, RunState, TriggeredPage

from .conftest import jobs_of, later


@pytest.fixture
def aiimpl_plugins(
    tracker: FakeTracker, jira: FakeTracker, runner: FakeRunner, fly: FakeRunner
) -> list[object]:
    return [tracker.plugin, jira.plugin, runner.plugin, fly.plugin]


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (fail_with(500, "HTTP 500 from tracker"), None),
        (fail_with(429, "rate limited", retry_after=120), 120),
        (ProviderError("timed out after 30s", status=None), None),
        (RuntimeError("the plugin crashed"), None),
    ],
    ids=["5xx", "429", "timeout", "plugin-bug"],
)
def test_a_failing_tracker_delays_only_itself(app, tracker, jira, add_mapping, error, retry_after):
    add_mapping("ENG")
    add_mapping("OPS", provider="fake-jira")
    tracker.add("ENG-1")
    jira.add("OPS-1")
    tracker.fail["iter_triggered"] = error

    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == ["OPS-1"]
    assert "fake-tracker" in report.providers_skipped
    backoff = poller.backoff_of("ticketing", "fake-tracker")
    assert backoff is not None
    wait = (backoff.until - report.started_at).total_seconds()
    if retry_after:
        assert retry_after - 2 < wait <= retry_after + 2  # Retry-After is honoured
    else:
        assert 25 < wait <= 32

    # the tracker recovered, but the back-off holds until its time: not even asked
    del tracker.fail["iter_triggered"]
    calls = len(tracker.calls)
    report = run_cycle()
    assert len(tracker.calls) == calls and "fake-tracker" in report.providers_skipped
    report = run_cycle(now=later(seconds=(retry_after or 30) + 5))
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
    assert poller.backoff_of("ticketing", "fake-tracker", later(seconds=10_000)) is None


def test_back_off_grows_with_failures_in_a_row(app, tracker, add_mapping):
    add_mapping("ENG")
    tracker.fail["iter_triggered"] = fail_with(503)
    waits = []
    for n in range(3):
        at = later(hours=n)
        report = run_cycle(now=at)
        assert report.providers_skipped["fake-tracker"].startswith("listing failed")
        backoff = poller.backoff_of("ticketing", "fake-tracker", at)
        assert backoff is not None
        waits.append(round((backoff.until - at).total_seconds()))
    assert waits[0] < waits[1] < waits[2]


@pytest.mark.parametrize("error", [
    fail_with(401, "Authentication required"),
    RuntimeError("a plugin bug"),
    ProviderConfigError("AIIMPL_LINEAR_PAGE_SIZE must be a number"),  # (no status, as a timeout has none)
], ids=["refused-key", "plugin-bug", "setting-refused"])
def test_a_failure_that_is_no_outage_is_tried_again_within_two_minutes(app, tracker, add_mapping, error):
    """A refused key (or a setting, a plugin's bug) is no outage to wait out: the operator who
    fixes it sees it taken up within two minutes, not after the back-off of a service that is down."""
    add_mapping("ENG")
    tracker.fail["iter_triggered"] = error
    waits = []
    for n in range(6):
        at = later(hours=n)
        run_cycle(now=at)
        backoff = poller.backoff_of("ticketing", "fake-tracker", at)
        assert backoff is not None
        waits.append(round((backoff.until - at).total_seconds()))
    assert waits == [30, 60, 120, 120, 120, 120]


def test_a_backend_whose_plugin_breaks_at_dispatch_is_tried_again_within_two_minutes(
    app, tracker, runner, add_mapping
):
    """A backend raising what no remote's failure explains (launch passes it on as a
    ``DispatchError`` without a status, raised from it) is no outage either."""
    add_mapping("ENG")
    runner.dispatch_error = RuntimeError("the plugin crashed")
    waits = []
    for n in range(5):
        at = later(hours=n)
        tracker.add(f"ENG-{n + 1}")
        run_cycle(now=at)
        backoff = poller.backoff_of("runner", "github-actions", at)
        assert backoff is not None
        waits.append(round((backoff.until - at).total_seconds()))
    assert waits == [30, 60, 120, 120, 120]


def test_a_failing_tracker_write_does_not_stop_the_other_tracker(app, client, tracker, jira, add_mapping):
    add_mapping("ENG")
    add_mapping("OPS", provider="fake-jira")
    tracker.add("ENG-1")
    jira.add("OPS-1")
    tracker.fail["set_stage"] = fail_with(502)
    run_cycle()
    assert jira.stage_labels("OPS-1") == {"AI-Working"}
    assert tracker.stage_labels("ENG-1") == {"AI-Implement"}
    del tracker.fail["set_stage"]
    run_cycle(now=later(hours=1))
    assert tracker.stage_labels("ENG-1") == {"AI-Working"}
    assert len(jobs_of("ENG-1")) == 1  # the stale trigger was not dispatched again meanwhile


def test_reconciler_asks_each_backend_once_per_cycle(app, tracker, runner, fly, add_mapping):
    add_mapping("ENG", execution_mode="github-actions")
    add_mapping("WEB", execution_mode="fly-machines")
    for n in range(1, 4):
        tracker.add(f"ENG-{n}")
        tracker.add(f"WEB-{n}")
    run_cycle()
    assert len(runner.poll_calls) == 1 and sorted(runner.poll_calls[0]) == sorted(runner.runs)
    assert len(fly.poll_calls) == 1 and sorted(fly.poll_calls[0]) == sorted(fly.runs)
    assert len(runner.runs) == 3 and len(fly.runs) == 3
    run_cycle()
    assert len(runner.poll_calls) == 2 and len(fly.poll_calls) == 2


def _one_job_each(tracker, runner, fly, add_mapping):
    """ENG-1 on github-actions and WEB-1 on fly-machines, dispatched, each run reported running."""
    add_mapping("ENG", execution_mode="github-actions")
    add_mapping("WEB", execution_mode="fly-machines")
    tracker.add("ENG-1")
    tracker.add("WEB-1")
    run_cycle(reconcile=False)
    [eng] = jobs_of("ENG-1")
    [web] = jobs_of("WEB-1")
    runner.set_state(eng.id, RunPhase.RUNNING)
    fly.set_state(web.id, RunPhase.RUNNING)
    return eng, web


def test_a_failing_backend_delays_only_itself(app, tracker, runner, fly, add_mapping):
    _one_job_each(tracker, runner, fly, add_mapping)
    runner.poll_error = fail_with(503, "GitHub unavailable")
    report = run_cycle()
    assert "github-actions" in report.reconciled["skipped"]
    assert jobs_of("WEB-1")[0].status == "running"
    assert jobs_of("ENG-1")[0].status == "dispatched"
    # new issues for the backing-off backend wait with a blocker; others are dispatched
    tracker.add("ENG-2")
    tracker.add("WEB-2")
    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == ["WEB-2"]
    assert report.blocked["ENG-2"]["reason"] == "backend-unavailable"
    runner.poll_error = None
    report = run_cycle(now=later(minutes=2))
    assert jobs_of("ENG-1")[0].status == "running"
    assert "ENG-2" in [d.issue_key for d in report.dispatched]


def test_webhook_entry_dispatches_at_once(app, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1")
    tracker.add("ENG-2", labels=set())  # not triggered
    report = run_cycle_for_issues("fake-tracker", ["ENG-1", "ENG-2", "ENG-404"])
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
    assert report.skipped == {"ENG-2": "not triggered", "ENG-404": "not found in the tracker"}
    assert tracker.stage_labels("ENG-1") == {"AI-Working"}
    # the same webhook delivered again, then a poll: still one job
    run_cycle_for_issues("fake-tracker", ["ENG-1"])
    run_cycle()
    assert len(jobs_of("ENG-1")) == 1


def test_listing_lease_lets_one_poller_read_a_tracker_per_interval(app, tracker, add_mapping):
    add_mapping("ENG")
    first = run_cycle(lease_seconds=60, holder="poller-a")
    second = run_cycle(lease_seconds=60, holder="poller-b")
    assert "fake-tracker" not in first.providers_skipped
    assert second.providers_skipped["fake-tracker"] == "another poller read it this interval"
    assert [op for op, _ in tracker.calls].count("iter_triggered") == 1
    third = run_cycle(now=later(seconds=61), lease_seconds=60, holder="poller-b")
    assert "fake-tracker" not in third.providers_skipped


def test_reconcile_lease_lets_one_poller_ask_a_backend_per_interval(app, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle(reconcile=False)
    first = run_cycle(lease_seconds=60, holder="poller-a")
    second = run_cycle(lease_seconds=60, holder="poller-b")
    assert first.reconciled["polled"] == {"github-actions": 1}
    assert second.reconciled["skipped"] == {"github-actions": "another poller reconciled it this interval"}
    assert len(runner.poll_calls) == 1


def test_the_live_check_reads_the_back_off_and_the_runner_mode_with_the_mapping(app, tracker, add_mapping):
    """A webhook's check runs live (no listing before it): the back-off of the mapping's backend
    and the runner mode it reads in the mapping's query hold the issue, and let it through."""
    from aiimpl_core.services import settings

    add_mapping("ENG", execution_mode="github-actions")
    tracker.add("ENG-1")
    tracker.add("ENG-2")
    poller.record_failure("runner", "github-actions", fail_with(503, "GitHub unavailable"))
    report = run_cycle_for_issues("fake-tracker", ["ENG-1"])
    assert report.blocked["ENG-1"]["reason"] == "backend-unavailable" and not report.dispatched
    # shadow mode starts nothing, so a backend backing off holds nothing
    settings.put(settings.RUNNER_MODE_KEY, "shadow")
    report = run_cycle_for_issues("fake-tracker", ["ENG-2"])
    assert [d.issue_key for d in report.dispatched] == ["ENG-2"]
    [job] = jobs_of("ENG-2")
    assert job.shadow and job.runner_mode == "shadow"
    # and once the backend answers again, a default-mode dispatch goes ahead
    settings.put(settings.RUNNER_MODE_KEY, "default")
    poller.record_success("runner", "github-actions")
    report = run_cycle_for_issues("fake-tracker", ["ENG-1"])
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"] and not jobs_of("ENG-1")[0].shadow


def _failing_on_another_host(database_url: str, kind: str, provider_id: str) -> None:
    """Record a failure of the connection as another host's poller does: its own app, its own
    database connection, in a thread of its own (this thread's call is under way meanwhile)."""
    import threading

    from aiimpl_core.app import create_app
    from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

    other = create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
                        "TESTING": True}, load_entrypoints=False, environ={})

    def fail() -> None:
        with other.app_context():
            poller.record_failure(kind, provider_id, fail_with(503, "unavailable"))

    thread = threading.Thread(target=fail)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()


def test_a_success_does_not_clear_a_back_off_recorded_while_it_was_under_way(
    app, tracker, runner, add_mapping, database_url, monkeypatch
):
    """Another host's poller fails on a connection while this one's call to it is under way and
    then succeeds: the success says nothing of the connection after it began, so the other's
    back-off stands (it was cleared, and the connection asked again at once by every host). A
    success begun after the failure clears it, as before."""
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle(reconcile=False)
    poll_runs, listing = runner.backend_class.poll_runs, tracker.provider_class.iter_triggered

    def polled_meanwhile(self, runs):  # noqa: ANN001, ANN202
        _failing_on_another_host(database_url, "runner", "github-actions")
        return poll_runs(self, runs)

    def listed_meanwhile(self, teams):  # noqa: ANN001, ANN202
        _failing_on_another_host(database_url, "ticketing", "fake-tracker")
        yield from listing(self, teams)

    monkeypatch.setattr(runner.backend_class, "poll_runs", polled_meanwhile)
    monkeypatch.setattr(tracker.provider_class, "iter_triggered", listed_meanwhile)
    assert run_cycle().reconciled["polled"] == {"github-actions": 1}
    assert poller.backoff_of("runner", "github-actions").error == "unavailable"
    assert poller.backoff_of("ticketing", "fake-tracker") is not None
    # the next calls, begun after the failures (by more than the hosts' clocks may differ), answer:
    # the back-offs are cleared
    monkeypatch.undo()
    from datetime import datetime, timedelta

    from sqlalchemy import select

    from aiimpl_core.database import CLOCK_TOLERANCE
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Setting

    for row in db.session.scalars(select(Setting).where(Setting.key.like("backoff:%"))):
        at = datetime.fromisoformat(row.value["at"]) - timedelta(seconds=CLOCK_TOLERANCE + 1)
        row.value = {**row.value, "at": at.isoformat()}
    db.session.commit()
    run_cycle(now=later(minutes=5))
    assert poller.backoff_of("runner", "github-actions") is None
    assert poller.backoff_of("ticketing", "fake-tracker") is None


def test_a_back_off_of_another_host_a_little_before_a_success_began_is_kept(app):
    """Another host's clock may be behind this one's by the clock tolerance: its failure recorded a
    few seconds "before" a success began here may have come after it, and is kept. This host's own
    clock orders its failures and successes as they were."""
    import socket
    from datetime import timedelta

    from aiimpl_core.database import CLOCK_TOLERANCE
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Setting, utcnow

    began = utcnow()
    for host, kept in (("another-host", True), (socket.gethostname(), False)):
        poller.record_failure("runner", "github-actions", fail_with(503, "unavailable"))
        row = db.session.get(Setting, poller.backoff_key("runner", "github-actions"))
        at = began - timedelta(seconds=CLOCK_TOLERANCE / 2)
        row.value = {**row.value, "at": at.isoformat(), "host": host}
        db.session.commit()
        poller.record_success("runner", "github-actions", since=began)
        assert (poller.backoff_of("runner", "github-actions") is not None) is kept, host
        poller.record_success("runner", "github-actions")


# -- a tracker that breaks its contract is that tracker's failure only -----------------------------


@pytest.mark.parametrize(
    ("pages", "why"),
    [
        (lambda issues: [{"issues": issues, "complete": True}], "yielded dict, not a TriggeredPage"),
        (lambda issues: [TriggeredPage(tuple(i.key for i in issues), complete=True)],
         "yielded a page holding a str, not a TrackerIssue"),
    ],
    ids=["dict", "keys"],
)
def test_a_tracker_yielding_the_wrong_type_delays_only_itself(
    app, tracker, jira, add_mapping, monkeypatch, pages, why
):
    add_mapping("ENG")
    add_mapping("OPS", provider="fake-jira")
    tracker.add("ENG-1")
    jira.add("OPS-1")
    listing = jira.provider_class.iter_triggered
    monkeypatch.setattr(jira.provider_class, "iter_triggered",
                        lambda self, teams: iter(pages([i for p in listing(self, teams) for i in p.issues])))
    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"]
    assert report.providers_skipped["fake-jira"] == f"listing failed: iter_triggered of 'fake-jira' {why}"
    assert poller.backoff_of("ticketing", "fake-jira", later(seconds=1)) is not None
    assert jobs_of("OPS-1") == []


def test_a_tracker_whose_issue_read_raises_a_foreign_error_is_reported_not_raised(
    app, tracker, add_mapping, monkeypatch, caplog
):
    """A plugin's bug in ``get_issue`` (a ValueError): the webhook's check reports it, and the
    manual dispatch refuses it by name (it was a webhook's 500 and the CLI's traceback)."""
    add_mapping("ENG")
    tracker.add("ENG-1")

    def broken(self, key):
        raise ValueError("api_key=sk-not-for-the-report")

    monkeypatch.setattr(tracker.provider_class, "get_issue", broken)
    report = run_cycle_for_issues("fake-tracker", ["ENG-1"])
    said = "get_issue of 'fake-tracker' failed: unexpected error (ValueError)"
    assert report.errors == [f"ENG-1: {said}"]
    with pytest.raises(PluginContractError) as refused:
        dispatch_issue("ENG-1")
    assert refused.value.message == said
    assert jobs_of("ENG-1") == []
    assert "sk-not-for-the-report" in caplog.text  # the traceback, in the server's log only


def test_a_tracker_reading_an_issue_as_the_wrong_type_is_refused_by_name(
    app, tracker, add_mapping, monkeypatch
):
    add_mapping("ENG")
    tracker.add("ENG-1")
    monkeypatch.setattr(tracker.provider_class, "get_issue", lambda self, key: {"key": key})
    report = run_cycle_for_issues("fake-tracker", ["ENG-1"])
    assert report.errors == ["ENG-1: get_issue of 'fake-tracker' answered dict, not a TrackerIssue"]
    assert jobs_of("ENG-1") == []
    with pytest.raises(PluginContractError, match="answered dict, not a TrackerIssue"):
        dispatch_issue("ENG-1")
    assert jobs_of("ENG-1") == []


# -- a backend that breaks its contract, or cannot be set up, is that backend's failure only --------
# ("fly-machines" sorts before "github-actions": the broken backend is reconciled first)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda runs: [{"job_id": r.job_id, "phase": "running"} for r in runs],
         "answered a dict, not a RunState"),
        (lambda runs: None, "answered NoneType, not a list of RunState"),
        (lambda runs: [RunState(job_id=r.job_id, phase="lost") for r in runs],  # type: ignore[arg-type]
         "answered the phase 'lost', not a RunPhase"),
        (lambda runs: [RunState(job_id=r.job_id, phase=RunPhase.FAILED, log_label="crashed")  # type: ignore[arg-type]
                       for r in runs],
         "answered the log_label 'crashed', not a LogLabel"),
        (lambda runs: [RunState(job_id=r.job_id, phase=RunPhase.TIMED_OUT, timeout_reason=3600)  # type: ignore[arg-type]
                       for r in runs],
         "answered the timeout_reason 3600, not a TimeoutReason"),
        (lambda runs: [RunState(job_id=r.job_id, phase=RunPhase.FAILED, detail=42)  # type: ignore[arg-type]
                       for r in runs],
         "answered the detail 42, not a string"),
        (lambda runs: [RunState(job_id=r.job_id, phase=RunPhase.FAILED, exit_code="1")  # type: ignore[arg-type]
                       for r in runs],
         "answered the exit_code '1', not an integer"),
    ],
    ids=["dicts", "none", "unknown-phase", "unknown-label", "reason-number", "detail-number", "exit-string"],
)
def test_a_backend_answering_the_wrong_type_delays_only_itself(
    app, tracker, runner, fly, add_mapping, monkeypatch, answer, why
):
    _one_job_each(tracker, runner, fly, add_mapping)
    monkeypatch.setattr(fly.backend_class, "poll_runs", lambda self, runs: answer(runs))
    report = run_cycle()
    assert jobs_of("ENG-1")[0].status == "running"
    assert jobs_of("WEB-1")[0].status == "dispatched"
    assert why in report.reconciled["skipped"]["fly-machines"]
    assert poller.backoff_of("runner", "fly-machines", later(seconds=1)) is not None


def test_a_phase_given_as_its_string_is_taken(app, tracker, runner, fly, add_mapping, monkeypatch):
    _, web = _one_job_each(tracker, runner, fly, add_mapping)
    monkeypatch.setattr(fly.backend_class, "poll_runs",
                        lambda self, runs: [RunState(job_id=r.job_id, phase="running", run_id="m-1")  # type: ignore[arg-type]
                                            for r in runs])
    run_cycle()
    assert jobs_of("WEB-1")[0].status == "running"


@pytest.mark.parametrize(
    ("state", "ending"),
    [
        (dict(phase="failed", log_label="container_failed", detail="exit 2", run_id=7),
         ("failed", None, "container_failed", "exit 2")),
        (dict(phase="timed_out", timeout_reason="machine_timeout"),
         ("timed_out", "machine_timeout", None, None)),
    ],
    ids=["failed", "timed-out"],
)
def test_a_label_or_reason_given_as_its_string_is_taken(
    app, tracker, runner, fly, add_mapping, monkeypatch, state, ending
):
    """A string value of a LogLabel or TimeoutReason (and a numeric run id) is taken, as a phase's
    is: it once reached the job's ending and failed it there on every cycle, holding it for good."""
    _one_job_each(tracker, runner, fly, add_mapping)
    monkeypatch.setattr(fly.backend_class, "poll_runs",
                        lambda self, runs: [RunState(job_id=r.job_id, **state) for r in runs])  # type: ignore[arg-type]
    report = run_cycle()
    assert "fly-machines" not in report.reconciled["skipped"]
    [job] = jobs_of("WEB-1")
    assert (job.status, job.timeout_reason, job.log_label, job.error) == ending
    if "run_id" in state:
        assert job.run_id == "7"


def test_a_backend_that_cannot_be_set_up_delays_only_itself(
    app, tracker, runner, fly, add_mapping, monkeypatch
):
    _one_job_each(tracker, runner, fly, add_mapping)

    def broken(self, context):
        raise RuntimeError("FLY_API_TOKEN=fo1_secret is malformed")

    monkeypatch.setattr(fly.backend_class, "__init__", broken)
    app.extensions["aiimpl"]._instances.pop(("runner", "fly-machines"), None)  # built anew, and fails
    report = run_cycle()
    assert jobs_of("ENG-1")[0].status == "running"
    assert jobs_of("WEB-1")[0].status == "dispatched"
    skipped = report.reconciled["skipped"]["fly-machines"]
    assert "the runner provider 'fly-machines' could not be set up (RuntimeError)" in skipped
    assert "fo1_secret" not in skipped


def test_a_foreign_failure_is_stored_by_its_class_only(app, tracker, add_mapping):
    add_mapping("ENG")
    tracker.fail["iter_triggered"] = RuntimeError("token=tracker-token-123 refused")
    report = run_cycle()
    backoff = poller.backoff_of("ticketing", "fake-tracker")
    assert backoff is not None and backoff.error == "unexpected error (RuntimeError)"
    assert "tracker-token-123" not in str(report.providers_skipped)


def test_failures_recorded_at_once_by_several_pollers_are_all_counted(app, database_url):
    """Pollers on several hosts failing on one connection at the same moment: each failure counts
    (the back-off grows as it should) and none of them fails on the other's row."""
    from contextlib import nullcontext

    from aiimpl_core.app import create_app
    from aiimpl_core.testing.orchestrator import each_released_together
    from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

    apps = [create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
                        "TESTING": True}, load_entrypoints=False, environ={}) for _ in range(4)]
    rounds = 5

    def fail(flask_app, n: int) -> None:  # noqa: ANN001
        with flask_app.app_context():
            poller.record_failure("ticketing", f"racy-{n}", fail_with(503))

    for n in range(rounds):
        each_released_together(nullcontext, [lambda _, a=a, n=n: fail(a, n) for a in apps], timeout=60)
    for n in range(rounds):
        assert poller.backoff_of("ticketing", f"racy-{n}").failures == len(apps)
