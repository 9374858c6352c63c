"""The HTTP API: blueprints, the admin guard and the error handlers."""
from __future__ import annotations

import re

from flask import Flask, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from .. import logs
from ..auth import admin, bearer_refused, needs_admin_session
from ..database import failure_reason
from ..errors import AiimplError
from ..schemas.common import UNAUTHORIZED, ApiError, UnreadableBody

#: Paths whose errors are the reference's slugs ("For /runner/* and /trigger/gap-fill, a stable slug
#: code"); every other path answers a human-readable message.
SLUG_PATHS = ("/runner/", "/trigger/")

#: Blueprint modules, each exposing ``bp``: grouped as the reference groups the endpoints.
BLUEPRINT_MODULES = (
    "health",
    "metrics",
    # integration and callback API (runners, automation)
    "runner",
    "session_package",
    "trigger",
    "session",
    "webhook",
    # admin API
    "admin_auth",
    "admin_jobs",
    "admin_mappings",
    "admin_runner_mode",
    "admin_sessions",
    "admin_outbox",
    "admin_checks",
    "admin_secrets",
    "openapi",
)


def register_api(app: Flask) -> None:
    """Register every blueprint, then the admin guard and the error handlers (in one place)."""
    import importlib

    for name in BLUEPRINT_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        app.register_blueprint(module.bp)
    _install_hardening(app)
    _install_admin_guard(app)
    _install_error_handlers(app)


def _install_hardening(app: Flask) -> None:
    """Headers every answer carries, and paths no route can take."""

    @app.before_request
    def _refuse_nul_in_path():  # noqa: ANN202
        # NUL never belongs in a path, and PostgreSQL refuses it in text. In a route's parameter it
        # becomes U+FFFD, which no key, id or name the views look up can hold: each answers its own
        # "not found" (`Team not found`, `{"deleted": false}` …). Anywhere else: no route.
        if "\x00" not in request.path:
            return None
        args = request.view_args or {}
        in_a_parameter = any(isinstance(v, str) and "\x00" in v for v in args.values())
        if request.routing_exception is None and in_a_parameter:
            request.view_args = {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
                                 for k, v in args.items()}
            return None
        return jsonify(error="not_found" if _answers_slugs() else "Not Found"), 404

    @app.after_request
    def _headers(resp):  # noqa: ANN001, ANN202
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        # (base-uri and form-action fall back to no default-src: a <base> or a form's action put in
        # a page would send its relative links, or a typed access code, elsewhere)
        policy = ("default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
                  if request.path.startswith("/ui") else "frame-ancestors 'none'")
        resp.headers.setdefault("Content-Security-Policy", policy)
        hsts = int(app.config.get("AIIMPL_HSTS_SECONDS") or 0)
        if hsts and request.is_secure:
            # (a browser ignores it over plain HTTP; sent there it would only mislead a reader)
            resp.headers.setdefault("Strict-Transport-Security", f"max-age={hsts}")
        if not request.path.startswith(("/static/", "/ui/static/")):
            # session tokens, run tokens, secrets' names, jobs: never kept by a browser or a proxy
            resp.headers.setdefault("Cache-Control", "no-store")
        if resp.location and resp.location.startswith(request.host_url):
            # werkzeug's slash redirect (``/ui`` to ``/ui/``) names the host the request named:
            # a redirect stays on whatever host the client reached, whatever its Host header said
            resp.location = "/" + resp.location[len(request.host_url):]
        if 300 <= resp.status_code < 400 and not resp.direct_passthrough:
            # and so does the page that comes with it, which links the address it redirects to
            resp.set_data(resp.get_data().replace(request.host_url.encode(), b"/"))
        return resp


def _install_admin_guard(app: Flask) -> None:
    """Every ``/api/`` route needs the admin session unless its view is marked public."""

    @app.before_request
    def _require_admin():  # noqa: ANN202
        if request.url_rule is None:
            return None
        if request.method == "OPTIONS" and getattr(request.url_rule, "provide_automatic_options", False):
            # Flask answers it with the allowed methods and calls no view; a view that takes
            # OPTIONS itself is guarded like any other method
            return None
        view = app.view_functions.get(request.endpoint or "")
        if view is None or not needs_admin_session(request.path, view):
            return None
        if admin.session_valid(admin.bearer(request.headers.get("Authorization"))):
            return None
        return bearer_refused(UNAUTHORIZED)


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # noqa: ANN202
        # a body over the size cap, or one the server could not read (a chunked body whose framing
        # broke), is answered as its endpoint answers one it cannot parse
        untaken = exc.code == 413 or isinstance(exc, UnreadableBody)
        if untaken and _answers_slugs():
            return jsonify(error="invalid_body"), 400
        if untaken:
            # the tracker webhooks' tables say "Invalid JSON payload" (their views read the body unguarded)
            tracker_webhooks = {"/api/linear/webhook", "/api/jira/webhook"}
            if request.path in tracker_webhooks:
                return jsonify(error="Invalid JSON payload"), 400
            return jsonify(error="Invalid request body"), 400
        # no route, or a method the route does not take: werkzeug's sentence, or its name as a slug
        resp = jsonify(error=_slug(exc) if _answers_slugs() else exc.description or exc.name)
        for name, value in exc.get_headers():  # a 405's Allow above all (RFC 9110 wants it)
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp, exc.code

    # (an error's message may quote a remote answer, and the answer the failed request's
    # credentials: masked as in the log)
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):  # noqa: ANN202
        return jsonify(logs.masked(exc.body())), exc.status

    @app.errorhandler(AiimplError)
    def _aiimpl_error(exc: AiimplError):  # noqa: ANN202
        return jsonify(error=logs.masked(exc.message)), 400

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):  # noqa: ANN202
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        if isinstance(exc, SQLAlchemyError):
            # the database is down, restarting or behind this code's schema: one line with what it
            # said (no second call to it: it may be unreachable), never a driver's traceback or a
            # statement's parameters
            app.logger.error("database error on %s %s: %s", request.method, _path(), failure_reason(exc))
            return _internal_error()
        app.logger.exception("unhandled error on %s %s", request.method, _path())
        return _internal_error()


def _answers_slugs() -> bool:
    """Whether the current request's errors are slugs (:data:`SLUG_PATHS`) rather than messages."""
    return request.path.startswith(SLUG_PATHS)


def _slug(exc: HTTPException) -> str:
    """werkzeug's name of an HTTP error as a slug: ``Not Found`` is ``not_found``, ``Method Not
    Allowed`` ``method_not_allowed``."""
    return re.sub(r"[^a-z]+", "_", exc.name.lower()).strip("_") or "error"


def _internal_error():  # noqa: ANN202
    """The 500 of an unexpected or a database error: the reference's message, or a slug on the
    paths that answer slugs (the reference's tables list no 500 of theirs)."""
    return jsonify(error="internal_error" if _answers_slugs() else "Internal server error"), 500


def _path() -> str:
    """The request's path for a log line (:func:`aiimpl_core.logs.logged_path`)."""
    return logs.logged_path(request.environ.get("PATH_INFO", ""))
