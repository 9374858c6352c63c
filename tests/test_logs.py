"""Logging: an operator's INFO log is not opened by lines that tell them nothing."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from aiimpl_core import logs


@pytest.fixture
def quiet_loggers():
    saved = {name: logging.getLogger(name).level for name in logs.QUIET_AT_INFO}
    root = logging.getLogger().level
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().setLevel(root)


def test_the_cli_at_info_does_not_list_alembics_plugins():
    env = dict(os.environ, AIIMPL_LOG_LEVEL="INFO")
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "session", "run", "--help"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert "alembic.runtime.plugins" not in done.stderr


@pytest.mark.usefixtures("quiet_loggers")
@pytest.mark.parametrize(("level", "quiet"), [("INFO", logging.WARNING), ("warning", logging.WARNING),
                                               ("DEBUG", logging.NOTSET)])
def test_configure_holds_the_quiet_loggers_to_warnings_unless_debugging(level, quiet):
    logging.getLogger().setLevel(level.upper())  # basicConfig leaves a configured root alone
    logs.configure(level)
    for name in logs.QUIET_AT_INFO:
        assert logging.getLogger(name).level == quiet


# -- line formats ----------------------------------------------------------------------------

UTC_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _record(name: str = "aiimpl.test", msg: str = "hello %s", args: object = ("world",),
            level: int = logging.WARNING, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_a_text_line_has_a_utc_time_the_level_the_logger_and_the_message():
    import re

    line = logs.TextFormatter().format(_record())
    assert re.fullmatch(UTC_TIME + r" WARNING aiimpl\.test: hello world", line), line


def test_a_text_line_shows_terminal_control_characters_escaped():
    """A runner's text in a log line (a job's failure reason) held escape sequences that cleared
    the screen or set the window title of an operator tailing the log: every control character but
    the line break and tab of a traceback is shown escaped, so the line is what it says."""
    sent = "boom\x1b]0;PWNED\x07\x1b[2J\x1b[31mRED\x1b[0m\rOVER\x9b1m\x7f"
    line = logs.TextFormatter().format(_record(args=(sent,)))
    assert line.endswith(
        "hello boom\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mRED\\x1b[0m\\rOVER\\x9b1m\\x7f"
    ), line
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in line)
    try:
        raise ValueError("a\x1b[2Jb")
    except ValueError:
        import sys

        text = logs.TextFormatter().format(_record(msg="failed", args=(), exc_info=sys.exc_info()))
    assert "\n" in text and "\x1b" not in text and "a\\x1b[2Jb" in text


def test_a_json_line_is_one_object_with_the_record_and_its_traceback():
    import json
    import re
    import sys

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(level=logging.ERROR, exc_info=sys.exc_info())
    record.job_id = 7  # an ``extra`` field
    line = logs.formatter("json").format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert re.fullmatch(UTC_TIME, data["time"]), data["time"]
    assert (data["level"], data["logger"], data["message"]) == ("ERROR", "aiimpl.test", "hello world")
    assert data["process"] == os.getpid()
    assert data["job_id"] == 7
    assert "RuntimeError: boom" in data["exc_info"]


def test_a_json_access_line_has_the_requests_fields_and_never_its_query():
    import json

    from aiimpl_core import gunicorn_conf

    atoms = {"h": "10.0.0.5", "m": "POST", "U": "/api/jira/webhook", "q": "secret=s3cr3t-value",
             "H": "HTTP/1.1", "s": "200", "b": "-", "M": 12, "a": "curl/8"}
    record = _record("gunicorn.access", gunicorn_conf.access_log_format, atoms, logging.INFO)
    line = logs.formatter("json").format(record)
    data = json.loads(line)
    assert {k: data.get(k) for k in ("remote", "method", "path", "status", "duration_ms")} == {
        "remote": "10.0.0.5", "method": "POST", "path": "/api/jira/webhook", "status": 200, "duration_ms": 12}
    assert "bytes" not in data  # gunicorn's "-": no body
    assert "s3cr3t" not in line


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AIIMPL_LOG_LEVEL", "verbose", "AIIMPL_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
                                    "not 'verbose'"),
    ("AIIMPL_LOG_FORMAT", "xml", "AIIMPL_LOG_FORMAT: must be one of text, json, not 'xml'"),
])
def test_a_log_setting_that_is_not_valid_is_refused_with_its_message(name, value, message):
    from aiimpl_core.config import load
    from aiimpl_core.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        load({name: value})
    assert refused.value.message == message
    assert load({"AIIMPL_LOG_LEVEL": " debug ", "AIIMPL_LOG_FORMAT": "JSON"})["AIIMPL_LOG_LEVEL"] == "DEBUG"
    assert load({"AIIMPL_LOG_FORMAT": "JSON"})["AIIMPL_LOG_FORMAT"] == "json"


def test_the_cli_refuses_a_log_level_that_is_not_valid_without_a_traceback(tmp_path):
    env = dict(os.environ, AIIMPL_LOG_LEVEL="verbose", AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/a.db")
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "jobs", "list"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Error: AIIMPL_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_session_program_logs_whatever_the_log_settings_say():
    # a runner's environment is not the operator's: a bad value must not stop a session
    assert logs.from_environ("WARNING", {"AIIMPL_LOG_LEVEL": "verbose", "AIIMPL_LOG_FORMAT": "xml"}) == (
        "WARNING", "text")
    assert logs.from_environ("WARNING", {"AIIMPL_LOG_LEVEL": "info", "AIIMPL_LOG_FORMAT": "json"}) == (
        "INFO", "json")


# -- secrets never in a log line ---------------------------------------------------------------

SECRET = "ghp_log_line_secret_0123456789"


@pytest.fixture
def masked_handler():
    """A stream handler as :func:`logs.configure` sets one up, on a logger of its own, with the
    process's mask emptied before and after."""
    import io

    logs.SECRETS.clear()
    stream = io.StringIO()
    handler = logs.guard(logging.StreamHandler(stream))
    logger = logging.getLogger("aiimpl.test.mask")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, handler, stream
    logger.removeHandler(handler)
    logger.propagate = True
    logs.SECRETS.clear()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_known_secret_is_masked_in_the_message_its_arguments_and_the_traceback(masked_handler, fmt):
    logger, handler, stream = masked_handler
    handler.setFormatter(logs.formatter(fmt))
    logs.mask(SECRET)
    logger.warning("token %s refused", SECRET)
    logger.warning(f"direct {SECRET}")
    try:
        raise RuntimeError(f"token {SECRET} is malformed")
    except RuntimeError:
        logger.exception("dispatch failed")
    logger.warning("stack", stack_info=True, extra={"note": "kept"})
    out = stream.getvalue()
    assert SECRET not in out
    assert out.count("[REDACTED]") == 3
    assert "RuntimeError: token [REDACTED] is malformed" in out.replace('\\"', '"')
    assert "Traceback (most recent call last)" in out
    assert "Stack (most recent call last)" in out


