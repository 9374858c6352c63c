"""``GET /healthz``: the process is up, the database answers and its schema is this code's."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify

from ..database import failure_reason, schema_behind, schema_revision

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # noqa: ANN201
    """Liveness, database and schema check.
    ---
    get:
      summary: Liveness, database and schema check
      description: >-
        503 when the database does not answer, or when its schema is missing or older than this
        code (`schema` is `upgrade needed`: `aiimpl db upgrade` has not run yet, so a load
        balancer goes on sending to the processes that can serve); a schema newer than this code
        is a rolling upgrade under way and answers 200. Plugins that failed to load are listed
        and do not make the answer 503.
      tags: [meta]
      responses:
        200:
          description: The process can serve
          content:
            application/json:
              schema: HealthSchema
        503:
          description: The database does not answer, or its schema needs `aiimpl db upgrade`
          content:
            application/json:
              schema: HealthSchema
    """
    database, schema = "unavailable", None
    try:
        revision = schema_revision()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        # the answer says only "unavailable" (it is public); the log says why
        log.warning("health: the database does not answer: %s", failure_reason(exc))
    else:
        database = "ok"
        schema = "upgrade needed" if schema_behind(revision) else "ok"
    failed = sorted(current_app.extensions["aiimpl"].failures())
    status = 200 if database == "ok" and schema == "ok" else 503
    answer = jsonify(status="ok" if status == 200 else "degraded", database=database, schema=schema,
                     failedPlugins=failed)
    return answer, status
