"""Production gunicorn configuration: ``gunicorn -c python:aiimpl_core.gunicorn_conf aiimpl_core.wsgi:app``.

Every value can be overridden with an environment variable (shown beside it) or on the command line.
Threaded workers suit the API: requests are short and wait mostly on the database.
"""
from __future__ import annotations

import multiprocessing
import os
import sys

from gunicorn import glogging

# (underscored: gunicorn takes every other module-level name that is one of its settings, and
# ``config`` is one)
from aiimpl_core import config as _config
from aiimpl_core import logs as _logs
from aiimpl_core.errors import ConfigError

bind = os.environ.get("AIIMPL_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("AIIMPL_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = int(os.environ.get("AIIMPL_THREADS", 4))
timeout = int(os.environ.get("AIIMPL_WORKER_TIMEOUT", 30))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so that a slow leak in a plugin cannot grow without bound.
max_requests = int(os.environ.get("AIIMPL_MAX_REQUESTS", 20000))
max_requests_jitter = max_requests // 10
# Each worker opens its own database pool after the fork.
preload_app = False
accesslog = os.environ.get("AIIMPL_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("AIIMPL_LOG_LEVEL", "info").lower()
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


class Logger(glogging.Logger):
    """gunicorn's logger, with its error and access lines in the format of ``AIIMPL_LOG_FORMAT``
    when that is ``json`` (gunicorn's own text lines otherwise)."""

    def setup(self, cfg) -> None:  # noqa: ANN001
        super().setup(cfg)
        if _logs.from_environ("INFO")[1] == "json":
            for logger in (self.error_log, self.access_log):
                for handler in logger.handlers:
                    handler.setFormatter(_logs.json_formatter())


logger_class = Logger


def on_starting(server) -> None:  # noqa: ANN001
    """Refuse a configuration that is not valid before any worker starts, with its message (a
    worker would fail to boot on it, once per worker, with a traceback)."""
    try:
        _config.load()
    except ConfigError as exc:
        server.log.error("Error: %s", exc.message)
        sys.exit(1)
