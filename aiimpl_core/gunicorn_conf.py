"""Production gunicorn configuration: ``gunicorn -c python:aiimpl_core.gunicorn_conf aiimpl_core.wsgi:app``.

Every value can be overridden with an environment variable (shown beside it) or on the command line.
Threaded workers suit the API: requests are short and wait mostly on the database.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import sys
import time

from gunicorn import glogging

# (underscored: gunicorn takes every other module-level name that is one of its settings, and
# ``config`` is one)
from aiimpl_core import config as _config
from aiimpl_core import logs as _logs
from aiimpl_core.errors import ConfigError


def _count(name: str, default: int, minimum: int) -> int:
    """An integer setting of this file; a wrong one stops gunicorn with a message that names it."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        _refuse(f"{name} must be an integer of at least {minimum}, not {raw!r}")
    return value


def _refuse(message: str) -> None:
    """Stop gunicorn on a wrong setting of this file, before its logger exists: gunicorn says
    ``Error: message`` in text, so with ``AIIMPL_LOG_FORMAT=json`` the line is written as its
    logger would write it, a JSON object."""
    if _logs.from_environ("INFO")[1] != "json":
        raise ValueError(message)
    record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 0, "Error: %s", (message,), None)
    sys.stderr.write(_logs.json_formatter().format(record) + "\n")
    sys.stderr.flush()
    sys.exit(1)


def _bind(raw: str) -> str:
    """``AIIMPL_BIND``: ``HOST:PORT`` (``[::1]:8000``) or ``unix:PATH``; a port out of range is said
    here, as gunicorn itself answers it with a traceback of its socket code."""
    value = raw.strip()
    if value.startswith(("unix:", "fd://")):
        return value
    host, colon, port = value.removeprefix("tcp://").rpartition(":")
    if colon and not host.endswith("]") and ":" in host:  # an IPv6 address without its brackets
        return value
    if colon and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        _refuse(f"AIIMPL_BIND: the port must be a number from 0 to 65535, not {port!r}")
    return value


bind = _bind(os.environ.get("AIIMPL_BIND", "0.0.0.0:8000"))
workers = _count("AIIMPL_WORKERS", multiprocessing.cpu_count() * 2 + 1, 1)
# gunicorn's gthread worker, answering the requests gunicorn refuses before the app runs (a URL or
# headers over its limits, a request it cannot parse) as JSON, as the app answers every other error
_OUR_WORKER = "aiimpl_core.gunicorn_worker.ThreadWorker"
worker_class = _OUR_WORKER
threads = _count("AIIMPL_THREADS", 4, 1)
timeout = _count("AIIMPL_WORKER_TIMEOUT", 30, 1)
# How long a stopping worker has for its requests in flight (and, with AIIMPL_SCHEDULER, its poll
# cycle) before the master kills it (--graceful-timeout sets another).
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so that a slow leak in a plugin cannot grow without bound (0: never).
max_requests = _count("AIIMPL_MAX_REQUESTS", 20000, 0)
max_requests_jitter = max_requests // 10
# Each worker opens its own database pool after the fork.
preload_app = False
accesslog = os.environ.get("AIIMPL_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = _logs.from_environ("INFO")[0].lower()  # as the app reads it (" Debug " is DEBUG)
# What a proxy passes on (scheme, client address, host) is trusted by the app alone, as far as
# AIIMPL_PROXY_HOPS says (werkzeug's ProxyFix): gunicorn's own default trusts X-Forwarded-Proto
# from any local client, so with no proxy hops a local client could still claim https.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
# Never log request headers: they carry bearer tokens.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
# gunicorn 25.1 and later open a control socket (``gunicornc``) at one path per user
# ($XDG_RUNTIME_DIR or ~/.gunicorn): a second instance on the host takes the path over, and the first
# to stop removes it, so gunicornc would manage the wrong instance or none. Off unless
# AIIMPL_CONTROL_SOCKET names this instance's own path. (Older gunicorns ignore both names.)
_control_socket = os.environ.get("AIIMPL_CONTROL_SOCKET", "").strip()
control_socket_disable = not _control_socket
if _control_socket:
    control_socket = _control_socket


def _mask_raw_env(cfg) -> None:  # noqa: ANN001
    """gunicorn logs its settings at debug level, ``-e NAME=value`` (``raw_env``) among them, before
    it puts those in the environment the app's masking reads: the values of secrets there are
    masked from the start, and a database URL's password."""
    from sqlalchemy.engine import make_url

    # beyond the core's sensitive settings, names that say they hold a secret (a plugin's
    # AIIMPL_LINEAR_API_KEY, AIIMPL_JIRA_API_TOKEN …: the master loads no plugin), as the session
    # program tells its own
    from aiimpl_core.session.env import LIKELY_SECRET_NAME

    sensitive = _config.sensitive_names()
    for name, value in (getattr(cfg, "env", None) or {}).items():
        if not isinstance(value, str):
            continue
        if name in sensitive or LIKELY_SECRET_NAME.search(name):
            _logs.mask(*_config.secret_strings(name, value))
        elif name == "AIIMPL_DATABASE_URL":
            try:
                _logs.mask(make_url(value).password)
            except Exception:  # noqa: BLE001, S110 - a URL that cannot be read is refused at start-up
                pass


class Logger(glogging.Logger):
    """gunicorn's logger, with its error and access lines in the app's format of
    ``AIIMPL_LOG_FORMAT`` (a text line starts with a UTC time, the level and the logger as well),
    its error lines and the client's text in its access lines masked of the known secrets
    (:data:`aiimpl_core.logs.SECRETS`), and the path of an access line as it was sent
    (:func:`aiimpl_core.logs.logged_path`)."""

    def setup(self, cfg) -> None:  # noqa: ANN001
        super().setup(cfg)
        _mask_raw_env(cfg)
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            _logs.guard(handler)  # the worker's sensitive settings are masked here too
        json_lines = _logs.from_environ("INFO")[1] == "json"
        formatter = _logs.json_formatter() if json_lines else _logs.TextFormatter()
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(formatter)

    def atoms(self, resp, req, environ, request_time) -> dict:  # noqa: ANN001
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["U"] = _logs.logged_path(environ.get("PATH_INFO") or "")
        return atoms

    def warning(self, msg, *args, **kwargs) -> None:  # noqa: ANN001
        # a request gunicorn refused is logged with what it could not read quoted (the request line
        # with its query string, a header line with its value): only a plain word of it is kept
        if isinstance(msg, str) and msg.startswith("Invalid request from ip="):
            msg = _QUOTED.sub(_unquoted, msg)
        super().warning(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs) -> None:  # noqa: ANN001
        # "Error handling request %s": the URI as received, query string included
        if isinstance(msg, str) and msg.startswith("Error handling request"):
            args = tuple(_without_query(a) if isinstance(a, str) else a for a in args)
        super().exception(msg, *args, **kwargs)


#: a Python repr of a string in a log line, in single or double quotes
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')
#: what of a quoted text a refused request's log line keeps: a header's name, a method, a version
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./-]{0,64}")