def test_encoded_forms_and_short_values_and_followed_redactors(masked_handler):
    from urllib.parse import quote

    from aiimpl_core.session.redact import Redactor

    logger, _handler, stream = masked_handler
    logs.mask("p@ss/word+1", "short", None, "")
    session = Redactor(["session_secret_value"])
    logs.SECRETS.follow(session)
    session.add("ghs_learned_later_token")  # a token the session fetched after it started
    logger.error("url https://u:%s@host/ short 1 %s %s", quote("p@ss/word+1", safe=""),
                 "session_secret_value", "ghs_learned_later_token")
    line = stream.getvalue()
    assert line == "url https://u:[REDACTED]@host/ short 1 [REDACTED] [REDACTED]\n"
    del session  # followed weakly: a finished session's redactor is not kept alive
    import gc

    gc.collect()
    assert len(logs.SECRETS.redactors()) == 1


@pytest.mark.parametrize(
    ("user", "shown"),
    [("", "[REDACTED]"), ("u", "dTp[REDACTED]"), ("us", "dXM6[REDACTED]"),
     ("x-access-token", "eC1hY2Nlc3MtdG9rZW46[REDACTED]")],
)
def test_a_short_secret_is_masked_in_its_base64_forms_and_not_as_written(masked_handler, user, shown):
    """A secret shorter than six characters is not masked as written (``hunt2`` may be any text's),
    but its base64 forms are: a ``Basic`` header carrying it, whatever the user name before it."""
    import base64

    logger, _handler, stream = masked_handler
    logs.mask("hunt2")
    header = base64.b64encode(f"{user}:hunt2".encode() if user else b"hunt2").decode()
    logger.error("Authorization: Basic %s (password hunt2)", header)
    assert stream.getvalue() == f"Authorization: Basic {shown} (password hunt2)\n"


def test_a_short_secrets_base64_forms_that_look_like_words_or_are_too_short_are_not_masked(masked_handler):
    """Forms shorter than six characters (``YQ==`` of ``a``, ``hYmNk`` of ``abcd`` after two bytes)
    and forms shaped like a word or a number (``Fiamdh`` of ``abjga`` after one byte) could be any
    text's: left as they are, as the value is. ``abcd`` alone or after ``us:`` is masked."""
    import base64

    logger, _handler, stream = masked_handler
    logs.mask("a", "on", "abcd", "abjga")
    logger.error("a on YQ== b24= dTphYmNk Fiamdh | %s %s", base64.b64encode(b"abcd").decode(),
                 base64.b64encode(b"us:abcd").decode())
    assert stream.getvalue() == "a on YQ== b24= dTphYmNk Fiamdh | [REDACTED] dXM6[REDACTED]\n"


def test_a_secret_of_bytes_that_are_no_utf8_is_masked_as_sent():
    """A plugin's setting read from the environment may hold such bytes (kept by Python as lone
    surrogates): masking it fails nothing, and finds it as written and as a URL would carry it."""
    from aiimpl_core.session.redact import Redactor

    value = "lin_api_ab\udcffcdefgh1234"
    redactor = Redactor([value])
    assert redactor.text(f"key {value} in %s" % "lin_api_ab%FFcdefgh1234") == "key [REDACTED] in [REDACTED]"


