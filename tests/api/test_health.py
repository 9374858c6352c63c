"""``GET /healthz``: 503 until the schema is the one this code needs, so a load balancer sends only
to processes that can serve; a newer schema (a rolling upgrade) is no reason to stop serving."""
from __future__ import annotations

from sqlalchemy import text

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