def _unquoted(found: re.Match) -> str:
    text = found[0]
    return text if _PLAIN_WORD.fullmatch(text[1:-1]) else f"{text[0]}(not shown){text[0]}"


def _without_query(uri: str) -> str:
    path, query_mark, _query = uri.partition("?")
    return f"{path}?(not shown)" if query_mark else path


logger_class = Logger


def on_starting(server) -> None:  # noqa: ANN001
    """Refuse a configuration that is not valid before any worker starts, with its message (a
    worker would fail to boot on it, once per worker, with a traceback)."""
    try:
        settings = _config.load()
    except ConfigError as exc:
        server.log.error("Error: %s", exc.message)
        sys.exit(1)
    if not settings["AIIMPL_SECRET_KEY"]:
        # each worker would make up a key of its own: a session signed by one is refused by the next,
        # and a secret saved through one can never be read by the others or the poller
        server.log.error("Error: AIIMPL_SECRET_KEY is not set: every worker, poller and host must share "
                         "one key (make one with `python -c 'import secrets; print(secrets.token_hex(32))'`)")
        sys.exit(1)
    if warning := _config.secret_key_warning(settings["AIIMPL_SECRET_KEY"]):  # (once: see its doc)
        server.log.warning(warning)
    if warning := _config.access_code_warning(settings["AIIMPL_ADMIN_ACCESS_CODE"]):
        server.log.warning(warning)
    if warning := _worker_class_warning(server.cfg.worker_class):
        server.log.warning(warning)
    if warning := _sqlite_warning(settings["AIIMPL_DATABASE_URL"], server.cfg.workers):
        server.log.warning(warning)
    problem = _schema_problem(server, settings["AIIMPL_DATABASE_URL"])
    if problem:
        server.log.error("Error: %s", problem)
        sys.exit(1)


def _sqlite_warning(url: str | None, workers: int) -> str | None:
    """SQLite under several workers (the production configuration's default of ``2 x cores + 1``,
    an ``AIIMPL_DATABASE_URL`` forgotten): it works, one writer at a time, every other waiting for
    it; PostgreSQL is the database for that."""
    from aiimpl_core.app import database_url

    try:
        sqlite = database_url(url).startswith("sqlite")
    except ConfigError:
        return None  # said by the schema's check, which follows
    if not sqlite or workers <= 1:
        return None
    return (f"the database is SQLite and gunicorn runs {workers} workers: SQLite lets one of them write "
            "at a time and the others wait for it; set AIIMPL_DATABASE_URL to PostgreSQL, or run one "
            "worker (AIIMPL_WORKERS=1)")


def _worker_class_warning(worker_class: type) -> str | None:
    """What is lost when ``--worker-class`` (or ``GUNICORN_CMD_ARGS``) replaced this file's worker."""
    from .gunicorn_worker import ThreadWorker

    if isinstance(worker_class, type) and issubclass(worker_class, ThreadWorker):
        return None
    name = f"{worker_class.__module__}.{worker_class.__qualname__}"
    return (f"the worker class is {name}, not {_OUR_WORKER}: requests gunicorn refuses before the "
            "app runs (a URL or headers over its limits, a request it cannot read) are answered with "
            "gunicorn's HTML pages instead of the API's JSON errors")


