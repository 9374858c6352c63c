"""The commands as a script runs them: a secret a remote answer echoes is never printed, a mapping
file's misspelt field is not taken for a saved change, bytes that are no UTF-8 are said in one line,
an interrupt exits 130, and a poll loop whose reader went away ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import (
    cli,
    commands,  # noqa: F401 - registers the command groups
)
from aiimpl_core.errors import ProviderError
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker

#: a sensitive setting's value, which the fake tracker's errors below quote as a careless service would
TOKEN = "ghp_cli_scripting_token_0123456789"


@pytest.fixture
def aiimpl_plugins(tracker):
    return [tracker.plugin, FakeRunner("github-actions", "gha", workflow_sync=True).plugin,
            FakeRunner("fly-machines", "fly", sessions=True, secrets=True).plugin]


@pytest.fixture
def aiimpl_config():
    return {"AIIMPL_GITHUB_TOKEN": TOKEN}


@pytest.fixture
def run(app):
    def invoke(*args: str, input: str | bytes | None = None):  # noqa: A002
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app), input=input)

    return invoke


def _create(run: Any, team: str = "ENG", *more: str) -> None:
    r = run("mappings", "create", team, "--owner", "acme", "--repo", "api", "--default-branch", "main", *more)
    assert r.exit_code == 0, r.output


def _mapping(run: Any, team: str = "ENG") -> dict[str, Any]:
    return json.loads(run("mappings", "show", team, "--json").output)


# -- secrets in what a remote service answered --------------------------------------------------------

def _echoing(tracker: FakeTracker, *ops: str) -> None:
    for op in ops:
        tracker.fail[op] = ProviderError(f"HTTP 401: bad credentials (Authorization: Bearer {TOKEN})")


def test_poll_never_prints_a_secret_a_tracker_echoed(run, tracker):
    _create(run)
    _echoing(tracker, "iter_triggered", "iter_triggered_page")
    for args in (("poll", "--once"), ("poll", "--once", "--json")):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert "bad credentials" in r.output and TOKEN not in r.output, r.output
    report = json.loads(r.stdout)
    assert "Bearer [REDACTED]" in json.dumps(report)


def test_an_error_that_quotes_a_secret_is_printed_masked(run, tracker):
    _create(run)
    tracker.add("ENG-1")
    _echoing(tracker, "get_issue")
    r = run("dispatch", "ENG-1")
    assert r.exit_code == 1
    assert "bad credentials" in r.output and TOKEN not in r.output, r.output


def test_a_workflow_sync_error_that_quotes_a_secret_is_printed_masked(app, run, monkeypatch):
    _create(run)

    def refused(self: Any, mapping: Any) -> None:
        raise ProviderError(f"github: HTTP 401 for Bearer {TOKEN}")

    monkeypatch.setattr(type(app.extensions["aiimpl"].runner("github-actions")), "sync_workflows", refused)
    for args, said in ((("ENG",), "Error: github: HTTP 401 for Bearer [REDACTED]\n"),
                       (("--all",), "ENG: github: HTTP 401 for Bearer [REDACTED]\n")):
        r = run("mappings", "sync-workflows", *args)
        assert r.exit_code == 1 and said in r.output and TOKEN not in r.output, r.output
    r = run("mappings", "sync-workflows", "--all", "--json")
    assert json.loads(r.stdout) == {"ENG": {"error": "github: HTTP 401 for Bearer [REDACTED]"}}


# -- --from-json -------------------------------------------------------------------------------------------

def test_from_json_with_a_field_a_mapping_does_not_have_is_refused(run, tmp_path):
    _create(run)
    source = tmp_path / "m.json"
    misspelt = {"executionmode": "fly-machines", "maxInProgressAIIssues": 2, "repo": "web"}
    source.write_text(json.dumps(misspelt))
    r = run("mappings", "update", "ENG", "--from-json", str(source))
    assert r.exit_code == 1, r.output
    assert r.output.startswith(
        f"Error: --from-json: {source} has fields a mapping does not have: executionmode, "
        "maxInProgressAIIssues (a mapping's fields: teamKey, owner, repo,"), r.output
    mapping = _mapping(run)
    assert (mapping["repo"], mapping["maxInProgressAiIssues"]) == ("api", None)  # nothing was saved


def test_from_json_takes_what_mappings_show_printed(run):
    """A mapping shown with --json is copied as it is (its times are the new mapping's own)."""
    _create(run, "ENG", "--cap", "3")
    shown = run("mappings", "show", "ENG", "--json").output
    r = run("mappings", "create", "OPS", "--from-json", "-", input=shown)
    assert r.exit_code == 0, r.output
    copy = _mapping(run, "OPS")
    assert (copy["teamKey"], copy["repo"], copy["maxInProgressAiIssues"]) == ("OPS", "api", 3)


# -- bytes that are no UTF-8 -------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("mappings", "show", "EN\udcffG"),
    ("outbox", "list", "--issue", "\udcff"),
    ("jobs", "list", "--issue", "ENG-\udcff"),
    ("secrets", "delete", "N\udcffAME"),
    # in a request's body (JSON escapes them; the API refused the whole body, exit 1)
    ("mappings", "update", "ENG", "--owner", "\udcff"),
    ("mappings", "update", "ENG", "--env", "A=\udcff"),
    ("mappings", "create", "\udcff", "--owner", "a", "--repo", "b", "--default-branch", "main"),
    ("runner-mode", "set", "\udcff"),
])
def test_an_argument_that_is_no_utf8_is_said_in_one_line(run, args):
    if args[:2] == ("mappings", "update"):
        _create(run)
    r = run(*args)
    assert r.exit_code == 2, r.output
    bad = next(arg for arg in args if "\udcff" in arg)
    assert r.output == f"Error: {bad!r} is not UTF-8 text\n".encode("utf-8", "backslashreplace").decode()


