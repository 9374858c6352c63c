"""The operators' commands: ``aiimpl poll``, ``aiimpl dispatch``, ``aiimpl jobs``; the in-app scheduler."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import cli
from aiimpl_core.cli import jobs as _jobs_commands  # noqa: F401 - registers the commands
from aiimpl_core.services.scheduler import start_scheduler, stop_scheduler
from aiimpl_core.testing.pytest_plugin import migrate

from .conftest import jobs_of, post_result


def invoke(app: Any, *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app), catch_exceptions=False)


def test_poll_once_json(app, tracker, add_mapping):
    add_mapping("ENG")
    add_mapping("OPS", paused=True)
    tracker.add("ENG-1")
    tracker.add("OPS-1")
    result = invoke(app, "poll", "--once", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["startedAt"].endswith("Z") and report["finishedAt"].endswith("Z")
    assert [d["issueKey"] for d in report["dispatched"]] == ["ENG-1"]
    assert report["blocked"] == {"OPS-1": {"reason": "paused", "message": "Project OPS is paused."}}
    assert report["listed"] == {"fake-tracker": 2}


def test_poll_once_summary(app, tracker, add_mapping):
    add_mapping("ENG", max_in_progress=1)
    tracker.add("ENG-1")
    tracker.add("ENG-2")
    result = invoke(app, "poll", "--once")
    assert result.exit_code == 0
    assert "2 triggered issue(s) read, 1 dispatched, 1 blocked" in result.stdout
    assert "blocked ENG-2: at concurrency cap (1/1). Waiting for a slot." in result.stdout


def test_poll_once_summary_says_a_runner_backend_it_could_not_ask(app, tracker, runner, add_mapping):
    """Not only in --json: a backend whose poll of its runs failed is a line of the summary."""
    from aiimpl_core.errors import ProviderError

    add_mapping("ENG")
    tracker.add("ENG-1")
    invoke(app, "poll", "--once")
    runner.poll_error = ProviderError("GitHub answered 401: Bad credentials", status=401)
    result = invoke(app, "poll", "--once")
    assert result.exit_code == 0
    assert "  skipped github-actions: poll failed: GitHub answered 401: Bad credentials" in result.stdout


def test_poll_stops_cleanly_on_sigterm(app, tracker, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1")

    def listings() -> int:
        return [op for op, _ in tracker.calls].count("iter_triggered")

    def stop_after_two_listings() -> None:
        # the signal comes once the loop has read the tracker twice (not after a fixed time, which
        # a slow first cycle on a loaded machine can outlast)
        deadline = time.monotonic() + 15
        while listings() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=stop_after_two_listings, daemon=True)
    started = time.monotonic()
    sender.start()
    result = invoke(app, "poll", "--interval", "0.2")
    sender.join(5)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 20, result.stderr
    assert "stopping after the current step of the cycle" in result.stderr
    assert "stopped after" in result.stderr
    assert listings() >= 2, result.stderr
    assert len(jobs_of("ENG-1")) == 1
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is restored


def test_dispatch_prints_the_blocker_and_force_passes_it(app, tracker, runner, add_mapping):
    add_mapping("ENG", max_in_progress=1)
    tracker.add("ENG-1")
    tracker.add("ENG-2")
    invoke(app, "poll", "--once")
    result = invoke(app, "dispatch", "ENG-2")
    assert result.exit_code == 1
    assert "Not dispatched (concurrency): at concurrency cap (1/1). Waiting for a slot." in result.stderr
    result = invoke(app, "dispatch", "ENG-2", "--force", "--phase", "planning")
    assert result.exit_code == 0, result.output
    [job] = jobs_of("ENG-2")
    assert job.forced and job.phase == "planning" and job.status == "dispatched"
    assert f"Dispatched ENG-2: job {job.id}, planning on github-actions: dispatched" in result.stdout
    # the one-job-in-flight rule holds even with --force
    result = invoke(app, "dispatch", "ENG-2", "--force")
    assert result.exit_code == 1 and "dedup" in result.stderr
    assert len(jobs_of("ENG-2")) == 1


def test_dispatch_of_an_issue_its_tracker_does_not_have_says_so(app, tracker, runner, add_mapping):
    """Linear's own words (`IssueWithComments: Could not find referenced Issue.`) were all it said."""
    add_mapping("ENG")
    result = invoke(app, "dispatch", "ENG-404")
    assert result.exit_code == 1 and jobs_of("ENG-404") == []
    assert result.stderr == "Error: ENG-404: its tracker has no such issue (issue ENG-404 not found)\n"


def test_a_dispatch_that_failed_is_said_as_a_failure(app, tracker, runner, add_mapping):
    """It was headed "Dispatched ENG-1: …: failed (…)" on standard output, as a success is."""
    from aiimpl_core.errors import DispatchError

    add_mapping("ENG")
    tracker.add("ENG-1")
    runner.next_dispatch_errors.append(DispatchError("the spool directory is not writable"))
    result = invoke(app, "dispatch", "ENG-1")
    assert result.exit_code == 1 and result.stdout == ""
    [job] = jobs_of("ENG-1")
    assert result.stderr == (f"Dispatch of ENG-1 failed: job {job.id}, implementation on github-actions: "
                             f"{job.status} (the spool directory is not writable)\n")


