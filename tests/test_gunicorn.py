"""The production gunicorn configuration (``aiimpl_core.gunicorn_conf``), run for real."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

from aiimpl_core import logs
from aiimpl_core.testing.ports import free_port
from aiimpl_core.testing.pytest_plugin import migrate
from aiimpl_core.testing.serving import raw_exchange

pytest.importorskip("gunicorn")


def _gunicorn(tmp_path, *args: str, **env: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIIMPL_", "RUNNER_MODE"))}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/aiimpl.db", AIIMPL_WORKERS="1",
                   AIIMPL_BIND=f"127.0.0.1:{port}", XDG_RUNTIME_DIR=str(tmp_path),
                   AIIMPL_SECRET_KEY="gunicorn-test-key", AIIMPL_ADMIN_ACCESS_CODE="gunicorn-test-code")
    environ.update(env)
    for name in [k for k, v in environ.items() if v is None]:
        del environ[name]
    out, err = open(tmp_path / "out.log", "w"), open(tmp_path / "err.log", "w")  # noqa: SIM115
    command = [sys.executable, "-m", "gunicorn", "-c", "python:aiimpl_core.gunicorn_conf", *args,
               "aiimpl_core.wsgi:app"]
    proc = subprocess.Popen(command, env=environ, stdout=out, stderr=err, cwd=tmp_path)
    out.close(), err.close()
    return proc, port


def _output(tmp_path) -> str:
    return (tmp_path / "out.log").read_text() + (tmp_path / "err.log").read_text()


def _get(port: int, path: str, data: bytes | None = None) -> int:
    """The status of one request, sent again only while nothing listens yet (a request that timed
    out may have been answered: sent again, it would be answered twice)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=data, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _upgrade(tmp_path) -> None:
    # (in this process: the command's own run is tested in test_cli_database.py)
    migrate(f"sqlite:///{tmp_path}/aiimpl.db")


@pytest.mark.long
def test_json_logs_cover_gunicorns_lines_the_apps_and_the_access_log(tmp_path):
    _upgrade(tmp_path)
    proc, port = _gunicorn(tmp_path, AIIMPL_LOG_FORMAT="json")
    try:
        assert _get(port, "/healthz?token=query-value-never-logged") == 200
        # no AIIMPL_GITHUB_WEBHOOK_SECRET: the app says why it refuses, through the root logger
        assert _get(port, "/api/github/webhook", data=b"{}") == 401
        assert not (tmp_path / "gunicorn.ctl").exists()  # the control socket is off by default
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in _output(tmp_path).splitlines() if line.strip()]
    assert lines, "gunicorn logged nothing"
    for data in lines:
        assert {"time", "level", "logger", "process", "message"} <= data.keys(), data
    by_logger = {(d["logger"], d["message"]) for d in lines}
    assert any(name == "gunicorn.error" and m.startswith("Booting worker") for name, m in by_logger)
    refused = "GitHub webhook refused: AIIMPL_GITHUB_WEBHOOK_SECRET is not set"
    assert ("aiimpl_core.api.webhook", refused) in by_logger
    access = [d for d in lines if d["logger"] == "gunicorn.access"]
    # in any order: each worker process writes its own lines, after its answer went out
    assert sorted((d["method"], d["path"], d["status"]) for d in access) == [
        ("GET", "/healthz", 200), ("POST", "/api/github/webhook", 401)]
    assert "query-value-never-logged" not in _output(tmp_path)


@pytest.mark.parametrize(("hops", "hsts"), [("0", False), ("1", True)])
def test_a_forwarded_scheme_is_trusted_only_as_far_as_the_proxy_hops_say(tmp_path, hops, hsts):
    """gunicorn's own default trusts ``X-Forwarded-Proto`` from a local client: with no proxy hops
    the app must not take a plain request for https (and send HSTS on it) because a local client
    said so; with one hop the proxy's header is the scheme."""
    _upgrade(tmp_path)
    proc, port = _gunicorn(tmp_path, AIIMPL_HSTS_SECONDS="3600", AIIMPL_PROXY_HOPS=hops)
    try:
        _get(port, "/healthz")
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7"}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers=forwarded)
        with urllib.request.urlopen(request, timeout=60) as resp:
            sent = resp.headers.get("Strict-Transport-Security")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert (sent == "max-age=3600") is hsts, sent