def test_the_mask_keeps_its_last_values_only():
    mask = logs.SecretMask(size=3)
    mask.add("value-1", "value-2", "value-3", "value-1", "value-4")  # value-1 used again: kept
    [redactor] = mask.redactors()
    assert redactor.values == {"value-1", "value-3", "value-4"}


def test_the_mask_learns_a_value_without_building_its_redactor_again():
    """Each value a process learns (an installation token it minted) is added to the redactor it
    has; values dropped past the size are masked on until a quarter of the size were dropped,
    then the redactor is built again from the values kept."""
    mask = logs.SecretMask(size=8)
    mask.add(*(f"value-{n:03d}" for n in range(8)))
    [first] = mask.redactors()
    mask.add("value-new-1", "value-new-2")  # two dropped: at most a quarter of the size
    [same] = mask.redactors()
    assert same is first and {"value-new-1", "value-new-2", "value-000"} <= same.values
    mask.add("value-new-3")  # a third dropped
    [fresh] = mask.redactors()
    assert fresh is not first
    assert fresh.values == {f"value-{n:03d}" for n in range(3, 8)} | {f"value-new-{n}" for n in (1, 2, 3)}
    assert fresh.text("value-new-3 and value-007") == "[REDACTED] and [REDACTED]"


def test_a_record_that_cannot_be_formatted_is_left_to_logging(masked_handler):
    logger, _handler, stream = masked_handler
    logs.mask(SECRET)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "%d apples", ("many",), None)
    assert logs.SECRETS.filter(record) is True
    assert (record.msg, record.args) == ("%d apples", ("many",))
    logger.warning("access", extra={})
    assert stream.getvalue() == "access\n"


def test_the_apps_sensitive_settings_stored_secrets_and_database_password_are_masked(app, caplog):
    """End to end: what the app knows to be secret never reaches a log line, whoever logs it
    (building an app puts the mask on every root handler, pytest's own included)."""
    from aiimpl_core.app import create_app
    from aiimpl_core.services import secrets as secrets_service

    with app.app_context():
        secrets_service.set_secret(secrets_service.GLOBAL, "DEPLOY_KEY", "stored_secret_value_42")
    logs.SECRETS.clear()
    try:
        create_app({"TESTING": True, "AIIMPL_SECRET_KEY": "k" * 40, "AIIMPL_GITHUB_TOKEN": SECRET,
                    "AIIMPL_DATABASE_URL": "postgresql+psycopg://aiimpl:db_password_9876@127.0.0.1:1/x"},
                   load_entrypoints=False)
        with app.app_context():
            assert secrets_service.values_for_team("ENG")["DEPLOY_KEY"] == "stored_secret_value_42"
        caplog.set_level(logging.INFO)
        logging.getLogger("aiimpl.plugin").error(
            "connecting with %s to postgresql://aiimpl:db_password_9876@db/ with %s, then %s",
            SECRET, "k" * 40, "stored_secret_value_42")
        assert caplog.messages == ["connecting with [REDACTED] to postgresql://aiimpl:[REDACTED]@db/ "
                                   "with [REDACTED], then [REDACTED]"]
    finally:
        logs.SECRETS.clear()


def test_an_error_line_shows_the_path_as_sent_so_a_client_cannot_write_lines_of_its_own(app, caplog):
    """A view that fails: its path in the log is percent-encoded (a decoded ``%0A`` would end the
    line and start one the client wrote)."""
    from aiimpl_core.auth import public_endpoint

    @public_endpoint
    def boom(rest: str) -> None:
        raise RuntimeError("boom")

    app.add_url_rule("/api/boom/<rest>", "boom", boom)
    forged = "x%0A2026-12-04T00:00:00.000Z%20CRITICAL%20aiimpl_core:%20forged%C3%B1"
    with caplog.at_level(logging.ERROR):
        resp = app.test_client().get(f"/api/boom/{forged}")
    assert resp.status_code == 500
    lines = [r.getMessage() for r in caplog.records if "error on GET" in r.getMessage()]
    assert lines == [f"unhandled error on GET /api/boom/{forged}"]


def test_a_five_character_secret_whose_form_after_one_byte_is_shaped_like_a_word_is_not_masked_there(
    masked_handler,
):
    """What the documentation says of a five-character value: masked in a ``Basic`` header, but for
    the six-character form it takes after one byte (after ``abc:``) when that one is shaped like a
    word (``VXWWRG`` of ``UWYdF``, capitals only); after another user name it is masked."""
    import base64

    logger, _handler, stream = masked_handler
    logs.mask("UWYdF")
    after_abc = base64.b64encode(b"abc:UWYdF").decode()
    after_us = base64.b64encode(b"us:UWYdF").decode()
    logger.error("%s %s", after_abc, after_us)
    assert after_abc == "YWJjOlVXWWRG"
    assert stream.getvalue() == f"{after_abc} dXM6[REDACTED]\n"
