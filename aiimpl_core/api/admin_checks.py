"""``GET /api/checks``: the pre-flight checks of ``aiimpl check``, for the admin UI."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..services.checks import report, run_checks

bp = Blueprint("admin_checks", __name__)


@bp.get("/api/checks")
def checks():  # noqa: ANN201
    """Run the pre-flight checks of every connection.
    ---
    get:
      summary: Check, read-only, every tracker, runner backend and GitHub (as `aiimpl check`)
      description: >-
        Each configured tracker and runner backend checks its credentials and what the mappings
        that use it name; GitHub is checked for every mapped repository. A provider a mapping uses
        but that is not configured fails, and so does one no installed plugin provides; one nobody
        uses is skipped. The checks call the services while the request waits, side by side: one
        that has not answered within 20 seconds is reported failed (`no answer within 20 s`), and
        is not started again by a later request while it still waits (`still waiting for the answer
        to an earlier check`).
      tags: [admin]
      responses:
        200:
          description: One line per thing checked, how many failed, and the summary line
          content:
            application/json:
              schema: ChecksSchema
    """
    return jsonify(report(run_checks()))
