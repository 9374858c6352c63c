"""Drill: the orchestrator's processes stopped as a deploy or a service manager stops them, in the
middle of a poll cycle, on PostgreSQL with the real Linear and GitHub Actions plugins against
their fakes.

- gunicorn with the in-app scheduler (``AIIMPL_SCHEDULER``), and ``aiimpl serve`` with it, given
  SIGTERM while a cycle waits on Linear: the cycle ends (its dispatch launched and recorded, its
  stage change sent) before the process does, instead of dying with the worker's drained requests.
- ``aiimpl poll`` given SIGTERM: it gives back its listing and reconcile leases, so the loop that
  takes over (the deploy's next process) reads the trackers at its next cycle, not an interval
  later; a second signal stops it at once, in the middle of the cycle, with the signal's status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import aiimpl_gha.plugin
import aiimpl_linear.plugin
import pytest
from aiimpl_linear.testing import FakeLinear

from aiimpl_core.extensions import db
from aiimpl_core.orm import Lease, Setting
from aiimpl_core.services.poller import LAST_CYCLE_KEY
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.ports import free_port
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

from .conftest import github_config, map_teams
from .helpers import job_of, wait_until_serving

APP_MODULE = '''
import aiimpl_gha.plugin
import aiimpl_linear.plugin

from aiimpl_core import create_app

app = create_app(plugins=[aiimpl_linear.plugin, aiimpl_gha.plugin], load_entrypoints=False)
'''

#: how long Linear holds the listing's answer: past a stopping worker's drained requests (it has
#: none), well within gunicorn's graceful timeout
HELD = 2.0


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    return [aiimpl_linear.plugin, aiimpl_gha.plugin]


@pytest.fixture
def aiimpl_config(linear: FakeLinear, gh: FakeGitHub) -> dict[str, Any]:
    return {**linear.config(), **github_config(gh)}


def _environ(app: Any, linear: FakeLinear, gh: FakeGitHub, **settings: str) -> dict[str, str]:
    """This process's environment with the drill's settings in place of the test's ``AIIMPL_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    env.update(linear.config(), **github_config(gh), AIIMPL_DATABASE_URL=app.config["AIIMPL_DATABASE_URL"],
               AIIMPL_SECRET_KEY=TEST_SECRET_KEY, **settings)
    return env


def _listing_held(linear: FakeLinear, release: threading.Event | None = None) -> threading.Event:
    """The next listing of Linear held :data:`HELD` seconds (or until ``release``); the event
    returned is set when it arrives."""
    arrived = threading.Event()

    def hold() -> None:
        arrived.set()
        if release is None:
            time.sleep(HELD)
        else:
            release.wait(30)

    linear.before("TriggeredIssues", hold)
    return arrived


def _poll(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "poll", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The next cycle report of ``aiimpl poll --json`` (an indented JSON object)."""
    assert proc.stdout is not None
    text = ""
    while True:
        line = proc.stdout.readline()
        assert line, f"the loop ended: {proc.wait(10)}"
        text += line
        if line.rstrip() == "}":
            return json.loads(text)


def _lease_names() -> set[str]:
    db.session.expire_all()
    return set(db.session.scalars(db.select(Lease.name)))


def _assert_cycle_ended(linear: FakeLinear, key: str) -> None:
    """The held cycle went to its end: the issue dispatched with its run linked, its stage changed,
    the cycle recorded, and its listing and reconcile leases given back."""
    job = job_of(key)
    assert (job.status, bool(job.run_id)) == ("dispatched", True), (job.status, job.run_id)
    assert linear.labels_of(key) == ["AI-Working"]
    last = db.session.get(Setting, LAST_CYCLE_KEY)
    assert last is not None and last.value["dispatched"] == 1, last and last.value
    assert not {name for name in _lease_names() if name.startswith(("poll:", "reconcile:"))}


def test_gunicorn_graceful_stop_lets_the_in_app_scheduler_end_its_cycle(app, linear, gh, tmp_path) -> None:
    map_teams(app, gh)
    key = linear.add_issue("ENG", "Export")["identifier"]
    arrived = _listing_held(linear)
    (tmp_path / "served_app.py").write_text(APP_MODULE)
    port = free_port()
    env = _environ(app, linear, gh, AIIMPL_SCHEDULER="1", AIIMPL_POLL_INTERVAL="60", AIIMPL_WORKERS="1",
                   AIIMPL_BIND=f"127.0.0.1:{port}")
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]), XDG_RUNTIME_DIR=str(tmp_path))
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:aiimpl_core.gunicorn_conf",
                                 "served_app:app"], env=env, stdout=out, stderr=out, cwd=tmp_path)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc, log)
        assert arrived.wait(30), log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)  # the worker has no request in flight: it would end at once
        assert proc.wait(timeout=25) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _assert_cycle_ended(linear, key)
    assert "Worker exiting after the poll cycle" in log.read_text()


def test_serve_with_the_scheduler_stops_after_its_poll_cycle(app, linear, gh) -> None:
    map_teams(app, gh)
    key = linear.add_issue("ENG", "Export")["identifier"]
    arrived = _listing_held(linear)
    port = free_port()
    env = _environ(app, linear, gh, AIIMPL_SCHEDULER="1", AIIMPL_POLL_INTERVAL="60")
    proc = subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert arrived.wait(30), proc.poll()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "waiting for the current poll cycle to end" in err
    _assert_cycle_ended(linear, key)


def test_a_stopped_poll_loop_gives_back_its_leases_to_the_loop_that_takes_over(app, linear, gh) -> None:
    map_teams(app, gh)
    env = _environ(app, linear, gh)
    old = _poll(env, "--interval", "30", "--json")  # its listing lease lasts 27 s
    new = None
    try:
        assert "linear" in _report(old)["listed"]
        new = _poll(env, "--interval", "0.3", "--json")
        first = _report(new)
        assert first["providersSkipped"] == {"linear": "another poller read it this interval"}, first
        old.send_signal(signal.SIGTERM)
        _out, err = old.communicate(timeout=10)
        assert old.returncode == 0, err
        stopped = time.monotonic()
        while "linear" not in _report(new)["listed"]:
            assert time.monotonic() - stopped < 5, "the new loop still waits for the old one's lease"
    finally:
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert "signal SIGTERM: stopping after the current cycle" in err


def test_a_second_signal_stops_a_poll_loop_at_once(app, linear, gh) -> None:
    map_teams(app, gh)
    linear.add_issue("ENG", "Export")
    release = threading.Event()
    arrived = _listing_held(linear, release)
    proc = _poll(_environ(app, linear, gh), "--interval", "60")
    try:
        assert arrived.wait(30), proc.poll()
        assert proc.stderr is not None
        proc.send_signal(signal.SIGTERM)
        for line in proc.stderr:
            if "stopping after the current cycle" in line:
                break
        else:
            raise AssertionError(f"the loop ended on the first signal: {proc.wait(10)}")
        proc.send_signal(signal.SIGINT)  # an operator's second Ctrl-C
        _out, err = proc.communicate(timeout=5)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGINT, err
    assert "signal SIGINT again: stopping at once, in the middle of the cycle" in err
