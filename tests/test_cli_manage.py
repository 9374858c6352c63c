"""The management commands do what the admin UI does, through the same API, with --json and exit codes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import (
    cli,
    commands,  # noqa: F401 - registers the command groups
)
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


@pytest.fixture
def runner_backend() -> FakeRunner:
    return FakeRunner("fly-machines", "fly", sessions=True, secrets=True, workflow_sync=True)


@pytest.fixture
def aiimpl_plugins(runner_backend):
    return [
        FakeTracker().plugin,
        runner_backend.plugin,
        FakeRunner("github-actions", "gha", workflow_sync=True).plugin,
    ]


@pytest.fixture
def run(app):
    def invoke(*args: str, input: str | None = None):  # noqa: A002
        result = CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app), input=input)
        return result

    return invoke


def test_mappings_lifecycle(run):
    r = run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main",
            "--execution-mode", "fly-machines", "--env", "NODE_ENV=test")
    assert r.exit_code == 0, r.output
    r = run("mappings", "create", "BAD", "--owner", "acme", "--repo", "api", "--default-branch", "main",
            "--machine-cpus", "0")
    assert r.exit_code == 1 and "machineCpus must be a positive integer" in r.output
    listed = json.loads(run("mappings", "list", "--json").output)
    rows = listed if isinstance(listed, list) else listed.get("mappings", [])
    assert [m["teamKey"] for m in rows] == ["ENG"] and rows[0]["extraEnv"] == {"NODE_ENV": "test"}
    # as text: each value as the API writes it, text as it is
    lines = dict(line.split(None, 1) for line in run("mappings", "show", "ENG").output.splitlines())
    assert (lines["paused"], lines["maxInProgressAiIssues"], lines["extraEnv"], lines["owner"]) == (
        "false", "null", '{"NODE_ENV": "test"}', "acme")
    assert run("mappings", "pause", "ENG").exit_code == 0
    shown = json.loads(run("mappings", "show", "ENG", "--json").output)
    assert (shown.get("mapping", shown))["paused"] is True
    assert run("mappings", "resume", "ENG").exit_code == 0
    assert run("mappings", "set-cap", "ENG", "3").exit_code == 0
    r = run("mappings", "set-cap", "ENG", "0")
    assert r.exit_code == 1 and "maxInProgressAiIssues must be a positive integer" in r.output
    r = run("mappings", "update", "ENG", "--repo", "web")
    assert r.exit_code == 0, r.output
    shown = json.loads(run("mappings", "show", "ENG", "--json").output)
    assert (
        (shown.get("mapping", shown))["repo"] == "web"
        and (shown.get("mapping", shown))["maxInProgressAiIssues"] == 3
    )
    r = run("mappings", "sync-workflows", "--all")
    assert r.exit_code == 0, r.output
    r = run("mappings", "delete", "ENG")  # no terminal to confirm on (a script): not deleted
    assert (r.exit_code, r.output.splitlines()[-1]) == (
        2, "Error: not deleted: give --yes to delete without a terminal to confirm on")
    assert json.loads(run("mappings", "show", "ENG", "--json").output)
    assert run("mappings", "delete", "ENG", "--yes").exit_code == 0
    r = run("mappings", "delete", "ENG", "--yes")
    assert r.exit_code == 1 and "Team not found" in r.output


@pytest.mark.parametrize(("env", "said"), [
    (("A=1", "B"), "Invalid value for --env: 'B' is not KEY=VALUE"),
    (("A=1", "A=2"), "Invalid value for --env: A is given twice"),
])
def test_env_is_key_value_pairs_each_given_once(run, env, said):
    r = run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main",
            *[arg for item in env for arg in ("--env", item)])
    assert r.exit_code == 2 and r.output.splitlines()[-1] == f"Error: {said}"


def test_update_env_replaces_the_whole_set(run):
    run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main",
        "--env", "A=1", "--env", "B=2")
    assert run("mappings", "update", "ENG", "--env", "C=3").exit_code == 0
    shown = json.loads(run("mappings", "show", "ENG", "--json").output)
    assert shown.get("mapping", shown)["extraEnv"] == {"C": "3"}
    assert "replaces the mapping's whole set" in " ".join(run("mappings", "update", "--help").output.split())


def test_secrets_runner_mode_and_sessions(run, runner_backend):
    run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main")
    r = run("secrets", "set", "NPM_TOKEN", "--team", "ENG", input="s3cr3t-value\n")
    assert r.exit_code == 0, r.output
    r = run("secrets", "list", "--team", "ENG", "--json")
    assert "NPM_TOKEN" in r.output and "s3cr3t-value" not in r.output
    r = run("secrets", "set", "bad-name", input="x\n")
    assert r.exit_code == 1 and "name must contain only letters, digits, and underscores" in r.output
    # what is wrong with a value is said of the value (the API's words name neither)
    for blank in ("\n", "   \n"):
        r = run("secrets", "set", "EMPTY", input=blank)
        assert (r.exit_code, r.output) == (
            1, "Error: the value on standard input is empty: a secret needs one\n")
    r = run("secrets", "set", "NUL", input="a\0b")
    assert (r.exit_code, r.output) == (
        1, "Error: the value on standard input holds a NUL character, which no secret can hold\n")
    assert run("secrets", "delete", "NPM_TOKEN", "--team", "ENG").exit_code == 0
    r = run("secrets", "delete", "NPM_TOKEN", "--team", "ENG")
    assert r.exit_code == 1 and "Secret not found" in r.output

    assert run("runner-mode", "set", "shadow").exit_code == 0
    assert json.loads(run("runner-mode", "get", "--json").output)["mode"] == "shadow"
    r = run("runner-mode", "set", "warp")
    assert r.exit_code == 1 and "mode must be one of: default, gha, fly, local, shadow" in r.output

    assert json.loads(run("sessions", "list", "--json").output) in ([], {"sessions": []})
    r = run("sessions", "destroy", "m-404")
    assert r.exit_code == 1 and "Session not found" in r.output


@pytest.mark.parametrize("piped", [b"s3cr3t-value\n", b"s3cr3t-value\r\n", b"s3cr3t-value"])
def test_secrets_set_drops_the_line_ending_of_a_piped_value(app, run, monkeypatch, piped):
    import io
    import sys
    import types

    from aiimpl_core.services.secrets import read_value

    run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main")
    # a pipe as the process reads it: no newline translation (the test runner's input would do one)
    pipe = io.TextIOWrapper(io.BytesIO(piped), encoding="utf-8", newline="")
    monkeypatch.setattr("aiimpl_core.cli.manage.sys", types.SimpleNamespace(stdin=pipe, stderr=sys.stderr))
    r = run("secrets", "set", "NPM_TOKEN", "--team", "ENG")
    assert r.exit_code == 0, r.output
    assert read_value(app, "NPM_TOKEN", "ENG") == "s3cr3t-value"


@pytest.mark.parametrize("size", [65_537, 3_000_000])  # (the second over the API's 2 MiB bodies)
def test_secrets_set_of_a_value_too_long_says_its_limit(run, size):
    run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main")
    r = run("secrets", "set", "BIG", "--team", "ENG", input="s" * size + "\n")
    assert (r.exit_code, r.output.strip()) == (1, "Error: value must be at most 65,536 characters")


def test_secrets_set_on_a_terminal_asks_for_the_value_hidden(run, monkeypatch):
    import sys
    import types

    import click

    class Terminal:
        def isatty(self) -> bool:
            return True

    asked: list[tuple[str, bool]] = []
    terminal = types.SimpleNamespace(stdin=Terminal(), stderr=sys.stderr)
    monkeypatch.setattr("aiimpl_core.cli.manage.sys", terminal)

    def prompt(text: str, hide_input: bool = False, **_kw: object) -> str:
        asked.append((text, hide_input))
        return "typed-value"

    monkeypatch.setattr(click, "prompt", prompt)
    r = run("secrets", "set", "NPM_TOKEN")
    assert r.exit_code == 0 and r.output.strip() == "Secret NPM_TOKEN set.", r.output
    assert asked == [("Value of NPM_TOKEN", True)]
    assert "NPM_TOKEN" in run("secrets", "list").output
    r = run("secrets", "set", "NPM_TOKEN", "--team", "NOPE")  # said before the value is asked for
    assert r.exit_code == 1 and r.output.strip() == "Error: Team not found"
    assert len(asked) == 1


@pytest.mark.parametrize(("name", "said"), [
    ("NPM-TOKEN", "name must contain only letters, digits, and underscores"),
    ("ENG_TOKEN", "Secret name must not start with a team key prefix (ENG_)"),  # a global one
    ("eng_token", "Secret name must not start with a team key prefix (ENG_)"),
    ("N" * 256, "name must be at most 255 characters"),
], ids=["character", "team-prefix", "team-prefix-any-case", "length"])
def test_secrets_set_refuses_a_bad_name_before_asking_for_the_value(run, monkeypatch, name, said):
    """The team, the schema and the secret store were checked before the value was asked for, but
    a name the API refuses was only said once the value had been typed at the hidden prompt."""
    import click

    from aiimpl_core.cli import manage

    run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main")
    asked: list[str] = []
    monkeypatch.setattr(manage, "_on_a_terminal", lambda: True)
    monkeypatch.setattr(click, "prompt", lambda text, **_kw: asked.append(text) or "typed-value")
    r = run("secrets", "set", name)
    assert (r.exit_code, r.output.strip()) == (1, f"Error: {said}")
    assert asked == []
    r = run("secrets", "set", name.replace("-", "_"), "--team", "ENG")  # a team's own: its prefix is fine
    assert (r.exit_code == 0) == (len(name) <= 255), r.output


def test_update_of_a_mapping_whose_tracker_is_gone_says_so(app, run):
    from aiimpl_core.testing.fakes import add_mapping

    add_mapping("ENG", provider="linear")  # made while the Linear plugin was installed
    r = run("mappings", "update", "ENG", "--cap", "2")
    assert r.exit_code == 1
    assert r.output.strip() == (
        "Error: ticketing.provider must be 'fake-tracker' ('linear' is not installed, or is disabled)")
