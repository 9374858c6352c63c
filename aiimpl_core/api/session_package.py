"""``GET /runner/session-package/<sha256>/<filename>``: the session program as a wheel, for runners to
install, by its hash; ``GET /runner/session-package/<filename>``: the running one.

Public: the wheels hold the open-source program only (:mod:`aiimpl_core.session_package` says what
it takes of the package directory and what never). The GitHub Actions workflows install one by
default, pinned to its sha256; the wheels they were synced to pin stay served by their hash after a
deploy serves another.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from .. import session_package

bp = Blueprint("session_package", __name__)

#: a wheel named by its hash never holds other bytes: kept by caches for a year
IMMUTABLE = "public, max-age=31536000, immutable"
#: the running wheel's URL without a hash holds other bytes after a deploy: revalidated by its ETag
REVALIDATED = "public, no-cache"


def _wheel(package: session_package.SessionPackage, cache_control: str) -> Response:
    resp = Response(package.data, mimetype="application/octet-stream")
    resp.headers["Content-Disposition"] = f"attachment; filename={package.filename}"
    # (set before the app's after_request, whose no-store is only a default)
    resp.headers["Cache-Control"] = cache_control
    resp.set_etag(package.sha256)
    return resp.make_conditional(request)


def _not_found() -> tuple[Response, int]:
    return jsonify(error="package_not_found"), 404


@bp.get("/runner/session-package/<sha256>/<filename>")
def session_package_pinned(sha256: str, filename: str):  # noqa: ANN201
    """Download the session program by its hash.
    ---
    get:
      summary: The session program, a wheel of aiimpl-core, by its sha256
      description: >-
        A wheel of `aiimpl-core` (`aiimpl_core-<version>-py3-none-any.whl`) by its sha256 (hex,
        lower case): the running one, or one a GitHub Actions workflow sync pinned and the
        orchestrator keeps (in the database), so that a workflow synced before a deploy that
        changed the core's files still installs the program it was synced with. This is the URL the
        workflows install by default:
        `aiimpl-core @ <AIIMPL_PUBLIC_URL>/runner/session-package/<sha256>/<file>#sha256=<sha256>`.
        A hash and name it neither runs nor keeps (the housekeeping removes a wheel no sync or check
        has pinned for 90 days, but the five pinned last and the running one) answer 404
        `package_not_found`. The bytes at one URL never change: cached as immutable, with the sha256
        as `ETag`.
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
              description: "`public, max-age=31536000, immutable`: the bytes at this URL never change"
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
          description: package_not_found (a hash and file name this orchestrator neither runs nor keeps)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    package = session_package.find(f"{sha256}/{filename}")
    if package is None:
        return _not_found()
    return _wheel(package, IMMUTABLE)


@bp.get("/runner/session-package/<path:filename>")
def session_package_file(filename: str):  # noqa: ANN201
    """Download the running session program.
    ---
    get:
      summary: The session program, a wheel of this orchestrator's aiimpl-core
      description: >-
        The wheel of the running `aiimpl-core` (`aiimpl_core-<version>-py3-none-any.whl`, the
        version as installed): the files of its package directory and the installed distribution's
        metadata, built once per process, the same bytes in every process of a deployment. Any
        other file name answers 404 `package_not_found`, as does an orchestrator whose
        distribution is not installed (run from a source tree). It serves a wheel URL set by hand in
        `AIIMPL_GHA_SESSION_PACKAGE`; a workflow sync writes the one with the hash
        (`/runner/session-package/{sha256}/{filename}`), which still serves the wheel after a
        deploy. The `ETag` is the wheel's sha256; the same file name can hold other bytes after a
        deploy that kept the version, so caches revalidate (`no-cache`, `304` on `If-None-Match`).
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
    # (a path converter: a name with slashes the route above does not take is answered as any other)
    if "/" in filename:
        return _not_found()
    package = session_package.find(filename)
    if package is None:
        return _not_found()
    return _wheel(package, REVALIDATED)
