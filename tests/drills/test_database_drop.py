"""Drill: the database connection dropped and restored while requests run.

Runners post ``/runner/progress`` through a real HTTP server from several threads. Meanwhile the
database refuses new connections and every connection of the app is ended
(``pg_terminate_backend``); a moment later connections are allowed again. Requests during the
outage fail cleanly (a JSON ``error``, no traceback), requests after it succeed, and every step the
server acknowledged is stored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aiimpl_core.extensions import db
from aiimpl_core.orm import JobStep, Mapping
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeTracker

from .helpers import job_of, progress_request


@pytest.fixture
def aiimpl_plugins(fake_plugins: list[object]) -> list[object]:
    """The in-memory tracker and runner."""
    return fake_plugins

POSTERS = 4


@dataclass
class Answer:
    step_id: str
    sent_at: float
    status: int
    text: str


@pytest.fixture
def tracker() -> FakeTracker:
    tracker = FakeTracker()
    tracker.add("ENG-1")
    return tracker


class Outage:
    """Refuses new connections to the app's database and ends the open ones, until :meth:`end`."""

    def __init__(self, database_url: str) -> None:
        self.name = make_url(database_url).database
        # the admin connection goes to the server's base database, which stays reachable
        self.admin = create_engine(os.environ["AIIMPL_TEST_DATABASE_URL"], isolation_level="AUTOCOMMIT")
        self.terminated = 0

    def start(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false'))
            self.terminated += len(conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": self.name}).all())

    def end(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true'))

    def close(self) -> None:
        self.end()
        self.admin.dispose()


def test_drill_database_dropped_and_restored_under_load(app, live_server, tracker, runner, database_url):
    db.session.add(Mapping(team_key="ENG", owner="acme", repo="eng", default_branch="main",
                           execution_mode="github-actions", ticketing={"provider": "fake-tracker"}))
    db.session.commit()
    run_cycle()
    job_id = job_of("ENG-1").id
    db.session.remove()

    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()

    def post(worker: int) -> None:
        n = 0
        session = requests.Session()
        while not stop.is_set():
            n += 1
            step_id = f"w{worker}-{n}"
            body, headers = progress_request(runner, job_id, step_id)
            sent = time.monotonic()
            try:
                resp = session.post(live_server + "/runner/progress", json=body, headers=headers, timeout=30)
                answer = Answer(step_id, sent, resp.status_code, resp.text)
            except requests.RequestException as exc:  # the server itself must never drop us
                answer = Answer(step_id, sent, 0, repr(exc))
            with lock:
                answers.append(answer)

    outage = Outage(database_url)
    threads = [threading.Thread(target=post, args=(w,), daemon=True) for w in range(POSTERS)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        outage.start()
        down_at = time.monotonic()
        time.sleep(1.5)
        outage.start()  # connections opened between the two calls are ended too
        outage.end()
        up_at = time.monotonic()
        time.sleep(2.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        outage.close()

    assert outage.terminated > 0, "the drill ended no connection of the app"
    assert answers and all(a.status for a in answers), [a.text for a in answers if not a.status][:3]
    # everything fails cleanly: the reference's JSON error body, no traceback, no HTML page
    for a in answers:
        assert "Traceback" not in a.text and "<html" not in a.text.lower(), a.text[:500]
        if a.status != 200:
            assert a.status in (500, 503), (a.status, a.text[:300])
            body = json.loads(a.text)
            assert set(body) == {"error"} and body["error"], body
    during = [a for a in answers if down_at + 0.2 <= a.sent_at < up_at - 0.1]
    assert during and any(a.status != 200 for a in during), "no request failed while the database was down"
    after = [a for a in answers if a.sent_at >= up_at + 1.0]
    failed_after = [(a.status, a.text[:200]) for a in after if a.status != 200]
    assert after and not failed_after, failed_after

    # nothing acknowledged was lost
    db.session.remove()
    stored = set(db.session.scalars(db.select(JobStep.step_id).where(JobStep.job_id == job_id)).all())
    acknowledged = {a.step_id for a in answers if a.status == 200}
    assert acknowledged <= stored, sorted(acknowledged - stored)[:10]
    assert job_of("ENG-1").status == "running"