def test_a_setting_that_is_not_valid_stops_gunicorn_before_its_workers(tmp_path):
    proc, _port = _gunicorn(tmp_path, AIIMPL_LOG_LEVEL="verbose")
    assert proc.wait(timeout=60) == 1
    output = _output(tmp_path)
    assert ("Error: AIIMPL_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
            "not 'verbose'") in output
    assert "Traceback" not in output
    assert "Booting worker" not in output


BAD_PORT = "AIIMPL_BIND: the port must be a number from 0 to 65535"


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"AIIMPL_SECRET_KEY": None},
         "Error: AIIMPL_SECRET_KEY is not set: every worker, poller and host must share one key"),
        ({"AIIMPL_WORKERS": "abc"}, "AIIMPL_WORKERS must be an integer of at least 1, not 'abc'"),
        ({"AIIMPL_WORKERS": "0"}, "AIIMPL_WORKERS must be an integer of at least 1, not '0'"),
        ({"AIIMPL_THREADS": "-2"}, "AIIMPL_THREADS must be an integer of at least 1, not '-2'"),
        ({"AIIMPL_BIND": "127.0.0.1:99999"}, f"{BAD_PORT}, not '99999'"),
        ({"AIIMPL_BIND": "127.0.0.1:-1"}, f"{BAD_PORT}, not '-1'"),
        ({"AIIMPL_BIND": "127.0.0.1:\u00b2"}, f"{BAD_PORT}, not '\u00b2'"),
    ],
    ids=["no-secret-key", "workers-abc", "workers-0", "threads-negative", "port-over", "port-negative",
         "port-superscript"],
)
def test_what_would_break_the_workers_stops_gunicorn_before_them(tmp_path, env, error):
    """Workers that would each make up their own key (a session signed by one is refused by the
    next; a secret saved through one is unreadable by all others), or a count that is no count."""
    _upgrade(tmp_path)
    proc, _port = _gunicorn(tmp_path, **env)
    assert proc.wait(timeout=60) != 0
    output = _output(tmp_path)
    assert error in output
    assert "Booting worker" not in output


def test_a_count_that_is_no_count_is_said_in_json_when_the_log_is(tmp_path):
    """A log pipeline reading JSON lines gets the refusal of a wrong AIIMPL_WORKERS as one, as it
    gets every other start-up error (gunicorn's own message is text, its logger not set up yet)."""
    _upgrade(tmp_path)
    proc, _port = _gunicorn(tmp_path, AIIMPL_WORKERS="abc", AIIMPL_LOG_FORMAT="json")
    assert proc.wait(timeout=60) == 1
    lines = [line for line in _output(tmp_path).splitlines() if line.strip()]
    assert lines, "nothing was said"
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("ERROR", "gunicorn.error", "Error: AIIMPL_WORKERS must be an integer of at least 1, not 'abc'")
    ]


def test_a_database_without_the_schema_stops_gunicorn_with_what_to_do(tmp_path):
    proc, _port = _gunicorn(tmp_path)  # no `aiimpl db upgrade`
    assert proc.wait(timeout=60) == 1
    output = _output(tmp_path)
    assert "Error: the database has no schema yet: run `aiimpl db upgrade`" in output
    assert "Traceback" not in output and "Booting worker" not in output


def test_a_database_with_the_tables_but_no_revision_stops_gunicorn_with_its_repair(tmp_path):
    """The master read the schema without an app, and said "no schema yet: run `aiimpl db upgrade`",
    which then fails with "… already exists"."""
    import sqlite3

    from aiimpl_core import orm  # noqa: F401 - the tables
    from aiimpl_core.extensions import db

    with sqlite3.connect(tmp_path / "aiimpl.db") as conn:  # (made by create_all, say)
        for table in db.metadata.tables:
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    proc, _port = _gunicorn(tmp_path)
    assert proc.wait(timeout=60) == 1
    output = _output(tmp_path)
    assert "has AI-Implement's tables but no schema revision" in output and "db stamp head" in output
    assert "Traceback" not in output and "Booting worker" not in output


