"""What an operator's first deployment ran into on the command line: each answer is one line that
says what to do, never a traceback, a secret or a value the command did not use."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import (
    cli,
    commands,  # noqa: F401 - registers the command groups
)
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


@pytest.fixture
def aiimpl_plugins():
    return [FakeTracker().plugin, FakeRunner("fly-machines", "fly").plugin]


@pytest.fixture
def run(app):
    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):  # noqa: A002
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app), input=input,
                                  env=env)

    return invoke


def _create(run: Any, team: str = "ENG", *extra: str) -> None:
    r = run("mappings", "create", team, "--owner", "acme", "--repo", "api", "--default-branch", "main",
            *extra)
    assert r.exit_code == 0, r.output


def _mapping(run: Any, team: str = "ENG") -> dict[str, Any]:
    shown = json.loads(run("mappings", "show", team, "--json").output)
    return shown.get("mapping", shown)


# -- mappings create --from-json --------------------------------------------------------------------

@pytest.mark.parametrize("content", ["[1, 2]", '"ENG"', "3", "null", "true"])
def test_from_json_that_is_not_an_object_is_named(run, tmp_path, content):
    source = tmp_path / "f.json"
    source.write_text(content)
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"Error: --from-json: {source} must hold a JSON object (the mapping's fields)"


def test_from_json_on_standard_input_that_is_not_an_object_is_named(run):
    r = run("mappings", "create", "ENG", "--from-json", "-", input="[1, 2]")
    assert r.exit_code == 1
    assert r.output.strip() == (
        "Error: --from-json: standard input must hold a JSON object (the mapping's fields)")


def test_from_json_object_still_creates_the_mapping(run, tmp_path):
    source = tmp_path / "f.json"
    source.write_text(json.dumps({"owner": "acme", "repo": "api", "defaultBranch": "main"}))
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    assert r.exit_code == 0, r.output
    assert _mapping(run)["repo"] == "api"


# -- serve, config: ports and database URLs ---------------------------------------------------------

class _Server:
    def __init__(self, host: str, port: int, app: Any) -> None:
        self.debug = app.debug

    def serve_forever(self) -> None:
        pass

    def server_close(self) -> None:
        pass


@pytest.fixture
def served(monkeypatch):
    """``aiimpl serve`` with a server that returns at once (what it was made with is kept)."""
    servers: list[_Server] = []

    def make(host: str, port: int, app: Any) -> _Server:
        servers.append(_Server(host, port, app))
        return servers[-1]

    monkeypatch.setattr("aiimpl_core.cli.devserver.make_dev_server", make)
    return servers


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "0"])
def test_serve_port_must_be_a_tcp_port(run, served, port):
    r = run("serve", "--port", port)
    assert r.exit_code == 2 and "is not in the range 1<=x<=65535" in r.output
    assert not served


SECRET_URL = "postgresql+psycopg://u:pw-SECRET@db.internal/aiimpl?password=qs-SECRET&sslpassword=ssl-SECRET" \
             "&sslmode=require"
SHOWN_URL = "postgresql+psycopg://u:***@db.internal/aiimpl?password=***&sslmode=require&sslpassword=***"


def test_serve_banner_hides_passwords_in_the_query_too(app, run, served):
    app.config["SQLALCHEMY_DATABASE_URI"] = SECRET_URL
    r = run("serve", "--port", "18510")
    assert r.exit_code == 0, r.output
    assert f"on http://127.0.0.1:18510  (database: {SHOWN_URL})" in r.output
    assert "-SECRET" not in r.output


@pytest.mark.parametrize(("code", "said"), [
    (None, "Warning: AIIMPL_ADMIN_ACCESS_CODE is not set: every sign-in to the admin UI and API is refused "
           "until it is"),
    ("hunter2", "Warning: AIIMPL_ADMIN_ACCESS_CODE has 7 characters: sign-in is throttled per client, not "
                "across clients; use at least 16 random ones (e.g. the output of `openssl rand -hex 16`)"),
    ("0123456789abcdef", None),
])
def test_serve_says_when_the_access_code_is_unset_or_short(app, run, served, code, said):
    app.config["AIIMPL_ADMIN_ACCESS_CODE"] = code
    r = run("serve", "--port", "18512")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("Warning:")]
    assert warnings == ([said] if said else [])
    assert "hunter2" not in r.output


def test_config_hides_passwords_in_the_query_too():
    r = CliRunner().invoke(cli, ["config"], env={"AIIMPL_DATABASE_URL": SECRET_URL})
    assert r.exit_code == 0, r.output
    (line,) = [line for line in r.output.splitlines() if line.startswith("AIIMPL_DATABASE_URL ")]
    assert line.split()[1] == SHOWN_URL
    assert "-SECRET" not in r.output


def test_config_hides_the_credentials_of_any_url_setting():
    env = {
        "AIIMPL_JIRA_URL": "https://bob:jira-SECRET@acme.atlassian.net",
        "AIIMPL_GITHUB_API_URL": "https://ghe.example.com/api/v3?access_token=gh-SECRET&x=1",
        "AIIMPL_PUBLIC_URL": "https://ai.example.com/",
        "AIIMPL_DATABASE_URL": "postgresql+psycopg://u:pw-SECRET@[::1",
    }
    r = CliRunner().invoke(cli, ["config"], env=env)
    assert r.exit_code == 1, r.output  # the table, then the URL the app cannot use is said
    assert r.output.splitlines()[-1] == "Error: AIIMPL_DATABASE_URL is not a database URL"
    shown = {line.split()[0]: line.split(None, 1)[1] for line in r.output.splitlines()[:-1] if line.strip()}
    assert shown["AIIMPL_JIRA_URL"] == "https://bob:***@acme.atlassian.net"
    assert shown["AIIMPL_GITHUB_API_URL"] == "https://ghe.example.com/api/v3?access_token=***&x=1"
    assert shown["AIIMPL_PUBLIC_URL"] == "https://ai.example.com/"  # nothing to hide: as it is
    assert shown["AIIMPL_DATABASE_URL"] == "(unparsable URL)"
    assert "-SECRET" not in r.output


@pytest.mark.parametrize("value", [
    # pip's arguments, as the setting's help has them (`--index-url …`)
    "aiimpl-core --index-url https://deploy:idx-pass-5b4a3c2d@pypi.acme.example/simple",
    # a git URL with a token as its user, as GitHub documents a clone with a token
    "git+https://ghp_0123456789abcdefABCDEF0123456789abcd@github.com/acme/aiimpl-core.git",
    "aiimpl-core @ git+https://x-access-token:ghs_0123456789abcdefABCDEF0123456789abcd@github.com/a/b",
    "aiimpl-core --index-url https://pypi.acme.example/simple?token=idx-pass-5b4a3c2d",
    # a token pasted outside a URL: masked by its shape
    "aiimpl-core ghp_0123456789abcdefABCDEF0123456789abcd",
])
def test_config_hides_the_credentials_of_a_url_within_a_value(tmp_path, value):
    """Only a value that was a URL as a whole had its password hidden, and a token standing as the
    user (``https://TOKEN@``) never: a package to install given as pip's arguments or as a git URL
    was printed with its index's password or its token."""
    r = CliRunner().invoke(cli, ["config"], env={"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
                                                 "AIIMPL_GHA_SESSION_PACKAGE": value})
    assert r.exit_code == 0, r.output
    (line,) = [line for line in r.output.splitlines() if line.startswith("AIIMPL_GHA_SESSION_PACKAGE ")]
    assert "idx-pass-5b4a3c2d" not in line and "0123456789abcdef" not in line, line
    assert "aiimpl-core" in line  # the rest as it is


def test_config_masks_a_sensitive_value_another_setting_quotes(tmp_path):
    """A value shown is masked as a log line is: a sensitive setting's value (shown as ``(set)``)
    was printed in clear where another setting quoted it."""
    r = CliRunner().invoke(cli, ["config"], env={
        "AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "AIIMPL_LINEAR_API_KEY": "lin-key-7a6b5c4d",
        "AIIMPL_GHA_SESSION_PACKAGE": "aiimpl-core --extra-index-url=lin-key-7a6b5c4d"})
    assert r.exit_code == 0, r.output
    assert "lin-key-7a6b5c4d" not in r.output


def test_credentials_hidden_keeps_what_is_not_secret():
    from aiimpl_core.cli import _credentials_hidden

    assert _credentials_hidden("aiimpl-core==1.2 --index-url https://deploy:p@ss@pypi.example/simple#x") == (
        "aiimpl-core==1.2 --index-url https://deploy:***@pypi.example/simple#x")
    assert _credentials_hidden("https://TOKEN@github.com/a/b.git") == "https://***@github.com/a/b.git"
    assert _credentials_hidden("https://h/p?x=1&api_token=t&Secret=s#frag") == (
        "https://h/p?x=1&api_token=***&Secret=***#frag")
    assert _credentials_hidden("https://ai.example.com/api/@team") == "https://ai.example.com/api/@team"
    assert _credentials_hidden("no URL: a@b") == "no URL: a@b"
    # a value that is a URL keeps its password hidden whatever it holds (a URL found inside longer
    # text ends at a space or a quote: the password was shown)
    for password in ("pa ss", "p'ss", 'p"s', "p<s>s", "p`s"):
        assert _credentials_hidden(f"https://user:{password}@ghe.example/api") == (
            "https://user:***@ghe.example/api"), password


def test_credentials_are_hidden_in_time_linear_in_the_value():
    """A setting of up to 128 KiB (the most a variable may hold): a long dotted run before a
    ``://``, or a long query name without ``=``, took seconds (each position tried against the rest)."""
    import time

    from aiimpl_core.cli import _credentials_hidden

    started = time.process_time()
    _credentials_hidden(" " + "a." * 60_000 + " ://")
    assert _credentials_hidden("https://h/?" + "a" * 120_000) == "https://h/?" + "a" * 120_000
    assert time.process_time() - started < 3
    assert _credentials_hidden("https://h/?=token=s;a=1") == "https://h/?=token=***;a=1"


@pytest.mark.parametrize(("env", "error"), [
    ({"AIIMPL_POLL_INTERVAL": "0"}, "Error: AIIMPL_POLL_INTERVAL: must be at least 1, not 0"),
    ({"AIIMPL_DATABASE_URL": "mysql://u@db/aiimpl"},
     "Error: AIIMPL_DATABASE_URL: the mysql database is not supported; use SQLite (sqlite:///path) or "
     "PostgreSQL (postgresql+psycopg://user@host/db)"),
], ids=["setting", "database"])
def test_config_shows_a_configuration_that_is_not_valid_and_exits_1(tmp_path, env, error):
    """The whole table, to see what is set, and the exit status a deployment's check reads (it was
    0, and a database URL no command takes was not said at all)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_SECRET_KEY="k" * 32, **env)
    r = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "config"], env=environ, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert error in r.stderr
    assert "AIIMPL_POLL_INTERVAL" in r.stdout and "AIIMPL_DATABASE_URL" in r.stdout


def test_hide_password_keeps_what_is_not_secret():
    from aiimpl_core.cli import _hide_password

    assert _hide_password("sqlite:////var/lib/aiimpl/aiimpl.db") == "sqlite:////var/lib/aiimpl/aiimpl.db"
    assert _hide_password("postgresql+psycopg://u@h/db?PassWord=a&password=b&password=c") == (
        "postgresql+psycopg://u@h/db?PassWord=***&password=***&password=***")
    assert _hide_password("not a url") == "(unparsable URL)"


# -- Flask's run command and debug mode -----------------------------------------------------------

def test_flask_run_and_debug_are_not_offered():
    r = CliRunner().invoke(cli, ["--help"])
    listed = r.output.split("Commands:", 1)[1].split()
    assert "run" not in listed and "serve" in listed and "shell" in listed and "routes" in listed
    assert "--debug" not in r.output
    r = CliRunner().invoke(cli, ["run"])
    assert r.exit_code == 2 and "No such command 'run'" in r.output


def test_serve_never_runs_the_app_in_debug_mode(app, run, served):
    app.debug = True  # FLASK_DEBUG=1 in the environment does this to the app's config
    r = run("serve", "--port", "18511", env={"FLASK_DEBUG": "1"})
    assert r.exit_code == 0, r.output
    assert [server.debug for server in served] == [False]


# -- job ids beyond the id column ---------------------------------------------------------------------

@pytest.mark.parametrize("job_id", ["99999999999999999999", "9223372036854775808", "2147483648"])
def test_a_job_id_beyond_the_id_column_is_not_found(run, job_id):
    r = run("jobs", "show", job_id)
    assert r.exit_code == 1 and r.output.strip() == f"Error: job {job_id}: job not found"
    r = run("jobs", "cancel", job_id)
    assert r.exit_code == 1 and r.output.strip() == f"Error: job {job_id}: job not found"


@pytest.mark.parametrize("job_id", ["1_0", " 5", "+5", "\u0663", "1.0"])
def test_a_job_id_that_is_not_ascii_digits_is_a_usage_error(run, job_id):
    """``int()`` takes ``1_0`` (10), `` 5``, ``+5`` and other scripts' digits: the API's paths take
    ASCII digits only."""
    for command in ("show", "cancel"):
        r = run("jobs", command, job_id)
        assert r.exit_code == 2, r.output
        assert f"Invalid value for 'JOB_ID': {job_id!r} is not a valid integer." in r.output


@pytest.mark.parametrize("args", [
    ("mappings", "set-cap", "ENG", "{}"),
    ("mappings", "update", "ENG", "--cap", "{}"),
    ("mappings", "update", "ENG", "--machine-cpus", "{}"),
    ("mappings", "update", "ENG", "--machine-memory-mb", "{}"),
    ("mappings", "create", "OPS", "--owner", "acme", "--repo", "api", "--default-branch", "main",
     "--machine-cpus", "{}"),
    ("jobs", "list", "--limit", "{}"),
    ("outbox", "list", "--limit", "{}"),
    ("prune", "--older-than", "{}"),
    ("openapi", "--indent", "{}"),
], ids=lambda args: "-".join(a for a in args[:3] if a != "{}"))
@pytest.mark.parametrize("number", ["1_0", " 5", "+5", "\u0663"])
def test_a_number_option_that_is_not_ascii_digits_is_a_usage_error(run, args, number):
    """Only ids were ASCII digits: a cap, a machine's size and a limit took what ``int()`` takes,
    ``1_0`` as 10 and ``\u0663`` (ARABIC-INDIC DIGIT THREE) as 3, which the API's own numbers refuse."""
    _create(run, "ENG")
    r = run(*(number if arg == "{}" else arg for arg in args))
    assert r.exit_code == 2, r.output
    assert f"{number!r} is not a valid integer." in r.output


def test_a_number_option_keeps_its_range(run):
    """The number options still say their range, in the help and when a value is out of it."""
    r = run("jobs", "list", "--limit", "0")
    assert r.exit_code == 2 and "0 is not in the range 1<=x<=10000." in r.output
    assert "[default: 50; 1<=x<=10000]" in " ".join(run("jobs", "list", "--help").output.split())
    _create(run, "ENG")
    r = run("mappings", "update", "ENG", "--machine-cpus", "2", "--machine-memory-mb", "2048", "--json")
    assert r.exit_code == 0, r.output
    assert (_mapping(run)["machineCpus"], _mapping(run)["machineMemoryMb"]) == (2, 2048)


def test_a_job_id_of_zero_or_less_is_not_found(run):
    assert run("jobs", "show", "--", "-3").output.strip() == "Error: job -3: job not found"
    assert run("jobs", "cancel", "0").output.strip() == "Error: job 0: job not found"


@pytest.mark.parametrize("as_json", [(), ("--json",)], ids=["text", "json"])
def test_show_and_cancel_say_a_missing_job_alike_in_the_apis_words(run, client, admin_headers, as_json):
    """The id first, then the API's message for a job it does not have (``GET /api/jobs/1``)."""
    api = client.get("/api/jobs/1", headers=admin_headers)
    assert (api.status_code, api.get_json()) == (404, {"error": "job not found"})
    for command in ("show", "cancel"):
        r = run("jobs", command, "1", *as_json)
        assert (r.exit_code, r.output) == (1, "Error: job 1: job not found\n"), command


# -- runner mode under a RUNNER_MODE override ----------------------------------------------------------

def test_runner_mode_set_under_the_env_override_saves_and_warns(app, run):
    app.config["RUNNER_MODE"] = "gha"  # what a RUNNER_MODE environment variable does
    r = run("runner-mode", "set", "fly")
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    # (only the fly backend is installed here: the mode in force starts no session, and that is said too;
    # the saved one, fly, is installed)
    no_gha = ("Warning: Runner mode gha selects no installed and enabled runner backend. Install or "
              "enable its plugin, or change the runner mode. Until then every issue waits, blocked "
              "(backend-unavailable).")
    assert r.stderr.splitlines() == [
        "Warning: runner mode fly saved, but the RUNNER_MODE environment variable forces gha: fly takes "
        "effect once RUNNER_MODE is unset.", no_gha]
    r = run("runner-mode", "get")
    assert (r.stdout.splitlines()[:2], r.stderr.splitlines()) == (["mode: fly", "effective: gha"], [no_gha])
    state = json.loads(run("runner-mode", "get", "--json").stdout)
    assert (state["mode"], state["effective"], state["envOverride"]) == ("fly", "gha", "gha")
    r = run("runner-mode", "set", "shadow", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["mode"] == "shadow"
    assert "runner mode shadow saved" in r.stderr
    r = run("runner-mode", "set", "warp")
    assert r.exit_code == 1 and "mode must be one of" in r.output


# -- removing a concurrency cap -------------------------------------------------------------------------

def test_set_cap_none_removes_the_cap(run):
    _create(run, "ENG", "--cap", "3")
    assert _mapping(run)["maxInProgressAiIssues"] == 3
    r = run("mappings", "set-cap", "ENG", "none")
    assert r.exit_code == 0 and r.output.strip() == "Cap of ENG removed."
    assert _mapping(run)["maxInProgressAiIssues"] is None
    assert run("mappings", "set-cap", "ENG", "2").exit_code == 0
    assert _mapping(run)["maxInProgressAiIssues"] == 2
    r = run("mappings", "update", "ENG", "--cap", "None")
    assert r.exit_code == 0, r.output
    assert _mapping(run)["maxInProgressAiIssues"] is None
    r = run("mappings", "set-cap", "ENG", "lots")
    assert r.exit_code == 2 and "'lots' is not a valid integer" in r.output
    # a negative cap is the argument it is (it read as an option: "No such option '-5'")
    r = run("mappings", "set-cap", "ENG", "-5")
    assert (r.exit_code, r.output) == (1, "Error: maxInProgressAiIssues must be a positive integer\n")
    assert _mapping(run)["maxInProgressAiIssues"] is None
    for args in (("--team", "ENG", "5"), ("ENG", "--jsn")):  # still unknown options, not arguments
        r = run("mappings", "set-cap", *args)
        assert r.exit_code == 2 and f"No such option '{args[0] if args[0] != 'ENG' else args[1]}'" in r.output
    assert "none" in run("mappings", "set-cap", "--help").output


def test_config_says_the_default_of_what_is_unset():
    env = {name: "" for name in ("AIIMPL_POLL_INTERVAL", "AIIMPL_LOG_LEVEL", "AIIMPL_SECRET_KEY")}
    r = CliRunner().invoke(cli, ["config"], env={**env, "AIIMPL_RUN_TOKEN_SECONDS": "600"})
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line.split(None, 1)[1] for line in r.output.splitlines() if line.strip()}
    assert lines["AIIMPL_POLL_INTERVAL"] == "- (default 60)"
    assert lines["AIIMPL_LOG_LEVEL"] == "- (default INFO)"
    assert lines["AIIMPL_RUN_TOKEN_SECONDS"] == "600"
    assert lines["AIIMPL_SECRET_KEY"] == "-"  # no default


# -- serve runs the in-app scheduler, the only command that does --------------------------------------

@pytest.mark.parametrize(("value", "started"), [("1", 1), ("", 0)])
def test_serve_runs_the_in_app_scheduler_when_asked(app, run, served, monkeypatch, value, started):
    calls: list[Any] = []
    monkeypatch.setattr("aiimpl_core.services.scheduler.start_scheduler", calls.append)
    r = run("serve", "--port", "18512", env={"AIIMPL_SCHEDULER": value})
    assert r.exit_code == 0, r.output
    assert calls == [app] * started


# -- extraEnv is no secret -----------------------------------------------------------------------------


def test_extra_env_named_as_a_secret_is_warned_about_and_a_secrets_value_refused(run, app):
    r = run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main",
            "--env", "NODE_ENV=test", "--env", "DB_PASSWORD=hunter2hunter2", "--env", "NPM_TOKEN=npm-x1")
    assert r.exit_code == 0 and r.stdout == "Mapping ENG saved.\n", r.output
    assert r.stderr.startswith("Warning: extraEnv DB_PASSWORD, NPM_TOKEN look like secrets: extraEnv is kept "
                               "and shown in plain text and passed as a workflow input"), r.stderr
    assert "hunter2" not in r.stderr
    r = run("mappings", "update", "ENG", "--cap", "2")  # not given again: not said again
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    r = run("mappings", "update", "ENG", "--env", "KEYBOARD=us", "--env", "MONKEY=1")
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    r = run("mappings", "update", "ENG", "--env", f"LINEAR={app.config['AIIMPL_SECRET_KEY']}")
    assert r.exit_code == 1
    said = "Error: extraEnv LINEAR holds the value of the setting AIIMPL_SECRET_KEY: "
    assert r.stderr.startswith(said), r.stderr
    assert app.config["AIIMPL_SECRET_KEY"] not in r.output


