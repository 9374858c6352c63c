"""Arguments a command cannot use are refused in one line with exit status 1 or 2: never a success
that did nothing, a secret stored where it was not meant to go, a traceback or a loop without a
pause."""
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
    return [FakeTracker().plugin, FakeRunner("fly-machines", "fly", sessions=True, secrets=True).plugin]


@pytest.fixture
def run(app):
    def invoke(*args: str, input: str | None = None):  # noqa: A002
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app), input=input)

    return invoke


def _create(run: Any, team: str = "ENG") -> None:
    r = run("mappings", "create", team, "--owner", "acme", "--repo", "api", "--default-branch", "main")
    assert r.exit_code == 0, r.output


# -- path arguments no API path can carry ---------------------------------------------------------

@pytest.mark.parametrize("team", ["", "ENG/x", "/"])
def test_deleting_a_team_key_no_mapping_can_have_fails(run, team):
    _create(run)
    r = run("mappings", "delete", team, "--yes")
    assert r.exit_code == 1 and r.output.strip() == "Error: Team not found"
    r = run("mappings", "delete", team, "--yes", "--json")
    assert r.exit_code == 1 and r.output.strip() == "Error: Team not found"


@pytest.mark.parametrize("team", ["", "ENG/x"])
@pytest.mark.parametrize("command", [("show",), ("pause",), ("resume",), ("set-cap", "2"),
                                     ("update", "--repo", "web")])
def test_a_team_key_no_mapping_can_have_is_not_found(run, team, command):
    r = run("mappings", command[0], team, *command[1:])
    assert r.exit_code == 1 and r.output.strip() == "Error: Team not found"


def test_syncing_a_team_key_no_mapping_can_have_is_not_found(run):
    r = run("mappings", "sync-workflows", "ENG/x")
    assert (r.exit_code, r.output) == (1, "Error: Team not found\n")


@pytest.mark.parametrize(("args", "message"), [
    (("secrets", "delete", ""), "Secret not found"),
    (("secrets", "delete", "A/B"), "Secret not found"),
    (("sessions", "destroy", ""), "Session not found"),
    (("sessions", "destroy", "m/1"), "Session not found"),
])
def test_an_id_no_path_can_carry_is_not_found(run, args, message):
    r = run(*args)
    assert r.exit_code == 1 and r.output.strip() == f"Error: {message}"


@pytest.mark.parametrize("team", ["", "ENG/x"])
def test_secrets_of_an_empty_or_unknown_team_never_reach_the_global_secrets(run, team):
    _create(run)
    r = run("secrets", "set", "NPM_TOKEN", "--team", team, input="s3cr3t-value\n")
    assert r.exit_code == 1 and r.output.strip() == "Error: Team not found"
    assert json.loads(run("secrets", "list", "--json").output) in ([], {"secrets": []})
    r = run("secrets", "list", "--team", team)
    assert r.exit_code == 1 and r.output.strip() == "Error: Team not found"
    assert run("secrets", "set", "NPM_TOKEN", input="global-value\n").exit_code == 0
    r = run("secrets", "delete", "NPM_TOKEN", "--team", team)
    assert r.exit_code == 1 and r.output.strip() == "Error: Team not found"
    assert "NPM_TOKEN" in run("secrets", "list").output


# -- values beyond what a command can use ------------------------------------------------------------

@pytest.mark.parametrize("days", ["800000", "99999999999", "999999999999999999999"])
def test_prune_older_than_a_date_can_be_is_refused(run, days):
    r = run("prune", "--older-than", days)
    assert r.exit_code == 2 and "Invalid value for '--older-than'" in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("interval", ["nan", "inf", "1e308"])
def test_poll_interval_that_is_no_wait_is_refused(run, interval):
    r = run("poll", "--interval", interval)
    assert r.exit_code == 2 and "Invalid value for '--interval'" in r.output, r.output


@pytest.mark.parametrize("indent", ["-1", "99999999999999"])
def test_openapi_indent_out_of_range_is_refused(run, indent):
    r = run("openapi", "--indent", indent)
    assert r.exit_code == 2 and "Invalid value for '--indent'" in r.output, r.output


# -- JSON options ----------------------------------------------------------------------------------------

def test_an_empty_ticketing_option_is_not_valid_json(run):
    _create(run)
    r = run("mappings", "update", "ENG", "--ticketing", "")
    assert r.exit_code == 2 and "Invalid value for --ticketing: not valid JSON" in r.output


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_that_are_not_json_are_named(run, tmp_path, constant):
    _create(run)
    source = tmp_path / "f.json"
    source.write_text(f'{{"maxInProgressAiIssues": {constant}}}')
    r = run("mappings", "update", "ENG", "--from-json", str(source))
    assert r.exit_code == 1 and r.output.startswith("Error: --from-json: not valid JSON"), r.output
    r = run("mappings", "update", "ENG", "--ticketing", f'{{"provider": "fake-tracker", "x": {constant}}}')
    assert r.exit_code == 2 and "Invalid value for --ticketing: not valid JSON" in r.output, r.output