@pytest.mark.parametrize(("code", "said"), [
    (None, "AIIMPL_ADMIN_ACCESS_CODE is not set: every sign-in to the admin UI and API is refused"),
    ("open-sesame", "AIIMPL_ADMIN_ACCESS_CODE has 11 characters: sign-in is throttled per client, not across "
                    "clients; use at least 16 random ones"),
], ids=["unset", "short"])
def test_an_unset_or_short_access_code_is_said_at_start(tmp_path, code, said):
    _upgrade(tmp_path)
    proc, port = _gunicorn(tmp_path, AIIMPL_ADMIN_ACCESS_CODE=code)
    try:
        assert _get(port, "/healthz") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    output = _output(tmp_path)
    assert said in output
    assert "open-sesame" not in output


def test_a_short_secret_key_is_said_once_by_the_master_not_by_every_worker(tmp_path):
    _upgrade(tmp_path)
    proc, port = _gunicorn(tmp_path, AIIMPL_WORKERS="3")  # its key has 17 characters
    try:
        assert _get(port, "/healthz") == 200
        deadline = time.monotonic() + 60  # every worker forked (it loads the app before it stops)
        while _output(tmp_path).count("Booting worker") < 3:
            assert time.monotonic() < deadline, _output(tmp_path)
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    output = _output(tmp_path)
    assert output.count("Worker exiting (pid") == 3, output
    said = "AIIMPL_SECRET_KEY has 17 characters: use at least 32 random ones"
    assert output.count(said) == 1, output
    assert output.index(said) < output.index("Booting worker"), output
    assert "gunicorn-test-key" not in output


# -- what gunicorn refuses before the app runs ---------------------------------------------------------

#: requests gunicorn answers itself (at its default limits: a request line of 4094 bytes, 100 header
#: fields of 8190 bytes), each with a token in its URL that its HTML page would quote for the last
REFUSED = {
    "long-url": b"GET /api/jobs?token=tok-in-the-url" + b"x" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    "long-header": b"GET /api/jobs?token=tok-in-the-url HTTP/1.1\r\nHost: h\r\nX-Long: " + b"y" * 9000
                   + b"\r\n\r\n",
    "many-headers": b"GET /api/jobs?token=tok-in-the-url HTTP/1.1\r\nHost: h\r\n"
                    + b"".join(b"X-Header-%d: v\r\n" % n for n in range(120)) + b"\r\n",
    "request-line-without-version": b"GET /api/jobs?token=tok-in-the-url\r\nHost: h\r\n\r\n",
}


def _answers(tmp_path, *args: str) -> dict[str, tuple[str, dict[str, str], bytes]]:
    _upgrade(tmp_path)
    proc, port = _gunicorn(tmp_path, *args)
    try:
        assert _get(port, "/healthz") == 200
        answers = {name: raw_exchange(port, request) for name, request in REFUSED.items()}
        assert _get(port, "/healthz") == 200  # the worker serves on
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return answers