# -- secrets set on a terminal -----------------------------------------------------------------------------

class _Terminal:
    """Standard input that is a terminal, read by nothing but the (patched) prompt."""

    def isatty(self) -> bool:
        return True

    def read(self) -> str:
        raise AssertionError("standard input read")


def test_secrets_set_asks_for_no_value_where_it_cannot_be_kept(run, monkeypatch):
    """No runner backend keeps secrets here: the API's 503 is said before the value is typed."""
    import sys
    import types

    import click

    asked: list[str] = []
    terminal = types.SimpleNamespace(stdin=_Terminal(), stderr=sys.stderr)
    monkeypatch.setattr("aiimpl_core.cli.manage.sys", terminal)
    monkeypatch.setattr(click, "prompt", lambda text, **kw: asked.append(text) or "typed-value")
    r = run("secrets", "set", "NPM_TOKEN")
    assert r.exit_code == 1
    assert r.output.strip() == ("Error: Fly sessions config not set (no configured runner backend keeps "
                                "secrets and sessions, as Fly Machines and local Docker do)")
    assert asked == []


class TestWithoutARunnerBackend:
    """Only a tracker installed: a mapping is saved with the reference's default executionMode."""

    @pytest.fixture
    def aiimpl_plugins(self):
        return [FakeTracker().plugin]

    def test_saving_a_mapping_says_its_issues_will_wait(self, run):
        r = run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main")
        assert r.exit_code == 0 and r.stdout == "Mapping ENG saved.\n"
        assert r.stderr == ("Warning: No runner backend github-actions is installed and enabled. Install or "
                            "enable its plugin, or change the project's executionMode. Until then its "
                            "issues wait, blocked (backend-unavailable).\n")
        r = run("mappings", "update", "ENG", "--cap", "2")
        assert r.exit_code == 0 and "No runner backend github-actions is installed" in r.stderr
