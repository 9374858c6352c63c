"""Drill: the orchestrator's processes stopped as a deploy or a service manager stops them, in the
middle of a poll cycle, on PostgreSQL with the real Linear and GitHub Actions plugins against
their fakes.

- gunicorn with the in-app scheduler (``AIIMPL_SCHEDULER``), and ``aiimpl serve`` with it, given
  SIGTERM while a cycle's dispatch waits on GitHub: the dispatch ends (launched and recorded) before
  the process does, instead of dying with the worker's drained requests; the cycle's later steps
  (its stage change sent) are left to the next cycle.
- gunicorn given SIGTERM after a Linear delivery was answered while its dispatch check still
  waits on GitHub (the answer is due within ``AIIMPL_WEBHOOK_ANSWER_SECONDS``): the worker waits
  for the check, which dispatches the issue and sends its stage change before the worker exits.
- ``aiimpl poll`` given SIGTERM: it gives back its listing and reconcile leases, so the loop that
  takes over (the deploy's next process) reads the trackers at its next cycle, not an interval
  later; a second signal stops it at once, in the middle of the cycle, with the signal's status.
- A long cycle (its dispatches slow to answer) stopped during its listing ends after the listing,
  well before its end, in gunicorn's worker, ``aiimpl poll`` and ``aiimpl poll --once``; the next
  cycle dispatches what it left, each issue once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests
from aiimpl_linear.testing import FakeLinear

from aiimpl_core.extensions import db
from aiimpl_core.orm import Lease, Setting
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.services.poller import LAST_CYCLE_KEY
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.ports import free_port
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

from .conftest import github_config, map_teams
from .helpers import job_of, jobs, jobs_per_issue, wait_until, wait_until_serving

APP_MODULE = '''
import aiimpl_gha.plugin
import aiimpl_linear.plugin

from aiimpl_core import create_app

app = create_app(plugins=[aiimpl_linear.plugin, aiimpl_gha.plugin], load_entrypoints=False)
'''


@pytest.fixture
def aiimpl_plugins(linear_gha_plugins: list[object]) -> list[object]:
    """The real Linear and GitHub Actions plugins."""
    return linear_gha_plugins


@pytest.fixture
def aiimpl_config(linear_gha_config: dict[str, Any]) -> dict[str, Any]:
    """Linear and GitHub Actions pointed at the fakes."""
    return linear_gha_config


#: how long Linear holds the listing's answer: past a stopping worker's drained requests (it has
#: none), well within gunicorn's graceful timeout
HELD = 2.0
#: the issues of a long cycle, and how long GitHub takes to answer each one's dispatch: run to its
#: end, the cycle goes on that many times as long after its listing
LONG_ISSUES = 6
DISPATCH_HELD = 3.0
#: how soon a process stopped during a long cycle's listing ends once the listing is answered: under
#: the LONG_ISSUES * DISPATCH_HELD seconds of the rest of the cycle, with room for a loaded machine's
#: slow exit (that no dispatch began after the stop is checked by the next cycle's, which does them all)
STOP_BOUND = 12.0


def _environ(app: Any, linear: FakeLinear, gh: FakeGitHub, **settings: str) -> dict[str, str]:
    """This process's environment with the drill's settings in place of the test's ``AIIMPL_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    env.update(linear.config(), **github_config(gh), AIIMPL_DATABASE_URL=app.config["AIIMPL_DATABASE_URL"],
               AIIMPL_SECRET_KEY=TEST_SECRET_KEY, **settings)
    return env


