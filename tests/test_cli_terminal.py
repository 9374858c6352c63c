"""A remote service's text on the operator's terminal: what a tracker, a runner backend or GitHub
said is printed one line each, its control characters shown escaped (``\\x1b``), as ``jobs show``
and the log lines show them, never acted on by the terminal."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import cli, commands  # noqa: F401 - commands registers the command groups
from aiimpl_core.errors import ProviderError
from aiimpl_core.testing.fakes import FakeRunner, add_mapping, queue_outbox_item

#: what a remote error's body could carry: a new window title, a cleared screen, a line overwritten
ESCAPES = "\x1b]0;owned\x07\x1b[2J\rfine"


def no_control(text: str) -> bool:
    """Whether ``text`` holds no control character a terminal acts on (its line breaks aside)."""
    return not any(c < " " and c != "\n" or "\x7f" <= c <= "\x9f" for c in text)


@pytest.fixture
def gha() -> FakeRunner:
    return FakeRunner("github-actions", "gha", workflow_sync=True, sessions=True)


@pytest.fixture
def aiimpl_plugins(tracker, gha):
    return [tracker.plugin, gha.plugin]


@pytest.fixture
def run(app):
    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))

    return invoke


@pytest.fixture
def mapped(app):
    add_mapping("ENG")


def test_outbox_list_escapes_a_trackers_error(run):
    """The table printed the tracker's error as it came (its spaces folded, its escapes kept)."""
    queue_outbox_item("ENG-1", state="dead", last_error=f"fake-tracker: HTTP 422: {ESCAPES}")
    r = run("outbox", "list")
    assert r.exit_code == 0, r.output
    assert no_control(r.output), repr(r.output)
    assert "\\x1b]0;owned\\x07" in r.output


def test_poll_report_escapes_a_trackers_error(run, tracker, mapped):
    """The text report of a cycle printed a tracker's error as it came."""
    for op in ("iter_triggered", "iter_triggered_page"):
        tracker.fail[op] = ProviderError(f"HTTP 500: {ESCAPES} upstream said no")
    r = run("poll", "--once")
    assert r.exit_code == 0, r.output
    assert "upstream said no" in r.output
    assert no_control(r.output), repr(r.output)


def test_sync_workflows_escapes_a_backends_warning(run, gha, mapped):
    """A sync's warnings (a backend's text, GitHub's answer in it) reached standard error as they came."""
    gha.sync_warnings = (f"the repository said {ESCAPES}",)
    r = run("mappings", "sync-workflows", "ENG")
    assert r.exit_code == 0, r.output
    assert "the repository said" in r.stderr
    assert no_control(r.stdout) and no_control(r.stderr), repr(r.output)


def test_sessions_list_escapes_a_backends_text(run, gha, monkeypatch):
    """The table printed a backend's session state as it came."""
    from aiimpl_core.types import SessionInfo

    monkeypatch.setattr(gha.backend_class, "list_sessions", lambda self: [
        SessionInfo(id="m-1", backend="github-actions", state=f"started{ESCAPES}", issue_key="ENG-1")])
    r = run("sessions", "list")
    assert r.exit_code == 0, r.output
    assert "m-1" in r.output and no_control(r.output), repr(r.output)


def test_dispatch_escapes_a_trackers_and_a_backends_error(run, tracker, gha, mapped):
    """A tracker's error (the command's own error line) and a backend's refusal of the run were
    printed as they came."""
    tracker.add("ENG-1")
    tracker.fail["get_issue"] = ProviderError(f"HTTP 500: {ESCAPES}")
    r = run("dispatch", "ENG-1")
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and no_control(r.output), repr(r.output)

    del tracker.fail["get_issue"]
    tracker.trigger("ENG-1")
    gha.dispatch_error = ProviderError(f"HTTP 422: {ESCAPES}")
    r = run("dispatch", "ENG-1")
    assert r.exit_code == 1
    assert "Dispatch of ENG-1 failed" in r.output and no_control(r.output), repr(r.output)


def test_check_escapes_a_remote_answer(run, monkeypatch):
    """A check's detail (a tracker's or a backend's answer) was printed as it came."""
    from aiimpl_core.services import checks

    monkeypatch.setattr(checks, "run_checks", lambda: [
        checks.CheckRow("ticketing", "fake-tracker", "credentials", "failed", f"HTTP 401: {ESCAPES}")])
    r = run("check")
    assert r.exit_code == 1
    assert "HTTP 401" in r.output and no_control(r.output), repr(r.output)