def test_a_closed_standard_input_is_no_secret_value(run, monkeypatch):
    """``aiimpl secrets set NAME <&-`` (Python then has no ``sys.stdin``) ended in a traceback."""
    from types import SimpleNamespace

    from aiimpl_core.cli import manage

    monkeypatch.setattr(manage, "sys", SimpleNamespace(stdin=None))
    r = run("secrets", "set", "NPM_TOKEN")
    assert (r.exit_code, r.output) == (
        1, "Error: standard input is closed: the value is read from it, or asked for on a terminal\n")
    assert json.loads(run("secrets", "list", "--json").output) == []


def test_a_secret_value_that_is_no_utf8_is_refused_unsaid(run):
    r = run("secrets", "set", "NPM_TOKEN", input=b"s3cr3t-\xff-value\n")
    assert r.exit_code == 1
    assert r.output == "Error: the value on standard input is not UTF-8 text\n"
    assert json.loads(run("secrets", "list", "--json").output) == []


# -- interrupts and readers that went away -----------------------------------------------------------------

def test_ctrl_c_during_a_command_exits_130(run, monkeypatch):
    def interrupted(**_kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("aiimpl_core.services.housekeeping.prune", interrupted)
    r = run("prune")
    assert (r.exit_code, r.output) == (130, "Aborted.\n")


def test_a_poll_loop_whose_output_is_cut_ends(run, monkeypatch):
    """`aiimpl poll | head`: once nothing reads the reports, the loop ends (exit 1, as any command
    whose output is cut), instead of logging a failed cycle every interval for good."""
    from aiimpl_core.services.dispatch import CycleReport

    shown: list[int] = []

    def cut(report: Any) -> str:
        shown.append(1)
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(CycleReport, "summary", cut)
    # without the fix the loop would poll on: a SIGTERM stops it after a while, and the test fails
    stop = threading.Timer(20, lambda: os.kill(os.getpid(), signal.SIGTERM))
    stop.start()
    try:
        r = run("poll", "--interval", "0.05")
    finally:
        stop.cancel()
    assert len(shown) == 1 and r.exit_code == 1, (shown, r.output)
    assert "stopped after 1 cycle(s)" in r.stderr and "poll cycle failed" not in r.stderr


def test_poll_once_on_a_database_that_cannot_be_opened_says_so_once(tmp_path):
    """The one cycle of --once does not wait for the database: it fails with what the database said,
    not first with a line that it is waited for."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/missing/aiimpl.db",
                   AIIMPL_SECRET_KEY="cli-scripting-test-key-of-32-characters")
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "poll", "--once"], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: the database could not be reached: unable to open database file\n"
    assert done.stdout == ""


def test_ctrl_c_while_the_command_line_loads_exits_130(monkeypatch, capsys):
    """Ctrl-C in a command's first second, while its modules load: the same ``Aborted.`` and 130."""
    from importlib.metadata import entry_points

    from aiimpl_core import _entry

    class Interrupted:
        def find_spec(self, name: str, *_args: Any) -> None:
            if name == "aiimpl_core.cli":
                raise KeyboardInterrupt

    for name in [m for m in sys.modules if m == "aiimpl_core.cli" or m.startswith("aiimpl_core.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr("aiimpl_core.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    with pytest.raises(SystemExit) as stopped:
        _entry.main()
    assert (stopped.value.code, capsys.readouterr().err) == (130, "Aborted.\n")
    # the script installed is this entry point
    (script,) = entry_points(group="console_scripts", name="aiimpl")
    assert script.value == "aiimpl_core._entry:main"


def test_a_tracker_whose_team_of_raises_does_not_fail_dispatch_with_a_traceback(run, tracker, monkeypatch):
    """``team_of`` (which a tracker overrides for other key shapes) was called unguarded for every
    installed tracker: any ``aiimpl dispatch`` ended in Python's traceback. The key names its team
    before its last dash then, as the gap-fill trigger already took it."""
    _create(run)
    tracker.add("ENG-1")

    def broken(self: Any, key: str) -> str:
        raise ValueError("weird key")

    monkeypatch.setattr(tracker.provider_class, "team_of", broken)
    r = run("dispatch", "ZZ-1")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert r.output.strip().splitlines()[-1].startswith("Error: ZZ-1: No mapping for team ZZ"), r.output
    r = run("dispatch", "ENG-1")
    assert "Traceback" not in r.output and "job " in r.output, r.output
