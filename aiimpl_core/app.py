"""The Flask application factory."""
from __future__ import annotations

import logging
import os
import secrets as _secrets
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import click
from flask import Blueprint, Flask, Request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from . import config as config_mod
from . import (
    database,  # (importing it installs the SQLite engine event listeners)
    logs,
)
from .database import MIGRATIONS_DIR
from .errors import ConfigError
from .extensions import db, migrate
from .http import HttpClient
from .plugins import Plugins
from .providers import ProviderContext
from .schemas.common import UnreadableBody

log = logging.getLogger("aiimpl")


def _uses_psycopg(url: str) -> bool:
    """Whether ``url`` connects through psycopg (3): named (``postgresql+psycopg://``), or the
    default driver of ``postgresql://`` (SQLAlchemy 2.1 and later)."""
    from sqlalchemy.engine import make_url

    return make_url(url).get_driver_name() == "psycopg"


#: seconds a new PostgreSQL connection may take (libpq's ``connect_timeout``)
CONNECT_TIMEOUT = 10

#: the settings of each process's connection pool: its size, and the connections beyond it at a peak
POOL_SETTINGS = ("AIIMPL_DB_POOL_SIZE", "AIIMPL_DB_MAX_OVERFLOW")


def _pool_sizes(config: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """The pool's size and overflow: the settings in ``config``, else the settings' defaults."""
    config = config or {}
    size, overflow = (int(config_mod.SETTINGS_BY_NAME[name].default if config.get(name) is None
                          else config[name]) for name in POOL_SETTINGS)
    return size, overflow


def _engine_options(url: str, pool: tuple[int, int] | None = None) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}, "hide_parameters": True}
    pool_size, max_overflow = pool or _pool_sizes()
    options: dict[str, Any] = {
        # a failed statement's message (logged, or raised to a caller) never carries the values it
        # was given: a secret, a token's digest, a comment's text
        "hide_parameters": True,
        # psycopg connections are checked at check-out at less cost (create_app installs it)
        "pool_pre_ping": not _uses_psycopg(url),
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_recycle": 1800,
    }
    if _uses_psycopg(url):
        # No server-side prepared statements: a statement psycopg prepares after a few runs keeps the
        # generic plan PostgreSQL made then, chosen while a table was small (a fresh install's
        # tracked_issues: a sequential scan, later ~100 ms per listing page at 10,000 issues); and
        # PgBouncer's transaction pooling cannot carry prepared statements anyway.
        options["connect_args"] = {"prepare_threshold": None}
        if "connect_timeout" not in make_url(url).query:
            # a server that does not answer (a partition, a firewall dropping packets) fails a
            # connection attempt in seconds, not after the kernel's SYN retries (about two minutes,
            # past gunicorn's worker timeout); the URL's own ?connect_timeout= wins
            options["connect_args"]["connect_timeout"] = CONNECT_TIMEOUT
    return options


#: the oldest SQLite the statements work on (``RETURNING``)
MIN_SQLITE = (3, 35, 0)


def _unreadable_body_errors() -> tuple[type[Exception], ...]:
    """What reading a body raises when it cannot be read: a broken connection (werkzeug's
    ``ClientDisconnected``, or the ``OSError`` of a stream it does not wrap) and, under gunicorn, a
    chunked body that breaks its framing (an invalid chunk size, a missing terminator: gunicorn's
    ``ParseException``, raised from ``wsgi.input``)."""
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:  # gunicorn is the server extra's
        return (ClientDisconnected, OSError)
    return (ClientDisconnected, OSError, ParseException)


_UNREADABLE_BODY = _unreadable_body_errors()


