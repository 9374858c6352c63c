"""On PostgreSQL, the statements of the runner callbacks every session sends (``/runner/progress``
and ``/api/status``) are planned once per connection (``AIIMPL_DB_PREPARED``), and no others."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


@pytest.fixture(autouse=True)
def _postgresql_only(app):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")


class _Connections:
    """The driver connections statements went over meanwhile, with the statements sent on each."""

    def __init__(self) -> None:
        self.sent: dict[Any, list[str]] = {}

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sent.setdefault(cursor.connection, []).append(" ".join(statement.split()))

    def __enter__(self) -> _Connections:
        event.listen(db.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(db.engine, "before_cursor_execute", self)


def _prepared_on(driver: Any) -> set[str]:
    with driver.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements")
        names = {" ".join(row[0].split()) for row in cur.fetchall()}
    driver.commit()  # (a rollback would have psycopg deallocate them)
    return names


def _starting(statements: set[str], *prefixes: str) -> set[str]:
    return {s for s in statements if s.upper().startswith(prefixes)}


def test_a_progress_report_s_statements_are_prepared_and_no_others(client, cb_job, cb_token):
    job_id, _ = cb_job(status="running")
    token = cb_token(job_id, "implementation", tokens.AUD_PROGRESS)
    with _Connections() as connections:
        for n in range(4):
            running = {"id": f"s{n}", "type": "git", "status": "running",
                       "started_at": "2026-11-29T05:00:00Z"}
            finished = dict(running, status="succeeded", finished_at="2026-11-29T05:00:09Z",
                            detail={"exitCode": 0})
            for body in (running, finished):
                resp = client.post("/runner/progress", json={"step": body},
                                   headers={"Authorization": f"Bearer {token}"})
                assert resp.status_code == 200, resp.get_json()
    prepared: set[str] = set()
    for driver in connections.sent:
        prepared |= _prepared_on(driver)
    # the step's upsert with and without a detail, and the read of whose job it is
    assert len(_starting(prepared, "INSERT INTO JOB_STEPS")) == 2, prepared
    assert len(_starting(prepared, "SELECT JOBS.TEAM_KEY")) == 1, prepared
    assert len(prepared) == 3, prepared


def test_a_status_event_s_statements_are_prepared_and_no_others(client, cb_job, cb_tracker):
    _, nonce = cb_job(status="running")
    with _Connections() as connections:
        for event_name in ("environment_ready", "verification_passed"):
            resp = client.post("/api/status", json={"nonce": nonce, "event": event_name})
            assert resp.status_code == 200, resp.get_json()
    assert len(cb_tracker.comments["ENG-1"]) == 2
    prepared: set[str] = set()
    for driver in connections.sent:
        prepared |= _prepared_on(driver)
    # the job by its nonce (under its row lock), the comment queued taken, then marked posted
    assert len(_starting(prepared, "SELECT JOBS.ID")) == 1 and "FOR NO KEY UPDATE" in str(prepared), prepared
    assert len(_starting(prepared, "INSERT INTO OUTBOX")) == 1, prepared
    assert len(_starting(prepared, "UPDATE OUTBOX")) == 1, prepared
    assert len(prepared) == 3, prepared