def _sigterm_until(proc: subprocess.Popen[str], said: str, otherwise: str) -> None:
    """Send ``proc`` SIGTERM and read its errors until a line says ``said`` (it is stopping); fail
    with ``otherwise`` and its exit status when it ended instead."""
    assert proc.stderr is not None
    proc.send_signal(signal.SIGTERM)
    for line in proc.stderr:
        if said in line:
            return
    raise AssertionError(f"{otherwise}: {proc.wait(10)}")


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
    """The next cycle report of ``aiimpl poll --json`` (a loop's: one JSON object a line)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the loop ended: {proc.wait(10)}"
    return json.loads(line)


def _lease_names() -> set[str]:
    db.session.expire_all()
    return set(db.session.scalars(db.select(Lease.name)))


def _dispatch_held(gh: FakeGitHub) -> None:
    """GitHub answers the next workflow dispatch :data:`HELD` seconds after doing it."""
    gh.delay_next("POST", r"/dispatches$", HELD)


def _dispatch_arrived(gh: FakeGitHub) -> None:
    wait_until(lambda: gh.runs, "the cycle's dispatch", 90)  # (a loaded machine starts a server slowly)


def _assert_dispatch_ended(linear: FakeLinear, key: str) -> None:
    """The dispatch under way at the stop went to its end (the issue dispatched with its run
    linked), the cycle was recorded, and its listing and reconcile leases given back; the cycle's
    later step, the stage change, is sent by the next cycle, which dispatches nothing again."""
    job = job_of(key)
    assert (job.status, bool(job.run_id)) == ("dispatched", True), (job.status, job.run_id)
    assert linear.labels_of(key) == ["AI-Implement"]
    last = db.session.get(Setting, LAST_CYCLE_KEY)
    assert last is not None and last.value["dispatched"] == 1, last and last.value
    assert not {name for name in _lease_names() if name.startswith(("poll:", "reconcile:"))}
    report = run_cycle(lease_seconds=60, holder="next-host:1:1")
    assert (report.dispatched, report.outbox["sent"]) == ([], 1), report.as_dict()
    assert linear.labels_of(key) == ["AI-Working"]
    assert job_of(key).id == job.id


def _gunicorn(
    app: Any, linear: FakeLinear, gh: FakeGitHub, tmp_path: Any, **settings: str
) -> tuple[subprocess.Popen, Any, str]:
    """gunicorn with one worker, once it serves, its log file and its URL. The worker runs the
    in-app scheduler unless ``settings`` say otherwise."""
    (tmp_path / "served_app.py").write_text(APP_MODULE)
    port = free_port()
    settings = {"AIIMPL_SCHEDULER": "1", "AIIMPL_POLL_INTERVAL": "60", **settings}
    env = _environ(app, linear, gh, AIIMPL_WORKERS="1", AIIMPL_BIND=f"127.0.0.1:{port}", **settings)
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]), XDG_RUNTIME_DIR=str(tmp_path))
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:aiimpl_core.gunicorn_conf",
                                 "served_app:app"], env=env, stdout=out, stderr=out, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc, log)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, log, url


@pytest.mark.long
def test_gunicorn_graceful_stop_lets_the_in_app_scheduler_end_its_cycle(app, linear, gh, tmp_path) -> None:
    map_teams(app, gh)
    key = linear.add_issue("ENG", "Export")["identifier"]
    _dispatch_held(gh)
    proc, log, _url = _gunicorn(app, linear, gh, tmp_path)
    try:
        _dispatch_arrived(gh)
        proc.send_signal(signal.SIGTERM)  # the worker has no request in flight: it would end at once
        assert proc.wait(timeout=25) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _assert_dispatch_ended(linear, key)
    assert "Worker exiting after the poll cycle" in log.read_text()


def test_gunicorn_graceful_stop_lets_a_webhook_s_check_end_after_its_answer(
    app, linear, gh, tmp_path
) -> None:
    """Linear's delivery is answered within ``AIIMPL_WEBHOOK_ANSWER_SECONDS`` while GitHub still holds
    the dispatch's answer; the deploy's SIGTERM comes right after. The worker waits for the check:
    the issue is dispatched once, its run linked and its stage change sent, before the worker exits."""
    map_teams(app, gh)
    key = linear.add_issue("ENG", "Export")["identifier"]
    proc, log, url = _gunicorn(app, linear, gh, tmp_path, AIIMPL_SCHEDULER="",
                               AIIMPL_WEBHOOK_ANSWER_SECONDS="1")
    try:
        gh.delay_next("POST", r"/dispatches$", HELD * 2)
        body = json.dumps(linear.issue_webhook_payload(key)).encode()
        started = time.monotonic()
        headers = {"Content-Type": "application/json", "Linear-Signature": linear.sign(body)}
        resp = requests.post(f"{url}/api/linear/webhook", data=body, headers=headers, timeout=30)
        took, answer = time.monotonic() - started, resp.json()
        # answered before GitHub answered the dispatch; the check may not have claimed the issue yet
        # by then (a loaded machine), and says so: running, and dispatched with its job's status so far
        assert resp.status_code == 200 and took < HELD * 2, (took, answer)
        assert answer["running"] is True, answer
        assert (answer["dispatched"], answer.get("status")) in ((True, "unknown"), (False, None)), answer
        proc.send_signal(signal.SIGTERM)  # GitHub still holds the dispatch's answer
        assert proc.wait(timeout=25) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Worker exiting after 1 webhook task(s)" in log.read_text()
    job = job_of(key)
    assert (job.status, bool(job.run_id), len(gh.runs)) == ("dispatched", True, 1)
    assert answer.get("jobId", job.id) == job.id  # (none answered when the check had not claimed it yet)
    assert linear.labels_of(key) == ["AI-Working"]  # the check's stage change, sent before the exit


def test_a_webhook_s_check_cut_short_by_the_graceful_timeout_is_said(app, linear, gh, tmp_path) -> None:
    """The worker waited, then exited with nothing saying the check had not ended."""
    map_teams(app, gh)
    key = linear.add_issue("ENG", "Export")["identifier"]
    proc, log, url = _gunicorn(app, linear, gh, tmp_path, AIIMPL_SCHEDULER="",
                               AIIMPL_WEBHOOK_ANSWER_SECONDS="1", AIIMPL_WORKER_TIMEOUT="5")
    try:
        gh.delay_next("POST", r"/dispatches$", 20)  # far past the 3 s the worker may wait
        body = json.dumps(linear.issue_webhook_payload(key)).encode()
        headers = {"Content-Type": "application/json", "Linear-Signature": linear.sign(body)}
        answer = requests.post(f"{url}/api/linear/webhook", data=body, headers=headers, timeout=30).json()
        assert answer["running"] is True, answer
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    said = log.read_text()
    assert "Worker exiting after 1 webhook task(s)" in said
    assert "Worker exiting with 1 webhook task(s) cut short, as its time to stop ran out" in said


def test_serve_with_the_scheduler_stops_after_its_poll_cycle(app, linear, gh) -> None:
    map_teams(app, gh)
    key = linear.add_issue("ENG", "Export")["identifier"]
    _dispatch_held(gh)
    port = free_port()
    env = _environ(app, linear, gh, AIIMPL_SCHEDULER="1", AIIMPL_POLL_INTERVAL="60")
    proc = subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _dispatch_arrived(gh)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "waiting for the current poll cycle to end" in err
    _assert_dispatch_ended(linear, key)


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
    assert "signal SIGTERM: stopping after the current step of the cycle" in err


@pytest.mark.parametrize("args", [["--interval", "60"], ["--once"]], ids=["loop", "once"])
def test_a_second_signal_stops_a_poll_loop_at_once(app, linear, gh, args) -> None:
    map_teams(app, gh)
    linear.add_issue("ENG", "Export")
    release = threading.Event()
    arrived = _listing_held(linear, release)
    proc = _poll(_environ(app, linear, gh), *args)
    try:
        assert arrived.wait(30), proc.poll()
        _sigterm_until(proc, "stopping after the current step of the cycle",
                       "the loop ended on the first signal")
        proc.send_signal(signal.SIGINT)  # an operator's second Ctrl-C
        _out, err = proc.communicate(timeout=5)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGINT, err
    assert "signal SIGINT again: stopping at once, in the middle of the cycle" in err


# -- a long cycle ---------------------------------------------------------------------------------


def _long_cycle(linear: FakeLinear, gh: FakeGitHub) -> tuple[list[str], threading.Event, threading.Event]:
    """:data:`LONG_ISSUES` issues of ENG to dispatch, each dispatch answered :data:`DISPATCH_HELD`
    seconds late by GitHub, and Linear's next listing held until ``release``: the issues, the
    event set when the listing arrives, and ``release``."""
    keys = [linear.add_issue("ENG", f"Task {n}")["identifier"] for n in range(LONG_ISSUES)]
    gh.delay_next("POST", r"/dispatches$", DISPATCH_HELD, times=LONG_ISSUES)
    release = threading.Event()
    return keys, _listing_held(linear, release), release


def _assert_the_next_cycle_does_the_rest(gh: FakeGitHub, keys: list[str]) -> None:
    """The stopped cycle dispatched nothing (its listing was the step it was in) and holds no
    listing or reconcile lease; the next poller's cycle dispatches every issue, once."""
    assert jobs() == [] and gh.runs == {}
    assert not {name for name in _lease_names() if name.startswith(("poll:", "reconcile:"))}
    with gh.lock:
        gh.delays.clear()  # (the next cycle's dispatches are answered at once)
    report = run_cycle(lease_seconds=60, holder="next-host:1:1")
    assert sorted(d.issue_key for d in report.dispatched) == sorted(keys), report.as_dict()
    assert jobs_per_issue() == Counter(dict.fromkeys(keys, 1))
    assert len(gh.runs) == len(keys)