def _schema_problem(server, url: str | None) -> str | None:  # noqa: ANN001
    """What keeps the database from serving this version (no schema, or an older one), read once
    before the workers start; a database that does not answer yet is waited for by the workers.

    Read through an engine of its own, not an app: an app built in the master would load every
    plugin there and, with ``AIIMPL_SCHEDULER``, run poll cycles in the master for its whole life.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from aiimpl_core.app import database_engine
    from aiimpl_core.database import failure_reason, schema_problem, schema_revision

    try:
        engine = database_engine(url)
    except ConfigError as exc:
        return exc.message
    try:
        return schema_problem(schema_revision(engine), engine)
    except SQLAlchemyError as exc:
        server.log.warning("the database does not answer yet: %s", failure_reason(exc))
        return None
    finally:
        engine.dispose()  # no connection of the master's is inherited by a worker


# -- the in-app scheduler's stop (AIIMPL_SCHEDULER) ---------------------------------------------
#
# A worker's graceful stop (SIGTERM: a deploy, a restart) ends when its requests in flight are
# answered, at once when there are none; the scheduler's daemon thread would die with it wherever
# its cycle was (a dispatch launched but not recorded ends ``run_not_found`` ten minutes later, a
# tracker write waits out its lease). So the stop is passed on to the scheduler as the worker gets
# it: its cycle ends after the step it is in (a listing page, a dispatch, a backend's reconcile, the
# outbox's delivery), leaving the rest to the next poller, and the worker waits for that within
# what is left of the graceful timeout.

#: when this worker was asked to stop gracefully (``time.monotonic()``), if it was
_stop_asked: list[float] = []
#: whether it was told to stop at once instead (SIGINT, SIGQUIT, or its timeout's SIGABRT)
_stop_now: list[bool] = []
#: seconds kept from the graceful timeout for the worker's own exit, before the master's SIGKILL
_EXIT_MARGIN = 2.0


def _scheduler():  # noqa: ANN202
    """The scheduler's module, if this process imported it: a process that did not (the master, a
    worker without AIIMPL_SCHEDULER) runs no scheduler, and imports nothing for it here."""
    return sys.modules.get("aiimpl_core.services.scheduler")


def post_worker_init(worker) -> None:  # noqa: ANN001
    """Pass the worker's graceful stop (SIGTERM) on to the in-app scheduler as it comes."""
    previous = signal.getsignal(signal.SIGTERM)

    def graceful_stop(signum: int, frame) -> None:  # noqa: ANN001
        if not _stop_asked:
            _stop_asked.append(time.monotonic())
        if (scheduler := _scheduler()) is not None:
            scheduler.ask_schedulers_to_stop()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, graceful_stop)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: requests in flight go on


def worker_int(worker) -> None:  # noqa: ANN001
    _stop_now.append(True)


def worker_abort(worker) -> None:  # noqa: ANN001
    _stop_now.append(True)


def worker_exit(server, worker) -> None:  # noqa: ANN001
    """Let the webhooks' tasks still running after their answers (the tracker webhooks' dispatch
    checks, the tracker writes of GitHub's merged-PR deliveries), then the in-app scheduler's cycle,
    end before the worker does: within the graceful timeout from the stop (and the worker timeout,
    which the master also holds an exiting worker to), unless the worker was told to stop at once."""
    if _stop_now:
        return
    since = _stop_asked[0] if _stop_asked else time.monotonic()  # (recycled after max_requests)
    limit = min(server.cfg.graceful_timeout, server.cfg.timeout) - _EXIT_MARGIN
    webhooks = sys.modules.get("aiimpl_core.webhooks")
    if webhooks is not None and (running := webhooks.checks_running()):
        left = since + limit - time.monotonic()
        server.log.info("Worker exiting after %d webhook task(s) (up to %.0fs): pid %s", running,
                        max(0.0, left), worker.pid)
        webhooks.wait_for_checks(max(0.0, left))
        if cut := webhooks.checks_running():  # (read once: one may end while the line is written)
            # as the scheduler says of a cycle it cuts: what they did not finish, the poller does
            server.log.warning(
                "Worker exiting with %d webhook task(s) cut short, as its time to stop ran out "
                "(the graceful or worker timeout): pid %s (the poll cycles check their issues "
                "again; a launch cut short ends its job timed_out / run_not_found)", cut, worker.pid)
    scheduler = _scheduler()
    if scheduler is None or not scheduler.schedulers_running():
        return
    if scheduler.stop_schedulers(min(0.2, since + limit - time.monotonic()), warn=False):
        return  # it was between cycles
    left = since + limit - time.monotonic()
    server.log.info("Worker exiting after the poll cycle (up to %.0fs): pid %s", max(0.0, left), worker.pid)
    scheduler.stop_schedulers(left)
