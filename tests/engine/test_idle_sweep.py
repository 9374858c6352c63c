"""A runner backend with nothing in flight is still asked, every ten minutes, to remove what ended
sessions left behind (``RunnerBackend.sweep``): its ``poll_runs``, which sweeps otherwise, is
called only while a run is in flight."""

from __future__ import annotations

import logging

from aiimpl_core.errors import ProviderError
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.reconcile import SWEEP_EVERY, reconcile

from .conftest import later


def test_an_idle_backend_is_swept_every_ten_minutes_not_every_cycle(app, runner) -> None:
    start = later(seconds=0)
    reconcile(now=start)
    reconcile(now=start + SWEEP_EVERY / 2)
    assert runner.sweeps == [3600]  # the session lifetime
    reconcile(now=start + SWEEP_EVERY)
    assert runner.sweeps == [3600, 3600]


def test_a_backend_with_a_job_in_flight_is_not_swept_it_sweeps_as_it_polls(app, tracker, runner,
                                                                             add_mapping) -> None:
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    assert runner.poll_calls and runner.sweeps == []


def test_the_pollers_of_several_processes_sweep_once_between_them(app, runner) -> None:
    start = later(seconds=0)
    reconcile(now=start, holder="host-a")
    app.extensions.pop("aiimpl.sweeps")  # another process: its own memory, the same database
    reconcile(now=start + SWEEP_EVERY / 2, holder="host-b")
    assert runner.sweeps == [3600]


def test_a_failing_sweep_is_logged_and_polling_goes_on(app, runner, caplog) -> None:
    runner.sweep_error = ProviderError("fake: 503 engine unavailable", status=503)
    with caplog.at_level(logging.WARNING):
        report = run_cycle()
    assert runner.sweeps == [3600] and not report.errors
    assert "sweeping github-actions failed: fake: 503 engine unavailable" in caplog.text


def test_an_unconfigured_backend_is_not_swept(app, runner, monkeypatch) -> None:
    monkeypatch.setattr(runner.backend_class, "is_configured", lambda self: False)
    reconcile()
    assert runner.sweeps == []