class _Request(Request):
    """Flask's request, whose body sent without a ``Content-Length`` (chunked) is refused when it
    reaches the size limit, as one announced larger is: werkzeug stops reading it at the limit
    and gives the first part as if it were the whole (a signature then checked on a cut body, or a
    JSON object that happens to end there taken). A body the server cannot read is
    :class:`UnreadableBody`, not the error of an unexpected exception."""

    def get_data(  # type: ignore[override]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> bytes | str:
        try:
            raw = super().get_data(cache=cache, as_text=False, parse_form_data=parse_form_data)
        except _UNREADABLE_BODY as exc:
            raise UnreadableBody() from exc
        limit = self.max_content_length
        if self.content_length is None and limit is not None and len(raw) >= limit:
            raise RequestEntityTooLarge()
        return raw.decode(errors="replace") if as_text else raw


def _flask() -> Flask:
    app = Flask("aiimpl_core", instance_path=os.environ.get("AIIMPL_INSTANCE_PATH") or None)
    app.request_class = _Request
    return app


#: ``create_app`` override of a process that reads no secret and signs nothing (``aiimpl db``): a key
#: it makes up for itself when none is set is not warned of
SIGNS_NOTHING = "AIIMPL_SIGNS_NOTHING"


def database_url(configured: str | None, instance_path: str | None = None) -> str:
    """The database URL in force: ``configured`` (``AIIMPL_DATABASE_URL``), else SQLite in the
    instance folder (made when missing). One the app cannot use raises :class:`ConfigError`."""
    url = configured
    if not url:
        instance_path = instance_path or _flask().instance_path
        try:
            os.makedirs(instance_path, exist_ok=True)
        except OSError as exc:  # an install folder this user cannot write to, say
            raise ConfigError(
                f"the instance folder {instance_path} for the default SQLite database cannot be made "
                f"({exc.strerror or type(exc).__name__}): set AIIMPL_DATABASE_URL"
            ) from None
        url = "sqlite:///" + os.path.join(instance_path, "aiimpl.db")
    check_database_url(url)
    return url


def database_engine(configured: str | None) -> Any:
    """An engine on the database in force (:func:`database_url`), with the app's options but
    without the app: gunicorn's master reads the schema's revision with it before its workers
    start, without loading plugins or starting the in-app scheduler in the master."""
    from sqlalchemy import create_engine

    url = database_url(configured)
    return create_engine(url, **_engine_options(url))


def _mask_settings(app: Flask, facade: Plugins) -> None:
    """Mask the values of the sensitive settings (the core's and every plugin's) and the database
    password in this process's log lines (:data:`aiimpl_core.logs.SECRETS`)."""
    from sqlalchemy.engine import make_url

    names = config_mod.sensitive_names(facade.config_vars())
    logs.mask(*(value for name in sorted(names)
                for value in config_mod.secret_strings(name, app.config.get(name))))
    try:
        logs.mask(make_url(app.config["SQLALCHEMY_DATABASE_URI"]).password)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot read is refused by the engine, with its error
        pass


def check_database_url(url: str) -> None:
    """Only SQLite and PostgreSQL are supported (upserts, advisory locks, array parameters): any
    other database is refused at start-up, not at its first write. The URL itself is not echoed
    (it may carry a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
    except (ArgumentError, ValueError):  # (ValueError: a port that is not a number)
        raise ConfigError("AIIMPL_DATABASE_URL is not a database URL") from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"AIIMPL_DATABASE_URL: the {backend} database is not supported; use SQLite "
            "(sqlite:///path) or PostgreSQL (postgresql+psycopg://user@host/db)"
        )
    # the driver is loaded now, as the engine would load it: gunicorn's master checks the URL
    # before its workers start, and would otherwise stop on the engine's traceback
    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except (NoSuchModuleError, ImportError):
        raise ConfigError(
            f"AIIMPL_DATABASE_URL: the {parsed.get_driver_name()} driver of {backend} is not installed "
            "(PostgreSQL: pip install 'aiimpl-core[postgres]', postgresql+psycopg://user@host/db)"
        ) from None
    if dialect.is_async:
        raise ConfigError(f"AIIMPL_DATABASE_URL: the {parsed.get_driver_name()} driver is asynchronous; "
                          "use postgresql+psycopg://user@host/db")
    if backend == "sqlite" and sqlite3.sqlite_version_info < MIN_SQLITE:
        # the callbacks' and the outbox's statements use RETURNING (SQLite 3.35)
        raise ConfigError(
            f"SQLite {'.'.join(map(str, MIN_SQLITE))} or newer is needed; this Python has SQLite "
            f"{sqlite3.sqlite_version}: use PostgreSQL, or a Python built with a newer SQLite"
        )


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    plugins: Iterable[object] = (),
    load_entrypoints: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Flask:
    """Build the application.

    :param config: values that override the environment (same keys as the ``AIIMPL_*`` variables,
        plus Flask's own such as ``TESTING``).
    :param plugins: extra plugin objects (modules or instances with hook implementations) — tests
        pass their fake tracker and runner here.
    :param load_entrypoints: load installed plugins from the ``aiimpl`` entry-point group.
    :param environ: the environment to read (default ``os.environ``).
    """
    app = _flask()
    overrides = dict(config or {})
    env = os.environ if environ is None else environ

    settings = config_mod.load(env)
    settings.update({k: v for k, v in overrides.items() if k in config_mod.SETTINGS_BY_NAME})
    app.config.update(settings)
    # logging first: the plugins' loading and registration (warnings, and their trace at debug
    # level) are logged like any other line, in the operator's format, with the core's secrets masked
    logs.configure(str(app.config.get("AIIMPL_LOG_LEVEL") or "INFO"),
                   str(app.config.get("AIIMPL_LOG_FORMAT") or "text"))
    logs.mask(*(value for name in sorted(config_mod.sensitive_names())
                for value in config_mod.secret_strings(name, app.config.get(name))))

    facade = Plugins(
        load_entrypoints=load_entrypoints,
        extra=plugins,
        disabled=app.config["AIIMPL_DISABLED_PLUGINS"] or (),
        trace=bool(app.config["AIIMPL_TRACE_PLUGINS"]),
    )
    for _pid, var in facade.config_vars():
        if var.name not in app.config:
            app.config[var.name] = env.get(var.name) or var.default
    app.config.update(overrides)

    if not app.config.get("AIIMPL_SECRET_KEY"):
        # (said as what it allows: a poller or dispatcher then refuses to run on it, with the reason;
        # not by a process that reads no secret and signs nothing, aiimpl db)
        if not app.config.get(SIGNS_NOTHING):
            log.warning("AIIMPL_SECRET_KEY is not set: this process signs with a random key of its own, "
                        "which no other process shares (stored secrets and run tokens need the shared key)")
        app.config["AIIMPL_SECRET_KEY"] = _secrets.token_hex(32)
        app.config["AIIMPL_SECRET_KEY_MADE_UP"] = True  # stored secrets are refused
    elif warning := config_mod.secret_key_warning(str(app.config["AIIMPL_SECRET_KEY"])):
        log.warning("%s", warning)  # (not in a gunicorn worker: its master said it for all of them)
    app.config["SECRET_KEY"] = app.config["AIIMPL_SECRET_KEY"]

    url = app.config["AIIMPL_DATABASE_URL"] = database_url(app.config.get("AIIMPL_DATABASE_URL"),
                                                          app.instance_path)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    _mask_settings(app, facade)
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _engine_options(url, _pool_sizes(app.config)))
    app.config["MAX_CONTENT_LENGTH"] = app.config.get("MAX_CONTENT_LENGTH") or 2 * 1024 * 1024
    hops = int(app.config.get("AIIMPL_PROXY_HOPS") or 0)
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # the client's address, scheme and host as the trusted proxies pass them on
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    db.init_app(app)
    if _uses_psycopg(url):
        with app.app_context():
            database.check_connections_at_checkout(db.engine)
            if app.config["AIIMPL_DB_PREPARED"]:
                database.prepare_marked_statements(db.engine)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True, compare_type=True)

    def make_http(base_url: str = "", **kwargs: Any) -> HttpClient:
        return HttpClient(base_url, **kwargs)

    from .services import secrets as secrets_service

    context = ProviderContext(
        config=app.config,
        http=make_http,
        secret=lambda name, scope=None: secrets_service.read_value(app, name, scope),
        logger=log,
        mappings=_mapping_views,
    )
    facade.bind(context)
    app.extensions["aiimpl"] = facade
    for name, error in facade.failures().items():
        log.error("plugin %s is not loaded: %s", name, error)
    if unknown := facade.unknown_disabled_said():
        log.warning("%s", unknown)

    from .api import register_api

    register_api(app)
    _register_blueprints(app, facade)
    # the command line adds the plugins' commands with a facade of its own: a plugin whose
    # command hook raises is refused here too, so the server does not run what the CLI left out
    facade.add_commands(click.Group("aiimpl"))

    from .ui import register_ui

    register_ui(app)

    if app.config.get("AIIMPL_SCHEDULER") and not app.config.get("TESTING"):
        from .services.scheduler import start_scheduler

        start_scheduler(app)
    return app


def probe_registrations(facade: Plugins) -> None:
    """Run the registration hooks a server runs, on a scratch app holding the core's routes and on a
    scratch command group: a plugin the server would refuse (a hook that raises, a blueprint whose
    name is taken or that Flask cannot take) is refused in ``facade`` too (``aiimpl plugins list``)."""
    from .api import register_api

    probe = Flask("aiimpl")
    register_api(probe)
    _register_blueprints(probe, facade)
    facade.add_commands(click.Group("aiimpl"))


def _register_blueprints(app: Flask, facade: Plugins) -> None:
    """Register each plugin's blueprints, all of a plugin's or none: a plugin with a blueprint
    whose name is taken (by the core, another plugin or its own other blueprint) is refused before
    any of its routes is added, since a Flask app cannot take a blueprint back."""
    by_plugin: dict[str, list[tuple[Blueprint, dict[str, Any]]]] = {}
    for plugin_name, blueprint, options in facade.blueprints():
        by_plugin.setdefault(plugin_name, []).append((blueprint, options))
    for plugin_name, entries in by_plugin.items():
        names = [options.get("name", blueprint.name) for blueprint, options in entries]
        taken = next((n for i, n in enumerate(names) if n in app.blueprints or n in names[:i]), None)
        if taken is not None:
            facade.refuse(plugin_name, f"blueprint {taken!r} failed: the name is registered already")
            continue
        for blueprint, options in entries:
            try:
                app.register_blueprint(blueprint, **options)
            except Exception as exc:  # noqa: BLE001 - a plugin's blueprint must not take the app down
                facade.refuse(plugin_name, f"blueprint {blueprint.name!r} failed: {exc}")
                break


def _mapping_views() -> list[Any]:
    """Every mapping as a :class:`~aiimpl_core.types.MappingView` (for ``ProviderContext.mappings``)."""
    from sqlalchemy import select

    from .orm import Mapping as MappingRow

    return [row.view() for row in db.session.scalars(select(MappingRow).order_by(MappingRow.team_key))]


def plugins_of(app: Flask) -> Plugins:
    """The app's plugin facade."""
    return app.extensions["aiimpl"]
