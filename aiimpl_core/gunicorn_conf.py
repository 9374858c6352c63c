"""Production gunicorn configuration: ``gunicorn -c python:aiimpl_core.gunicorn_conf aiimpl_core.wsgi:app``.

Every value can be overridden with an environment variable (shown beside it) or on the command line.
Threaded workers suit the API: requests are short and wait mostly on the database.
"""
from __future__ import annotations

import multiprocessing
import os

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
