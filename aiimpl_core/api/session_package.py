"""``GET /runner/session-package/<filename>``: the session program as a wheel, for runners to install.

Public: the wheel holds the open-source program only (:mod:`aiimpl_core.session_package` says what
it takes of the package directory and what never). The GitHub Actions workflows install it by
default, pinned to its sha256.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request

from .. import session_package
from ..errors import ConfigError

log = logging.getLogger(__name__)
bp = Blueprint("session_package", __name__)


@bp.get("/runner/session-package/<path:filename>")
def session_package_file(filename: str):  # noqa: ANN201
    """Download the session program.
    ---
    get:
      summary: The session program, a wheel of this orchestrator's aiimpl-core
      description: >-
        The wheel of the running `aiimpl-core` (`aiimpl_core-<version>-py3-none-any.whl`, the
        version as installed): the files of its package directory and the installed distribution's
        metadata, built once per process, the same bytes in every process of a deployment. Any
        other file name answers 404 `package_not_found`, as does an orchestrator whose
        distribution is not installed (run from a source tree). The GitHub Actions workflows
        install it by default as
        `aiimpl-core @ <AIIMPL_PUBLIC_URL>/runner/session-package/<file>#sha256=<hash>`.
        The `ETag` is the wheel's sha256; the same file name can hold other bytes after a deploy
        that kept the version, so caches revalidate (`no-cache`, `304` on `If-None-Match`).
      tags: [runner]
      security: []
      responses:
        200:
          description: The wheel
          headers:
            ETag:
              description: The wheel's sha256 (hex), quoted
              schema:
                type: string
            Cache-Control:
              description: "`public, no-cache`: kept by caches, revalidated by its ETag"
              schema:
                type: string
          content:
            application/octet-stream:
              schema:
                type: string
                format: binary
        304:
          description: Not modified (`If-None-Match` named the wheel's ETag)
        404:
          description: package_not_found (another file name, or no installed distribution to build it from)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    try:
        package = session_package.current()
    except ConfigError as exc:
        log.warning("the session package cannot be served: %s", exc.message)
        return jsonify(error="package_not_found"), 404
    # (a path converter: a name with a slash is answered as any other name)
    if filename != package.filename:
        return jsonify(error="package_not_found"), 404
    resp = Response(package.data, mimetype="application/octet-stream")
    resp.headers["Content-Disposition"] = f"attachment; filename={package.filename}"
    # (set before the app's after_request, whose no-store is only a default)
    resp.headers["Cache-Control"] = "public, no-cache"
    resp.set_etag(package.sha256)
    return resp.make_conditional(request)