@pytest.mark.long
def test_what_gunicorn_refuses_before_the_app_is_answered_as_json_with_gunicorns_status(tmp_path):
    """A URL or headers over gunicorn's limits, or a request line it cannot read, get the API's JSON
    error body, with the status gunicorn's own worker answers (its HTML page, under ``--worker-class
    gthread``), and quote nothing of the request; gunicorn still logs them as it does."""
    (tmp_path / "ours").mkdir(), (tmp_path / "gunicorns").mkdir()
    answers = _answers(tmp_path / "ours")
    gunicorns = _answers(tmp_path / "gunicorns", "--worker-class", "gthread")
    statuses = {name: status for name, (status, _headers, _body) in answers.items()}
    assert statuses == {name: status for name, (status, _headers, _body) in gunicorns.items()}
    assert statuses["long-url"] == "HTTP/1.1 414 URI Too Long"
    assert statuses["long-header"] == statuses["many-headers"]
    assert statuses["long-header"] in ("HTTP/1.1 431 Request Header Fields Too Large",
                                       "HTTP/1.1 400 Bad Request")  # (older gunicorns)
    assert statuses["request-line-without-version"] == "HTTP/1.1 400 Bad Request"
    for name, (status, headers, body) in answers.items():
        assert gunicorns[name][1]["content-type"] == "text/html", name
        assert headers["content-type"] == "application/json", name
        assert (headers["connection"], int(headers["content-length"])) == ("close", len(body)), name
        assert json.loads(body) == {"error": status.split(" ", 2)[2]}, name
        assert b"tok-in-the-url" not in body and "tok-in-the-url" not in str(headers), name
    logged = _output(tmp_path / "ours")
    assert re.search(r"Invalid request from ip=127\.0\.0\.1: Request Line is too large \(\d+ > 4094\)\n",
                     logged)
    assert logged.count("Invalid request from ip=127.0.0.1") == len(REFUSED)
    # what gunicorn could not read is not quoted in its log either (its own logger quotes it)
    assert "tok-in-the-url" not in logged
    assert "Invalid request from ip=127.0.0.1: Invalid HTTP request line: '(not shown)'" in logged
    # a worker class given on the command line is said at start, with what it loses
    lost = ("the worker class is gunicorn.workers.gthread.ThreadWorker, not aiimpl_core.gunicorn_worker."
            "ThreadWorker: requests gunicorn refuses before the app runs (a URL or headers over its "
            "limits, a request it cannot read) are answered with gunicorn's HTML pages instead of the "
            "API's JSON errors")
    assert lost in _output(tmp_path / "gunicorns") and "the worker class is" not in logged


def test_an_answer_that_is_not_gunicorns_error_page_is_left_as_it_is():
    from aiimpl_core.gunicorn_worker import json_answer

    for answer in (b"", b"garbage", b"HTTP/1.1 400 <b>\r\n\r\nx", b"HTTP/1.1 99 Odd\r\n\r\n"):
        assert json_answer(answer) == answer
    page = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n\r\n<html>"
    assert json_answer(page).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert json_answer(page).endswith(b'\r\n\r\n{"error":"Internal server error"}\n')


def test_gunicorns_error_lines_are_masked_of_the_known_secrets(capsys):
    """A worker's unhandled error is logged by gunicorn's own error logger, not the root's."""
    from gunicorn.config import Config

    from aiimpl_core import gunicorn_conf, logs

    logger = gunicorn_conf.Logger(Config())
    assert all(logs.SECRETS in handler.filters for handler in logger.error_log.handlers)
    logs.mask("gunicorn-masked-value")
    try:
        logger.error("Error handling request with %s", "gunicorn-masked-value")
    finally:
        logs.SECRETS.clear()
    err = capsys.readouterr().err
    assert "Error handling request with [REDACTED]" in err and "gunicorn-masked-value" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sqlite_under_several_workers_is_warned_about_once(tmp_path, workers):
    """The production configuration's workers on SQLite (its URL forgotten): one writer at a time."""
    _upgrade(tmp_path)
    proc, port = _gunicorn(tmp_path, AIIMPL_WORKERS=workers)
    try:
        assert _get(port, "/healthz") == 200, _output(tmp_path)
    finally:
        proc.terminate()
        proc.wait(30)
    warned = _output(tmp_path).count("the database is SQLite and gunicorn runs")
    assert warned == (1 if workers == "2" else 0), _output(tmp_path)


def test_secrets_given_with_dash_e_are_masked_in_gunicorns_debug_lines(tmp_path):
    """gunicorn logs its configuration at debug level, ``-e`` values included, before it puts them
    in the environment the app's masking reads: a Linear API key was logged whole (and the password
    of a database URL given so, which the worker cannot reach here)."""
    key, trigger, password = "lin_api_RAWENVsentinel987654", "trigger-sentinel-24680", "dbpass-sentinel-4321"
    proc, _port = _gunicorn(
        tmp_path, "-e", f"AIIMPL_LINEAR_API_KEY={key}", "-e", f"AIIMPL_TRIGGER_SECRET={trigger}",
        "-e", f"AIIMPL_DATABASE_URL=postgresql+psycopg://u:{password}@127.0.0.1:1/none",
        AIIMPL_LOG_LEVEL="DEBUG")
    try:
        deadline = time.monotonic() + 60
        while "Booting worker" not in _output(tmp_path) and proc.poll() is None:
            assert time.monotonic() < deadline, _output(tmp_path)
            time.sleep(0.1)
        time.sleep(1)  # (the worker's own lines: it cannot reach the database)
    finally:
        proc.kill()
        proc.wait(30)
    logged = _output(tmp_path)
    assert "Current configuration" in logged and "AIIMPL_LINEAR_API_KEY=[REDACTED]" in logged, logged
    assert key not in logged and trigger not in logged and password not in logged


