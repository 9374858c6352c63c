"""``GET /healthz``: 503 until the schema is the one this code needs, so a load balancer sends only
to processes that can serve; a newer schema (a rolling upgrade) is no reason to stop serving."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from aiimpl_core import hookimpl
from aiimpl_core.extensions import db
from aiimpl_core.testing.sql import schema_at


def test_a_current_schema_is_healthy(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "database": "ok", "schema": "ok", "failedPlugins": []}


def test_an_older_schema_answers_503_until_the_upgrade(app, client):
    with schema_at("0001"):
        resp = client.get("/healthz")
        assert resp.status_code == 503
        assert resp.get_json() == {"status": "degraded", "database": "ok", "schema": "upgrade needed",
                                   "failedPlugins": []}
    assert client.get("/healthz").status_code == 200


def test_a_newer_schema_is_a_rolling_upgrade_and_stays_healthy(app, client):
    with schema_at("ffff-a-later-version"):
        resp = client.get("/healthz")
        assert resp.status_code == 200
        assert resp.get_json()["schema"] == "ok"


def test_no_schema_at_all_answers_503(app, client):
    db.session.execute(text("ALTER TABLE alembic_version RENAME TO alembic_version_saved"))
    db.session.commit()
    try:
        resp = client.get("/healthz")
        assert resp.status_code == 503
        assert resp.get_json()["schema"] == "upgrade needed"
    finally:
        db.session.rollback()
        db.session.execute(text("ALTER TABLE alembic_version_saved RENAME TO alembic_version"))
        db.session.commit()
    assert client.get("/healthz").status_code == 200


def test_a_database_error_is_one_log_line_and_the_reference_500(app, client, admin_headers, caplog):
    """A statement the database refuses (here: a table gone) answers the 500 of the reference and
    logs one line with what the database said: no traceback, no statement, no parameters."""
    db.session.execute(text("ALTER TABLE mappings RENAME TO mappings_saved"))
    db.session.commit()
    try:
        resp = client.get("/api/mappings", headers=admin_headers)
        assert (resp.status_code, resp.get_json()) == (500, {"error": "Internal server error"})
    finally:
        db.session.rollback()
        db.session.execute(text("ALTER TABLE mappings_saved RENAME TO mappings"))
        db.session.commit()
    [line] = [r for r in caplog.records if "GET /api/mappings" in r.getMessage()]
    said = line.getMessage()
    assert said.startswith("database error on GET /api/mappings: ")
    assert "mappings" in said and line.exc_info is None
    assert "SELECT" not in said and "[SQL" not in said


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_database_that_does_not_answer_answers_503_quickly_and_says_no_more(app, client, caplog):
    """A load balancer's probe gets its answer in seconds, naming no host, user or password of the
    database (the endpoint is public); the log says why; and once the database answers, so does
    the probe."""
    import time

    from sqlalchemy import create_engine

    password = "db-password-not-for-probes"
    engines = db.engines
    real = engines[None]
    dead = create_engine(f"postgresql+psycopg://aiimpl:{password}@127.0.0.1:{_closed_port()}/aiimpl",
                         connect_args={"connect_timeout": 2})
    db.session.remove()
    engines[None] = dead  # type: ignore[index]
    try:
        started = time.monotonic()
        resp = client.get("/healthz")
        took = time.monotonic() - started
    finally:
        db.session.remove()
        engines[None] = real  # type: ignore[index]
        dead.dispose()
    assert resp.status_code == 503 and took < 5
    assert resp.get_json() == {"status": "degraded", "database": "unavailable", "schema": None,
                               "failedPlugins": []}
    assert resp.headers["Cache-Control"] == "no-store"
    for said in ("127.0.0.1", "aiimpl", password):
        assert said not in resp.get_data(as_text=True)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("health:")]
    assert "does not answer" in line and password not in line
    assert client.get("/healthz").status_code == 200


class _UnknownHook:
    @hookimpl
    def aiimpl_no_such_hook(self) -> None:
        pass


@pytest.mark.parametrize("aiimpl_plugins", [[_UnknownHook()]])
def test_a_plugin_that_failed_to_load_is_named_and_the_process_still_serves(client):
    failed = sorted(client.application.extensions["aiimpl"].failures())
    assert failed
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "database": "ok", "schema": "ok", "failedPlugins": failed}