# -- the group's options -----------------------------------------------------------------------------------

def test_the_app_option_that_would_be_ignored_is_not_offered():
    r = CliRunner().invoke(cli, ["--help"])
    assert "--app" not in r.output and "-A," not in r.output
    r = CliRunner().invoke(cli, ["-A", "elsewhere:app", "config"])
    assert r.exit_code == 2 and "No such option" in r.output


def test_the_env_file_option_names_no_file_aiimpl_never_reads(tmp_path):
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and ".flaskenv" not in r.output and "'.env'" not in r.output
    env_file = tmp_path / "aiimpl.env"
    env_file.write_text("AIIMPL_POLL_INTERVAL=17\nAIIMPL_RUN_TOKEN_SECONDS=700\n")
    # (both named: the runner puts back what the file loaded into this process's environment)
    r = CliRunner().invoke(cli, ["-e", str(env_file), "config"],
                           env={"AIIMPL_POLL_INTERVAL": None, "AIIMPL_RUN_TOKEN_SECONDS": "600"})
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line.split(None, 1)[1] for line in r.output.splitlines() if line.strip()}
    assert (lines["AIIMPL_POLL_INTERVAL"], lines["AIIMPL_RUN_TOKEN_SECONDS"]) == ("17", "600")


def test_an_env_files_settings_are_checked_as_the_environments_are(tmp_path):
    """``aiimpl -e bad.env config`` exited 0 where the same value in the environment exits 1, and
    the file's AIIMPL_DISABLED_PLUGINS left its plugin's commands in."""
    import os
    import subprocess
    import sys

    env_file = tmp_path / "aiimpl.env"
    env_file.write_text("AIIMPL_POLL_INTERVAL=0\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    for args in (["-e", str(env_file)], [f"--env-file={env_file}"]):
        done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args, "config"], env=environ,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "Error: AIIMPL_POLL_INTERVAL: must be at least 1, not 0" in done.stderr
        assert "AIIMPL_POLL_INTERVAL" in done.stdout  # the table all the same
    env_file.write_text("AIIMPL_DISABLED_PLUGINS=linear\n")
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "-e", str(env_file), "linear", "--help"],
                          env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "No such command 'linear'" in done.stderr


def test_a_plugins_setting_that_is_not_valid_fails_config_as_a_core_one_does():
    """The server starts on it (each call of that plugin fails with the message); a deploy script
    that checks its configuration with `aiimpl config` is stopped before."""
    r = CliRunner().invoke(cli, ["config"], env={"AIIMPL_LINEAR_PAGE_SIZE": "abc",
                                                 "AIIMPL_DOCKER_TIMEOUT_SECONDS": "soon"})
    assert r.exit_code == 1, r.output
    assert "AIIMPL_LINEAR_PAGE_SIZE" in r.stdout  # the table all the same
    assert r.stderr.splitlines() == [
        "Error: AIIMPL_LINEAR_PAGE_SIZE must be a number",
        "Error: AIIMPL_DOCKER_TIMEOUT_SECONDS must be a number of seconds greater than 0 and at most 3600, "
        "not 'soon'"]
    r = CliRunner().invoke(cli, ["config"], env={"AIIMPL_LINEAR_PAGE_SIZE": "25"})
    assert r.exit_code == 0, r.output


def test_a_plugins_url_that_is_no_url_fails_config_without_quoting_its_credentials():
    r = CliRunner().invoke(cli, ["config"], env={
        "AIIMPL_LINEAR_API_URL": "api.linear.app/graphql", "AIIMPL_JIRA_URL": "acme.atlassian.net",
        "AIIMPL_FLY_API_URL": "ftp://user:s3cret@machines.example"})
    assert r.exit_code == 1, r.output
    url = "must be an http:// or https:// URL with a host, not"
    assert r.stderr.splitlines() == [
        f"Error: AIIMPL_JIRA_URL {url} 'acme.atlassian.net'",
        f"Error: AIIMPL_LINEAR_API_URL {url} 'api.linear.app/graphql'",
        f"Error: AIIMPL_FLY_API_URL {url} 'ftp://***@machines.example'"]
    assert "s3cret" not in r.output
    good = {"AIIMPL_LINEAR_API_URL": "https://api.linear.app/graphql",
            "AIIMPL_JIRA_URL": "https://acme.atlassian.net", "AIIMPL_FLY_API_URL": "http://127.0.0.1:4280/v1"}
    assert CliRunner().invoke(cli, ["config"], env=good).exit_code == 0


