"""``GET /healthz``: the process is up and the database answers."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from ..extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # noqa: ANN201
    """Liveness and database check."""
    try:
        db.session.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - reported, not raised
        db.session.rollback()
        database = "unavailable"
    failed = sorted(current_app.extensions["aiimpl"].failures())
    status = 200 if database == "ok" else 503
    answer = jsonify(status="ok" if status == 200 else "degraded", database=database, failedPlugins=failed)
    return answer, status
