"""Leaving shadow mode: the triggers shadow jobs consumed are given back, so the issues that still
carry them are dispatched for real, once; shadow jobs still in flight are ended at once."""

from __future__ import annotations

from aiimpl_core.services import settings, shadow
from aiimpl_core.services.dispatch import run_cycle

from .conftest import jobs_of, later, tracked


def _statuses(key: str) -> list[tuple[bool, str]]:
    return [(job.shadow, job.status) for job in jobs_of(key)]


def test_issues_shadow_mode_dispatched_are_dispatched_for_real_once_it_is_left(app, tracker, runner,
                                                                               add_mapping):
    settings.put(settings.RUNNER_MODE_KEY, "shadow")
    add_mapping("ENG")
    for key in ("ENG-1", "ENG-2", "ENG-3"):
        tracker.add(key)
    run_cycle()
    run_cycle(now=later(minutes=11))  # ENG-1..3's shadow jobs end run_not_found
    tracker.add("ENG-4")
    run_cycle(now=later(minutes=12), reconcile=False)  # ENG-4's is still in flight
    tracker.issues["ENG-3"].labels.discard("AI-Implement")  # a person took ENG-3's trigger off
    assert _statuses("ENG-1") == [(True, "timed_out")] and _statuses("ENG-4") == [(True, "dispatched")]

    settings.put(settings.RUNNER_MODE_KEY, "default")
    left = shadow.leave()
    assert (left.ended, left.released) == ((jobs_of("ENG-4")[0].id,), 4)  # ENG-3: not listed since
    assert _statuses("ENG-4") == [(True, "timed_out")]
    assert jobs_of("ENG-4")[0].timeout_reason == "run_not_found"

    report = run_cycle(now=later(minutes=13))
    assert sorted(d.issue_key for d in report.dispatched) == ["ENG-1", "ENG-2", "ENG-4"]
    for key in ("ENG-1", "ENG-2", "ENG-4"):
        assert _statuses(key)[-1] == (False, "dispatched")
        assert tracker.stage_labels(key) == {"AI-Working"}  # written to the tracker this time
    assert _statuses("ENG-3") == [(True, "timed_out")]  # its trigger is gone
    assert {run.request.issue_key for run in runner.runs.values()} == {"ENG-1", "ENG-2", "ENG-4"}

    run_cycle(now=later(minutes=14))
    assert shadow.leave() == shadow.Left()  # (nothing left to give back)
    run_cycle(now=later(minutes=15))
    assert len(runner.runs) == 3 and [len(jobs_of(k)) for k in ("ENG-1", "ENG-2", "ENG-4")] == [2, 2, 2]


def test_while_shadow_mode_is_in_force_nothing_is_given_back(app, tracker, runner, add_mapping):
    app.config["RUNNER_MODE"] = "shadow"
    settings.put(settings.RUNNER_MODE_KEY, "default")  # (the environment's override wins)
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    assert shadow.leave() == shadow.Left()
    run_cycle(now=later(minutes=1))
    assert _statuses("ENG-1") == [(True, "dispatched")] and tracked("ENG-1").trigger_consumed


def test_a_real_dispatch_after_a_shadow_one_keeps_its_trigger(app, tracker, runner, add_mapping):
    """Only a trigger whose last job was a shadow job is given back."""
    settings.put(settings.RUNNER_MODE_KEY, "shadow")
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    settings.put(settings.RUNNER_MODE_KEY, "default")
    shadow.leave()
    run_cycle(now=later(minutes=1))
    assert _statuses("ENG-1") == [(True, "timed_out"), (False, "dispatched")]
    assert shadow.leave().released == 0
    run_cycle(now=later(minutes=2))
    assert _statuses("ENG-1") == [(True, "timed_out"), (False, "dispatched")]


def test_a_shadow_job_claimed_after_the_mode_was_left_is_ended_by_the_reconciler(app, tracker, runner,
                                                                                 add_mapping):
    """A poller that read the mode just before it changed may still claim a shadow job: the next
    reconcile ends it and gives its trigger back, and the cycle after dispatches it for real."""
    settings.put(settings.RUNNER_MODE_KEY, "shadow")
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle(reconcile=False)
    settings.put(settings.RUNNER_MODE_KEY, "default")  # no leave(): as if the claim came after it

    report = run_cycle(now=later(minutes=1))
    assert report.dispatched == []
    assert report.reconciled["ended"] == 1 and _statuses("ENG-1") == [(True, "timed_out")]
    assert not tracked("ENG-1").trigger_consumed
    report = run_cycle(now=later(minutes=2))
    assert [d.issue_key for d in report.dispatched] == ["ENG-1"] and len(runner.runs) == 1


def test_a_poll_loop_that_starts_outside_shadow_mode_gives_the_triggers_back(app, tracker, runner,
                                                                             add_mapping):
    """``RUNNER_MODE=shadow`` taken out of the environment takes effect at a restart, which
    ``POST /api/runner-mode`` never sees: the poll loop's first cycle gives the triggers back."""
    from aiimpl_core.services.poller import Poller

    app.config["RUNNER_MODE"] = "shadow"
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    run_cycle(now=later(minutes=11))
    assert _statuses("ENG-1") == [(True, "timed_out")]
    app.config["RUNNER_MODE"] = None

    loop = Poller(interval=0.01)
    loop.run_forever(on_cycle=lambda report: loop.stop())  # one cycle
    assert _statuses("ENG-1") == [(True, "timed_out"), (False, "dispatched")]
    assert len(runner.runs) == 1


def test_a_single_cycle_from_the_command_line_gives_the_triggers_back(app, tracker, runner, add_mapping):
    """``aiimpl poll --once`` run from cron is the only poller some installs have."""
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from aiimpl_core.cli import cli
    from aiimpl_core.cli import jobs as _jobs_commands  # noqa: F401 - registers the commands

    app.config["RUNNER_MODE"] = "shadow"
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    run_cycle(now=later(minutes=11))
    app.config["RUNNER_MODE"] = None

    result = CliRunner().invoke(cli, ["poll", "--once"], obj=ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 0, result.output
    assert "1 dispatched" in result.output
    assert _statuses("ENG-1") == [(True, "timed_out"), (False, "dispatched")]
