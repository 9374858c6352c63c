"""Settings from the environment: a value that is not valid is refused at start-up with a message
that says what is expected, never a Python error's words or a traceback."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from aiimpl_core.config import load
from aiimpl_core.errors import ConfigError

NO_BLANKS = ("must not hold spaces or line breaks: it is sent as `Authorization: Bearer <secret>`, "
             "which cannot carry them")


APP_ID = "must be the App's id (a number) or its client ID (Iv…), as its settings page shows them"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AIIMPL_POLL_INTERVAL", "abc", "must be a whole number, not 'abc'"),
    ("AIIMPL_POLL_INTERVAL", "0", "must be at least 1, not 0"),
    ("AIIMPL_RUN_NOT_FOUND_SECONDS", "-1", "must be at least 1, not -1"),
    ("AIIMPL_SESSION_LIFETIME_SECONDS", "0", "must be at least 1, not 0"),
    ("AIIMPL_RUN_TOKEN_SECONDS", "1.5", "must be a whole number, not '1.5'"),
    ("AIIMPL_ADMIN_SESSION_SECONDS", "-3", "must be at least 1, not -3"),
    ("AIIMPL_DEDUP_WINDOW_SECONDS", "-1", "must be at least 0, not -1"),
    ("AIIMPL_GLOBAL_CAP", "-1", "must be at least 0, not -1"),
    ("AIIMPL_RETENTION_DAYS", "x", "must be a whole number, not 'x'"),
    ("AIIMPL_RETENTION_DAYS", "3", "0 (keep everything) or at least 7 days"),
    # a date thousands of years away is no date (prune and the housekeeping failed on it)
    ("AIIMPL_RETENTION_DAYS", "1000000", "must be at most 36500 days, not 1000000"),
    ("AIIMPL_POLL_INTERVAL", "99999999999", "must be at most 3153600000, not 99999999999"),
    ("AIIMPL_DEDUP_WINDOW_SECONDS", "10" * 8, f"must be at most 3153600000, not {'10' * 8}"),
    ("AIIMPL_RUN_TOKEN_SECONDS", "4000000000", "must be at most 3153600000, not 4000000000"),
    ("AIIMPL_GLOBAL_CAP", "2147483648", "must be at most 2147483647, not 2147483648"),
    ("AIIMPL_BACKEND_CAPS", "fly-machines=2147483648", "fly-machines: must be at most 2147483647, "
                                                       "not 2147483648"),
    ("AIIMPL_BACKEND_CAPS", "foo", "must be backend=count pairs separated by commas "
                                   "(e.g. fly-machines=10,local-docker=2), not 'foo'"),
    ("AIIMPL_BACKEND_CAPS", "=3", "must be backend=count pairs separated by commas "
                                  "(e.g. fly-machines=10,local-docker=2), not '=3'"),
    ("AIIMPL_BACKEND_CAPS", "fly-machines=x", "fly-machines: must be a whole number, not 'x'"),
    ("AIIMPL_BACKEND_CAPS", "fly-machines=-2", "fly-machines: must be at least 0, not -2"),
    ("AIIMPL_PUBLIC_URL", "orchestrator.example.com", "must be an http:// or https:// URL with a host, "
                                                      "not 'orchestrator.example.com'"),
    ("AIIMPL_PUBLIC_URL", "ftp://orchestrator.example.com", "must be an http:// or https:// URL with a "
                                                            "host, not 'ftp://orchestrator.example.com'"),
    ("AIIMPL_PUBLIC_URL", "https://", "must be an http:// or https:// URL with a host, not 'https://'"),
    ("AIIMPL_PUBLIC_URL", "https://x.example:99999", "must be an http:// or https:// URL with a host, "
                                                     "not 'https://x.example:99999'"),
    ("AIIMPL_PUBLIC_URL", "http://[::1", "must be an http:// or https:// URL with a host, not 'http://[::1'"),
    ("AIIMPL_PUBLIC_URL", "ftp://user:s3cret@host.example", "must be an http:// or https:// URL with a "
                                                            "host, not 'ftp://***@host.example'"),
    ("AIIMPL_GITHUB_API_URL", "user:s3cret@host.example", "must be an http:// or https:// URL with a host, "
                                                          "not '***@host.example'"),
    ("AIIMPL_GITHUB_API_URL", "api.github.com", "must be an http:// or https:// URL with a host, "
                                                "not 'api.github.com'"),
    # the App's JWT carries it as its issuer: GitHub refuses every request with one that is no number
    ("AIIMPL_GITHUB_APP_ID", "abc", APP_ID),
    ("AIIMPL_GITHUB_APP_ID", "-12", APP_ID),
    # a token in the wrong variable: refused, and not quoted
    ("AIIMPL_GITHUB_APP_ID", "ghp_" + "x" * 36, APP_ID),
    # sent as a bearer token: a space or line break inside could never be sent (every request refused)
    ("AIIMPL_TRIGGER_SECRET", "gap fill passphrase", NO_BLANKS),
    ("AIIMPL_METRICS_TOKEN", "scrape\ntoken", NO_BLANKS),
    # bytes that are no UTF-8, as Python reads them from the environment (the value is not said)
    ("AIIMPL_SECRET_KEY", "ab\udcffcdefgh" * 4, "is not UTF-8 text"),
    ("AIIMPL_PUBLIC_URL", "https://h\udce9.example", "is not UTF-8 text"),
])
def test_a_value_that_is_not_valid_is_refused_with_what_is_expected(name, value, message):
    with pytest.raises(ConfigError) as refused:
        load({name: value})
    assert refused.value.message == f"{name}: {message}"


@pytest.mark.parametrize("app_id", ["123456", " 123456\n", "Iv23liAbCdEf012345", "Iv1.0123456789abcdef"])
def test_a_github_apps_id_or_client_id_is_taken(app_id):
    assert load({"AIIMPL_GITHUB_APP_ID": app_id})["AIIMPL_GITHUB_APP_ID"] == app_id.strip()


def test_valid_values_are_read():
    settings = load({
        "AIIMPL_POLL_INTERVAL": " 30 ", "AIIMPL_GLOBAL_CAP": "0", "AIIMPL_DEDUP_WINDOW_SECONDS": "0",
        "AIIMPL_BACKEND_CAPS": "fly-machines=10, local-docker=0", "AIIMPL_RETENTION_DAYS": "0",
        "AIIMPL_PUBLIC_URL": " https://orchestrator.example.com:8443/aiimpl ",
        "AIIMPL_GITHUB_API_URL": "https://github.example.com/api/v3",
    })
    assert settings["AIIMPL_POLL_INTERVAL"] == 30
    assert settings["AIIMPL_GLOBAL_CAP"] == 0
    assert settings["AIIMPL_DEDUP_WINDOW_SECONDS"] == 0
    assert settings["AIIMPL_BACKEND_CAPS"] == {"fly-machines": 10, "local-docker": 0}
    assert settings["AIIMPL_RETENTION_DAYS"] == 0
    assert settings["AIIMPL_PUBLIC_URL"] == "https://orchestrator.example.com:8443/aiimpl"
    assert settings["AIIMPL_GITHUB_API_URL"] == "https://github.example.com/api/v3"
    defaults = load({})
    assert (defaults["AIIMPL_POLL_INTERVAL"], defaults["AIIMPL_PUBLIC_URL"]) == (60, "http://127.0.0.1:8000")


def test_a_secret_read_from_a_file_with_its_line_break_is_the_secret(tmp_path):
    """A secret file (Kubernetes, Docker) ends with a line break that no request can send: the
    secrets that requests carry are read without the spaces and line breaks around them."""
    from aiimpl_core import create_app
    from aiimpl_core.auth.signatures import github_signature

    settings = load({"AIIMPL_ADMIN_ACCESS_CODE": "access-code-0123456789\n",
                     "AIIMPL_METRICS_TOKEN": "  metrics-token\n", "AIIMPL_TRIGGER_SECRET": "trigger\r\n",
                     "AIIMPL_GITHUB_WEBHOOK_SECRET": "hook-secret\n", "AIIMPL_SECRET_KEY": "k" * 40 + "\n"})
    assert (settings["AIIMPL_ADMIN_ACCESS_CODE"], settings["AIIMPL_METRICS_TOKEN"],
            settings["AIIMPL_TRIGGER_SECRET"], settings["AIIMPL_GITHUB_WEBHOOK_SECRET"]) == (
        "access-code-0123456789", "metrics-token", "trigger", "hook-secret")
    assert settings["AIIMPL_SECRET_KEY"] == "k" * 40 + "\n"  # (the key of what is stored: as given)
    assert load({"AIIMPL_METRICS_TOKEN": " \n"})["AIIMPL_METRICS_TOKEN"] is None  # blank: unset

    app = create_app({"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/aiimpl.db"}, load_entrypoints=False,
                     environ={"AIIMPL_ADMIN_ACCESS_CODE": "access-code-0123456789\n",
                              "AIIMPL_METRICS_TOKEN": "metrics-token\n",
                              "AIIMPL_GITHUB_WEBHOOK_SECRET": "hook-secret\n",
                              "AIIMPL_SECRET_KEY": "k" * 40})
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    client = app.test_client()
    assert client.post("/api/auth", json={"code": "access-code-0123456789"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-token"}).status_code == 200
    body = b'{"zen": "Design for failure."}'
    signed = {"X-GitHub-Event": "ping", "X-Hub-Signature-256": github_signature("hook-secret", body)}
    ping = client.post("/api/github/webhook", data=body, content_type="application/json", headers=signed)
    assert ping.status_code == 200


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env={**environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_a_cli_command_stops_on_a_value_that_is_not_valid(tmp_path):
    done = _cli("jobs", "list", AIIMPL_POLL_INTERVAL="0", AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/a.db")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: AIIMPL_POLL_INTERVAL: must be at least 1, not 0"


def test_the_session_program_does_not_read_the_orchestrators_settings():
    # a runner's environment is not the operator's: the session goes on to its own checks
    done = _cli("session", "run", AIIMPL_POLL_INTERVAL="0", RUNNER_MODE="bogus")
    assert done.returncode == 2, done.stderr
    assert "AIIMPL_PHASE is not set" in done.stderr
    assert "AIIMPL_POLL_INTERVAL" not in done.stderr and "RUNNER_MODE" not in done.stderr


@pytest.mark.parametrize(("key", "warned"), [("short-key-of-21-chars", True), ("k" * 32, False)])
def test_a_short_secret_key_is_warned_about(tmp_path, caplog, monkeypatch, key, warned):
    from aiimpl_core import config
    from aiimpl_core.app import create_app

    # (said once a process: an app this process built earlier, in another test, may have said it)
    monkeypatch.setattr(config, "SAID_BEFORE_FORK", set())
    with caplog.at_level(logging.WARNING, logger="aiimpl"):
        create_app({"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/k.db", "AIIMPL_SECRET_KEY": key},
                   load_entrypoints=False, environ={})
    said = [r.getMessage() for r in caplog.records if "AIIMPL_SECRET_KEY has" in r.getMessage()]
    assert said == ([f"AIIMPL_SECRET_KEY has {len(key)} characters: use at least 32 random ones (e.g. the "
                     "output of `openssl rand -hex 32`)"] if warned else [])
    assert all(key not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("environ", "pool"), [
    ({}, (5, 10)),
    ({"AIIMPL_DB_POOL_SIZE": "2", "AIIMPL_DB_MAX_OVERFLOW": "0"}, (2, 0)),
])
def test_the_connection_pool_of_each_process_is_a_setting(environ, pool):
    """(PostgreSQL) A host's processes hold up to pool size + overflow connections each: the
    operator sizes them against the server's max_connections, without code."""
    from aiimpl_core.app import create_app
    from aiimpl_core.extensions import db

    app = create_app({"AIIMPL_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/none"},
                     load_entrypoints=False, environ=environ)
    with app.app_context():
        assert (db.engine.pool.size(), db.engine.pool._max_overflow) == pool


@pytest.mark.parametrize(("name", "value"), [("AIIMPL_DB_POOL_SIZE", "0"), ("AIIMPL_DB_MAX_OVERFLOW", "-1")])
def test_a_connection_pool_that_is_no_count_is_refused_at_start(name, value):
    from aiimpl_core import config

    with pytest.raises(config.ConfigError, match=f"^{name}: must be at least"):
        config.load({name: value})