@pytest.mark.parametrize("content", ["AIIMPL_POLL_INTERVAL=17\n".encode("utf-16"), b"\xff\xfeA=1\n"])
def test_an_env_file_that_is_not_utf8_is_named_in_one_line(tmp_path, content):
    env_file = tmp_path / "aiimpl.env"
    env_file.write_bytes(content)
    r = CliRunner().invoke(cli, ["-e", str(env_file), "config"])
    assert r.exit_code == 2
    assert r.output.splitlines()[-1] == (
        f"Error: Invalid value for '-e' / '--env-file': {env_file} is not UTF-8 text")
    assert r.exception is None or isinstance(r.exception, SystemExit)


# -- no poll cycle in a command's own process ------------------------------------------------------------

def test_commands_never_run_the_in_app_scheduler(tmp_path, monkeypatch):
    """With AIIMPL_SCHEDULER in the environment the commands share with the server, a command's app
    would poll (and dispatch) in the command's process, during `aiimpl db upgrade` too."""
    import threading

    from aiimpl_core.cli import _create_app

    monkeypatch.setenv("AIIMPL_SCHEDULER", "1")
    monkeypatch.setenv("AIIMPL_DATABASE_URL", f"sqlite:///{tmp_path}/a.db")
    monkeypatch.setenv("AIIMPL_SECRET_KEY", "edges-test-secret-key-0123456789abcdef")
    app = _create_app()
    assert "aiimpl_scheduler" not in app.extensions
    assert not [t for t in threading.enumerate() if t.name == "aiimpl-scheduler" and t.is_alive()]


# -- aiimpl demo ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("timeout", ["nan", "-5", "0"])
def test_a_demo_timeout_that_never_or_at_once_gives_up_is_refused(timeout):
    r = CliRunner().invoke(cli, ["demo", "--timeout", timeout])
    assert r.exit_code == 2 and "Invalid value for '--timeout'" in r.output, r.output


def test_the_demo_without_git_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("aiimpl_core.cli.demo.shutil.which", lambda name: None)
    r = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert r.exit_code == 1 and r.output == "Error: the demo needs git: install it or put it on PATH\n"
    assert not (tmp_path / "demo").exists()


def test_a_demo_directory_that_cannot_be_made_is_named_in_one_line(tmp_path):
    import socket

    (tmp_path / "file").write_text("")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "file" / "demo"), "--port", str(port)])
    assert r.exit_code == 1, r.output
    assert r.output == f"Error: {tmp_path / 'file' / 'demo'}: Not a directory\n"


# -- aiimpl db, as an operator sees it -------------------------------------------------------------


def test_db_help_lists_what_an_operator_runs_not_the_authoring_commands(run) -> None:
    r = run("db", "--help")
    assert r.exit_code == 0, r.output
    listed = {line.split()[0] for line in r.output.split("Commands:")[1].splitlines() if line.strip()}
    assert {"upgrade", "downgrade", "current", "history", "stamp"} <= listed
    assert not listed & {"init", "revision", "migrate", "edit", "merge", "list-templates", "check"}
    assert "the migrations installed with aiimpl-core" in " ".join(r.output.split())


@pytest.mark.parametrize("command", ["upgrade", "downgrade", "current", "stamp", "history"])
def test_each_db_command_says_the_migrations_it_reads_by_default(run, command) -> None:
    """Each said 'default is "migrations"', a folder of the working one (not there: the command
    then failed, telling to run an init command that is hidden)."""
    r = run("db", command, "--help")
    assert r.exit_code == 0, r.output
    assert "the migrations installed with aiimpl-core" in " ".join(r.output.split())
    assert '"migrations"' not in r.output


# -- an instance folder that cannot be made ---------------------------------------------------------


@pytest.mark.parametrize("args", [("--help",), ("jobs", "list")], ids=["help", "command"])
def test_an_instance_folder_that_cannot_be_made_is_said_in_one_line(tmp_path, args) -> None:
    """Without AIIMPL_DATABASE_URL the database is SQLite in the instance folder; where it cannot be
    made (a folder the user cannot write to, a file in its path), the command says so and what to
    set, without a traceback (the help still lists the commands)."""
    (tmp_path / "a-file").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    env["AIIMPL_INSTANCE_PATH"] = str(tmp_path / "a-file" / "instance")
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"Error: the instance folder {tmp_path}/a-file/instance for the default SQLite database cannot "
        "be made (Not a directory): set AIIMPL_DATABASE_URL"
    )
    if args == ("--help",):
        assert "  jobs " in done.stdout


def test_the_help_says_nothing_of_running_without_a_secret_key(tmp_path) -> None:
    """The help builds the app only for the commands it lists or finds (`db` is the app's own): no
    start-up warning about the key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    env["AIIMPL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'aiimpl.db'}"
    for args, listed in ((["--help"], "  jobs "), ([], "  jobs "), (["db", "--help"], "  upgrade ")):
        done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        # (alone, the help goes to stderr with click's usage status)
        shown = done.stdout + done.stderr
        assert listed in shown and "WARNING" not in shown and "SECRET_KEY" not in shown, (args, shown)
    # a command still says it
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "jobs", "list"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "AIIMPL_SECRET_KEY is not set" in done.stderr