def test_gunicorns_lines_about_a_request_leave_out_what_the_client_sent_after_the_path(capsys):
    """gunicorn logs a request it refused with what it could not read quoted, and an error
    handling a request with its URI: neither keeps a query string nor a header's value."""
    from gunicorn.config import Config

    from aiimpl_core import gunicorn_conf

    logger = gunicorn_conf.Logger(Config())
    logger.warning("Invalid request from ip=10.0.0.1: Invalid HTTP request line: "
                   "'GET /api/jobs?token=t0k3n-a'")
    logger.warning("Invalid request from ip=10.0.0.1: Invalid HTTP Header: 'Authorization Bearer t0k3n-b'")
    logger.warning("Invalid request from ip=10.0.0.1: Invalid HTTP Header: 'CONTENT-LENGTH'")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("Error handling request %s", "/runner/result?token=t0k3n-c")
    err = capsys.readouterr().err
    assert "t0k3n" not in err
    assert "Invalid HTTP request line: '(not shown)'" in err
    assert "Invalid HTTP Header: 'CONTENT-LENGTH'" in err  # a header's name alone is kept
    assert "Error handling request /runner/result?(not shown)" in err


def test_the_master_reads_the_schema_without_an_app_of_its_own(tmp_path):
    """With ``AIIMPL_SCHEDULER`` an app built in gunicorn's master would poll in the master for
    its whole life (and load every plugin there): only the workers run the app."""
    _upgrade(tmp_path)
    proc, port = _gunicorn(tmp_path, AIIMPL_LOG_FORMAT="json", AIIMPL_SCHEDULER="1",
                           AIIMPL_POLL_INTERVAL="3600")
    try:
        assert _get(port, "/healthz") == 200
        deadline = time.monotonic() + 30
        while "in-app scheduler" not in _output(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in _output(tmp_path).splitlines() if line.strip()]
    scheduling = {d["process"] for d in lines if d["message"].startswith("in-app scheduler")}
    assert scheduling and proc.pid not in scheduling, lines


def test_an_access_line_shows_the_path_as_sent_so_a_client_cannot_write_lines_of_its_own(capsys):
    """``PATH_INFO`` is decoded: a ``%0A`` in the path would end the access line and start one of
    the client's choosing (a forged ``CRITICAL`` line, say), and a UTF-8 name shows garbled."""
    import datetime
    from types import SimpleNamespace

    from gunicorn.config import Config

    from aiimpl_core import gunicorn_conf

    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", gunicorn_conf.access_log_format)
    logger = gunicorn_conf.Logger(cfg)
    path = "/x\n2026-12-04T15:00:00.000Z CRITICAL aiimpl: forged\r/ñ%"
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/x", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "10.0.0.5", "PATH_INFO": path.encode().decode("latin-1")}
    resp = SimpleNamespace(status="404 NOT FOUND", sent=133, headers=[])
    logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(milliseconds=3))
    out = _untimed(capsys.readouterr().out)
    assert out == ('INFO gunicorn.access: 10.0.0.5 "GET '
                   '/x%0A2026-12-04T15:00:00.000Z%20CRITICAL%20aiimpl:%20forged%0D/%C3%B1%25 '
                   'HTTP/1.1" 404 133 3ms\n')
    assert logs.logged_path("/api/jobs/7") == "/api/jobs/7"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_a_client_put_in_the_path_is_masked_in_the_access_line(capsys, monkeypatch, fmt):
    """A webhook's secret sent in place of its route (or any known secret in a path) is masked in
    the access line as in every other line, in both formats (the JSON line's ``path`` too)."""
    import datetime
    from types import SimpleNamespace

    from gunicorn.config import Config

    from aiimpl_core import gunicorn_conf

    secret = "trigger-secret-7f3a9c2e"
    monkeypatch.setenv("AIIMPL_LOG_FORMAT", fmt)
    logs.SECRETS.add(secret)
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", gunicorn_conf.access_log_format)
    logger = gunicorn_conf.Logger(cfg)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/x", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "10.0.0.5", "PATH_INFO": f"/hooks/{secret}"}
    resp = SimpleNamespace(status="404 NOT FOUND", sent=133, headers=[])
    logger.access(resp, SimpleNamespace(headers=[]), environ, datetime.timedelta(milliseconds=3))
    out = capsys.readouterr().out
    assert secret not in out
    if fmt == "json":
        line = json.loads(out)
        assert (line["path"], line["status"]) == ("/hooks/[REDACTED]", 404)
        assert "/hooks/[REDACTED]" in line["message"]
    else:
        said = 'INFO gunicorn.access: 10.0.0.5 "GET /hooks/[REDACTED] HTTP/1.1" 404 133 3ms\n'
        assert _untimed(out) == said