def test_dispatch_of_an_issue_whose_job_is_in_flight_names_the_job(app, tracker, runner, add_mapping):
    """Its trigger was taken off as its job started: "does not carry the trigger (use --force)" sent
    the operator to --force, which then refused it as a duplicate."""
    add_mapping("ENG")
    tracker.add("ENG-4")
    assert invoke(app, "dispatch", "ENG-4").exit_code == 0
    [job] = jobs_of("ENG-4")
    tracker.issues["ENG-4"].labels.discard("AI-Implement")  # taken off as the job started
    result = invoke(app, "dispatch", "ENG-4")
    assert result.exit_code == 1
    assert result.stderr == (f"Not dispatched: its job {job.id} is in flight ({job.status}); the issue "
                             "does not carry the trigger\n")


def test_dispatch_unknown_team_and_untriggered_issue(app, tracker, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-3", labels=set())
    result = invoke(app, "dispatch", "OPS-1")
    # (it said "OPS-1: its tracker has no such issue (No mapping …)": the tracker was not asked)
    assert result.exit_code == 1
    assert result.stderr == "Error: OPS-1: No mapping for team OPS. Add one in Projects.\n"
    result = invoke(app, "dispatch", "ENG-3")
    assert result.exit_code == 1 and "does not carry the trigger" in result.stderr
    result = invoke(app, "dispatch", "ENG-404")
    assert result.exit_code == 1 and "ENG-404" in result.output and "Traceback" not in result.output


def test_dispatch_of_a_team_whose_tracker_is_not_installed_names_it(app, tracker, add_mapping):
    add_mapping("OPS", provider="linear")  # a mapping made while the Linear plugin was installed
    result = invoke(app, "dispatch", "OPS-1")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: the mapping of team OPS uses the tracker 'linear', which is not installed or is "
        "disabled (`aiimpl plugins list` shows the plugins)")


