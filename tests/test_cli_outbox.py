"""``aiimpl outbox list|retry``: the dead tracker writes and their re-queueing, through the admin API."""
from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import cli, commands  # noqa: F401 - commands registers the command groups
from aiimpl_core.orm import utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import queue_outbox_item


@pytest.fixture
def aiimpl_plugins(tracker):
    return [tracker.plugin]


@pytest.fixture
def run(app):
    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))

    return invoke


def add_item(n: int, issue_key: str = "ENG-1", state: str = "dead", **kw: Any) -> int:
    error = {"last_error": "fake-tracker: HTTP 422: " + "comment rejected " * 10} if state == "dead" else {}
    return queue_outbox_item(issue_key, state=state, body=f"Comment {n}.", **error, **kw)


def test_list_shows_dead_items_and_counts(run):
    first = add_item(1)
    second = add_item(2, "ENG-2")
    add_item(3, state="done")
    r = run("outbox", "list")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:4] == ["ITEM", "ISSUE", "WRITE", "STATE"]
    assert lines[1].split()[:5] == [str(second), "ENG-2", "comment", "outcome", "dead"]
    assert lines[2].split()[:2] == [str(first), "ENG-1"]
    assert "…" in lines[1] and len(lines[1]) < 200  # a long error is cut in the table
    assert lines[-1] == "counts: dead 2, pending 0, sending 0, done 1, shadow 0"

    body = json.loads(run("outbox", "list", "--issue", "ENG-1", "--json").output)
    assert [i["id"] for i in body["items"]] == [first]
    assert body["items"][0]["lastError"].count("comment rejected") == 10  # whole in JSON
    body = json.loads(run("outbox", "list", "--state", "done", "--limit", "5", "--json").output)
    assert [i["state"] for i in body["items"]] == ["done"]
    assert run("outbox", "list", "--state", "sending").output.startswith("(none)")


def test_list_refuses_bad_filters_as_a_command_line_refused(run):
    """Exit status 2, as for any option out of its range (the API was asked before, and its
    refusal exited 1, as a failure would)."""
    r = run("outbox", "list", "--state", "lost")
    assert r.exit_code == 2
    assert ("Invalid value for '--state': 'lost' is not one of 'dead', 'pending', 'sending', 'done', "
            "'shadow'" in r.output)
    for limit in ("501", "0"):
        r = run("outbox", "list", "--limit", limit)
        assert r.exit_code == 2
        assert f"Invalid value for '--limit': {limit} is not in the range 1<=x<=500" in r.output
    for issue in ("", " "):  # (a script's unset variable, as jobs list --issue says it)
        r = run("outbox", "list", "--issue", issue)
        assert r.exit_code == 2
        assert "Invalid value for '--issue': must not be empty" in r.output


def test_retry_requeues_a_dead_item_which_then_goes_out(run, tracker):
    item_id = add_item(1)
    r = run("outbox", "retry", str(item_id))
    assert r.exit_code == 0, r.output
    assert f"Outbox item {item_id} re-queued" in r.output
    assert outbox.deliver(now=utcnow())["sent"] == 1
    assert tracker.comments["ENG-1"] == ["Comment 1."]

    r = run("outbox", "retry", str(item_id), "--json")
    assert r.exit_code == 1 and "only a dead item can be retried" in r.output
    for unknown in ("12345", "0", "99999999999999999999"):
        r = run("outbox", "retry", "--", unknown)
        assert (r.exit_code, r.output) == (1, "Error: outbox item not found\n")
    r = run("outbox", "retry", "--", "-3")
    assert (r.exit_code, r.output) == (1, "Error: outbox item not found\n")


@pytest.mark.parametrize("item_id", ["abc", "", "1/2", "1.5", "1_0", " 5", "+5", "\u0663"])
def test_an_item_id_that_is_no_number_is_a_usage_error(run, item_id):
    """As ``jobs show``: the command line's error (exit 2), the API never asked."""
    r = run("outbox", "retry", item_id)
    assert r.exit_code == 2
    assert f"Invalid value for 'ITEM_ID': {item_id!r} is not a valid integer." in r.output


def test_retry_json_prints_the_item(run):
    item_id = add_item(1)
    body = json.loads(run("outbox", "retry", str(item_id), "--json").output)
    assert (body["id"], body["state"], body["attempts"]) == (item_id, "pending", 0)


def test_every_command_has_help_and_json():
    r = CliRunner().invoke(cli, ["outbox", "--help"])
    assert r.exit_code == 0 and "list" in r.output and "retry" in r.output, r.output
    for command in ("list", "retry"):
        r = CliRunner().invoke(cli, ["outbox", command, "--help"])
        assert r.exit_code == 0 and "--json" in r.output, r.output