def _untimed(line: str) -> str:
    """A text log line without its UTC time, which it must start with."""
    time, _, rest = line.partition(" ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", time), line
    return rest


def test_gunicorn_logs_at_the_level_the_app_reads(monkeypatch):
    import importlib

    from aiimpl_core import gunicorn_conf

    monkeypatch.setenv("AIIMPL_LOG_LEVEL", " Debug ")
    try:
        assert importlib.reload(gunicorn_conf).loglevel == "debug"
    finally:
        monkeypatch.undo()
        importlib.reload(gunicorn_conf)


class _Unanswered:
    """A tracker whose service accepts the check's request and holds its answer (until ``answer``
    is set, 60 s at most): as a service that never answers holds the HTTP client for its timeouts
    and retries. Every test sets ``answer`` once it is done, however long a loaded machine took."""

    answer = threading.Event()
    calls = 0
    #: set as a check begins
    asked = threading.Event()

    @classmethod
    def check(cls) -> list[Any]:
        cls.calls += 1
        cls.asked.set()
        cls.answer.wait(60)
        return []


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    from aiimpl_core.testing.fakes import FakeTracker
    from aiimpl_core.types import CheckResult

    unanswered, answered = FakeTracker("unanswered"), FakeTracker("answered")
    unanswered.provider_class.check = lambda self, mappings: _Unanswered.check()
    answered.provider_class.check = lambda self, mappings: [CheckResult("credentials", True, "signed in")]
    return [unanswered.plugin, answered.plugin]


def test_the_admin_checks_answer_within_the_graceful_timeout_though_a_service_never_answers(
    client, admin_headers, monkeypatch
):
    """A deploy's graceful stop gives a request in flight ``graceful_timeout`` seconds, then the
    worker is killed and the answer lost: the checks wait for a service no longer than their
    budget, and a service that answers is reported all the same."""
    from aiimpl_core import gunicorn_conf
    from aiimpl_core.services import checks

    budget = getattr(checks, "BUDGET", None)
    # (long enough for the answered check to end on a loaded machine)
    monkeypatch.setattr(checks, "BUDGET", 2, raising=False)
    _Unanswered.answer.clear()
    try:
        started = time.monotonic()
        resp = client.get("/api/checks", headers=admin_headers)
        took = time.monotonic() - started
    finally:
        _Unanswered.answer.set()
        for thread in threading.enumerate():
            if thread.name == "aiimpl-check":
                thread.join(10)
    assert resp.status_code == 200, resp.get_json()
    rows = {(r["provider"], r["name"]): (r["status"], r["detail"]) for r in resp.get_json()["checks"]}
    assert rows[("unanswered", "connection")] == ("failed", "no answer within 2 s (the time the checks "
                                                            "are given)")
    assert rows[("answered", "credentials")] == ("ok", "signed in")
    assert took < 30, took  # (the unanswered check holds 60 s: without the budget, at least that)
    # (the checks' own budget leaves the answer's way out time before the worker is killed)
    assert budget is not None and budget <= gunicorn_conf.graceful_timeout - 5