def test_dispatch_of_a_team_whose_mapping_names_no_tracker_says_so(app, tracker, add_mapping):
    """A mapping saved before any tracker plugin was installed: the dispatch said there was no
    mapping for the team, while `aiimpl mappings list` showed it."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    add_mapping("OPS")
    db.session.execute(db.update(Mapping).values(ticketing={}))
    db.session.commit()
    result = invoke(app, "dispatch", "OPS-1")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: the mapping of team OPS names no tracker: set one with `aiimpl mappings update OPS "
        """--ticketing '{"provider": "<id>"}'`""")


def test_jobs_list_and_show(app, client, tracker, runner, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1")
    tracker.add("ENG-2")
    invoke(app, "poll", "--once")
    [job] = jobs_of("ENG-1")
    env = runner.runs[job.id].request.env
    client.post(
        "/runner/progress",
        json={
            "step": {
                "id": "clone",
                "type": "clone",
                "status": "succeeded",
                "started_at": "2026-01-01T00:00:00Z",
            }
        },
        headers={"Authorization": f"Bearer {env['AIIMPL_PROGRESS_TOKEN']}"},
    )
    post_result(client, runner, job.id, outcome="success", prUrl="https://github.com/acme/eng/pull/3")

    result = invoke(app, "jobs", "list", "--json")
    rows = json.loads(result.stdout)
    assert {r["issueKey"]: r["status"] for r in rows} == {"ENG-1": "completed", "ENG-2": "dispatched"}
    result = invoke(app, "jobs", "list", "--status", "active", "--json")
    assert [r["issueKey"] for r in json.loads(result.stdout)] == ["ENG-2"]
    result = invoke(app, "jobs", "list")
    assert "ENG-1" in result.stdout and "completed" in result.stdout

    result = invoke(app, "jobs", "show", str(job.id), "--json")
    data = json.loads(result.stdout)
    assert [t["to"] for t in data["transitions"]] == ["unknown", "dispatched", "running", "completed"]
    assert [s["id"] for s in data["steps"]] == ["clone"]
    assert data["prUrl"] == "https://github.com/acme/eng/pull/3"
    # times as the API answers them (and the other commands print them): UTC, ending in Z
    stamps = [data["createdAt"], *(t["at"] for t in data["transitions"]), *(r["createdAt"] for r in rows)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", s) for s in stamps), stamps
    text = json.dumps(data)
    assert env["AIIMPL_NONCE"] not in text and env["AIIMPL_RESULT_TOKEN"] not in text
    result = invoke(app, "jobs", "show", str(job.id))
    assert "dispatched -> running" in result.stdout and "clone" in result.stdout
    result = invoke(app, "jobs", "show", "999")
    assert result.exit_code == 1 and "job 999: job not found" in result.output


def test_jobs_show_prints_a_runners_text_on_one_line_with_no_terminal_control_in_it(
    app, client, tracker, runner, add_mapping
):
    """A failure reason with escape sequences cleared the screen, set the window title or
    overwrote lines of the operator who ran `aiimpl jobs show`, piped or not."""
    add_mapping("ENG")
    tracker.add("ENG-1")
    invoke(app, "poll", "--once")
    [job] = jobs_of("ENG-1")
    sent = "boom\x1b]0;PWNED\x07\x1b[2J\rOVER\nsecond line"
    post_result(client, runner, job.id, outcome="failure", error=sent)
    result = invoke(app, "jobs", "show", str(job.id))
    assert result.exit_code == 0, result.output
    assert not any(ord(c) < 32 and c != "\n" for c in result.stdout)
    [error] = [line for line in result.stdout.splitlines() if line.startswith("  Error:")]
    assert error.endswith("boom\\x1b]0;PWNED\\x07\\x1b[2J\\rOVER\\nsecond line")
    # (its transition's reason too): no line of the runner's own
    assert not any(line.startswith("second line") for line in result.stdout.splitlines())


def test_in_app_scheduler_runs_cycles_until_stopped(app, tracker, add_mapping):
    add_mapping("ENG")
    tracker.add("ENG-1")
    start_scheduler(app, interval=0.2)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and tracker.stage_labels("ENG-1") != {"AI-Working"}:
            time.sleep(0.1)
    finally:
        stop_scheduler(app)
    assert tracker.stage_labels("ENG-1") == {"AI-Working"}
    assert len(jobs_of("ENG-1")) == 1
    assert "aiimpl_scheduler" not in app.extensions


@pytest.mark.parametrize("args", [["--interval", "0.2"], ["--once"]], ids=["loop", "once"])
def test_poll_does_not_start_on_a_schema_older_than_the_code(app, tracker, add_mapping, args):
    """Nor does one cycle (from cron, say): it would write with this version's statements."""
    from aiimpl_core.database import schema_heads
    from aiimpl_core.testing.sql import schema_at

    add_mapping("ENG")
    tracker.add("ENG-1")
    (head,) = schema_heads()[0]
    with app.app_context(), schema_at("0002"):
        result = CliRunner().invoke(cli, ["poll", *args], obj=ScriptInfo(create_app=lambda: app))
    assert jobs_of("ENG-1") == []
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: the database schema (revision 0002) is older than this version's ({head}): "
        "run `aiimpl db upgrade`")


def test_poll_and_dispatch_refuse_a_key_made_up_for_their_process(app, tracker, add_mapping):
    """Without AIIMPL_SECRET_KEY the process makes up its own key: the tokens and nonces it would
    hand to sessions could not be checked by the server, so nothing is dispatched at all."""
    from aiimpl_core.services.secrets import KEY_MADE_UP

    add_mapping("ENG")
    tracker.add("ENG-1")
    app.config[KEY_MADE_UP] = True
    for args in (("poll", "--once"), ("poll", "--interval", "1"), ("dispatch", "ENG-1")):
        result = invoke(app, *args)
        assert result.exit_code == 1, args
        assert ("Error: AIIMPL_SECRET_KEY is not set: the server could not check the run tokens this "
                "process signs; set the key the server has") in result.output
    assert jobs_of("ENG-1") == []


def test_jobs_list_columns_hold_their_longest_value_and_an_empty_filter_is_refused(app):
    """``timed_out/machine_timeout`` ran into the BACKEND column; ``--issue ''`` (a script's unset
    variable) listed every job."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job

    db.session.add_all([
        Job(issue_key="ENG-1", team_key="ENG", phase="implementation", status="timed_out",
            timeout_reason="machine_timeout", backend="fly-machines", owner="acme", repo="eng"),
        Job(issue_key="ENGINEERING-12345", team_key="ENGINEERING", phase="planning", status="running",
            backend="github-actions", owner="acme", repo="eng"),
    ])
    db.session.commit()
    lines = invoke(app, "jobs", "list").stdout.splitlines()
    assert len(lines) == 3
    at = lines[0].index("BACKEND")
    assert sorted(line[at:].split()[0] for line in lines[1:]) == ["fly-machines", "github-actions"]
    assert lines[0].index("STATUS") == lines[2].index("timed_out/machine_timeout")
    for option in ("--issue", "--team"):
        result = invoke(app, "jobs", "list", option, " ")
        assert result.exit_code == 2 and "must not be empty" in result.output
    result = invoke(app, "dispatch", "")  # said "No mapping for team . Add one in Projects."
    assert result.exit_code == 2 and "Invalid value for 'ISSUE_KEY': must not be empty" in result.output


def test_the_poll_loops_json_is_one_line_a_cycle_and_its_own_lines_are_json_too(tmp_path):
    """One indented object after another is no document a JSON reader takes; and under
    AIIMPL_LOG_FORMAT=json the loop's lines about itself were text among the JSON log lines."""
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/a.db", AIIMPL_SECRET_KEY="k" * 40,
                   AIIMPL_LOG_FORMAT="json")
    migrate(environ["AIIMPL_DATABASE_URL"])
    proc = subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "poll", "--json", "--interval", "0.2"],
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        reports = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert all(report["finishedAt"] for report in reports)
    said = [json.loads(line)["message"] for line in err.splitlines()]
    assert said[0].startswith("polling every 0.2s") and said[-1].startswith("stopped after")