def test_a_long_cycle_of_gunicorns_worker_ends_after_its_current_step(app, linear, gh, tmp_path) -> None:
    map_teams(app, gh)
    keys, arrived, release = _long_cycle(linear, gh)
    proc, log, _url = _gunicorn(app, linear, gh, tmp_path)
    try:
        assert arrived.wait(30), log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        # the worker has taken the stop, and waits for its cycle
        wait_until(lambda: "Worker exiting after the poll cycle" in log.read_text(), "the worker's stop", 20)
        release.set()
        released = time.monotonic()
        try:
            status = proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"gunicorn still ran {STOP_BOUND:g} s after the listing's answer") from None
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert status == 0, log.read_text()[-3000:]
    assert time.monotonic() - released < STOP_BOUND
    last = db.session.get(Setting, LAST_CYCLE_KEY)
    assert last is not None and last.value["dispatched"] == 0, last and last.value
    _assert_the_next_cycle_does_the_rest(gh, keys)


@pytest.mark.long
@pytest.mark.parametrize("args", [["--interval", "60"], ["--once", "--json"]], ids=["loop", "once"])
def test_a_long_poll_cycle_ends_after_its_current_step_on_sigterm(app, linear, gh, args) -> None:
    map_teams(app, gh)
    keys, arrived, release = _long_cycle(linear, gh)
    proc = _poll(_environ(app, linear, gh), *args)
    try:
        assert arrived.wait(30), proc.poll()
        _sigterm_until(proc, "signal SIGTERM: stopping after the current", "the command ended on the signal")
        release.set()
        released = time.monotonic()
        try:
            out, err = proc.communicate(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still polling {STOP_BOUND:g} s after the listing's answer") from None
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - released < STOP_BOUND
    if "--once" in args:
        report = json.loads(out)
        assert report["stopped"] is True, report
        assert (report["listed"], report["dispatched"]) == ({"linear": LONG_ISSUES}, []), report
    else:
        assert "stopped before its end (the next cycle does the rest)" in out
        assert "stopped after 1 cycle(s)" in err
    _assert_the_next_cycle_does_the_rest(gh, keys)