def test_a_check_still_waiting_from_an_earlier_report_is_not_started_again(
    client, admin_headers, monkeypatch
):
    """Each click of the admin UI's checks against a service that never answers would leave one
    more thread waiting on it: the check under way is reported, not started a second time, and is
    started again once it has ended."""
    from aiimpl_core.services import checks

    monkeypatch.setattr(checks, "BUDGET", 2)  # (the answered check ends within it, however loaded)
    _Unanswered.answer.clear()
    _Unanswered.calls = 0

    def rows() -> dict[tuple[str, str], tuple[str, str]]:
        resp = client.get("/api/checks", headers=admin_headers)
        assert resp.status_code == 200, resp.get_json()
        return {(r["provider"], r["name"]): (r["status"], r["detail"]) for r in resp.get_json()["checks"]}

    try:
        assert rows()[("unanswered", "connection")] == (
            "failed", "no answer within 2 s (the time the checks are given)")
        for _ in range(3):
            status, detail = rows()[("unanswered", "connection")]
            assert status == "failed"
            assert re.fullmatch(r"still waiting for the answer to an earlier check \(started \d+ s ago\); "
                                r"not checked again until it ends", detail), detail
            assert rows()[("answered", "credentials")] == ("ok", "signed in")  # the others run each time
        assert _Unanswered.calls == 1
    finally:
        _Unanswered.answer.set()
        for thread in threading.enumerate():
            if thread.name == "aiimpl-check":
                thread.join(10)
    after = rows()  # ended: checked again, and answered
    assert ("unanswered", "connection") not in after
    unused = ("ok", "configured; no mapping uses it, so nothing further was checked")
    assert after[("unanswered", "configured")] == unused
    assert _Unanswered.calls == 2


def test_a_report_made_while_an_earlier_one_still_waits_within_its_time_takes_its_answer(app, monkeypatch):
    """Two reports at once (two operators, a script and the admin UI): a check the first one started
    and still waits for, within the time the checks are given, is not reported failed by the second,
    which takes its answer; it is not started a second time either."""
    from aiimpl_core.services import checks

    _Unanswered.answer.clear()
    _Unanswered.asked.clear()
    _Unanswered.calls = 0
    start_checks = checks._start_checks
    reports: list[object] = []

    def started(*args: Any, **kwargs: Any) -> Any:
        out = start_checks(*args, **kwargs)
        reports.append(out)
        if len(reports) == 2:
            _Unanswered.answer.set()  # the service answers once the second report is under way
        return out

    monkeypatch.setattr(checks, "_start_checks", started)
    first: list[Any] = []

    def first_report() -> None:
        with app.app_context():
            first.extend(checks.run_checks(budget=10))

    thread = threading.Thread(target=first_report)
    thread.start()
    try:
        assert _Unanswered.asked.wait(10)
        second = checks.run_checks(budget=10)
    finally:
        _Unanswered.answer.set()
        thread.join(10)
    configured = ("ok", "configured; no mapping uses it, so nothing further was checked")
    for rows in (first, second):
        by_name = {(r.provider, r.name): (r.status, r.detail) for r in rows}
        assert by_name[("unanswered", "configured")] == configured, by_name
        assert ("unanswered", "connection") not in by_name
    assert _Unanswered.calls == 1


def test_the_checks_of_a_report_that_could_not_start_them_are_not_left_under_way(app, monkeypatch):
    """A check thread that cannot be started (the process at its limit of threads) fails the report;
    its checks are not left under way, or no later report would run them again."""
    from aiimpl_core.services import checks

    _Unanswered.answer.set()  # the service answers at once
    _Unanswered.calls = 0
    start = threading.Thread.start

    def refused(self: threading.Thread) -> None:
        if self.name == "aiimpl-check":
            raise RuntimeError("can't start new thread")
        start(self)

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refused)
        with pytest.raises(RuntimeError):
            checks.run_checks(budget=5)
    rows = {(r.provider, r.name): (r.status, r.detail) for r in checks.run_checks(budget=5)}
    configured = ("ok", "configured; no mapping uses it, so nothing further was checked")
    assert rows[("unanswered", "configured")] == configured, rows
    assert _Unanswered.calls == 1
