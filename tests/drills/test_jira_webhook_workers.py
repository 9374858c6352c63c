"""Drill: Jira's deliveries of issues moved to ``Ready`` sent many at once to gunicorn's worker
processes while poller processes run their cycles, all on one PostgreSQL database.

The Jira twin of ``test_webhook_workers.py``: a person moves issues to ``Ready``, and Jira's
``jira:issue_updated`` delivery (with its retries) reaches several workers at about the moment two
pollers, on "other hosts", search the projects. gunicorn runs the production configuration with the
real Jira and GitHub Actions plugins, pointed at this test's fake Jira and fake GitHub; the pollers
are ``poll_worker.py`` processes loading the Jira plugin. The answers say which check dispatched
each issue: exactly one did, across every process.

- Each issue of project ENG (no cap) gets one job, one workflow run on GitHub and one transition
  (``Ready`` → ``Implementing``).
- Project OPS has a cap of two in flight, and three issues moved at once: two of them are
  dispatched, whichever process checks them, and the others (and all moved later) stay in
  ``Ready`` with the cap's blocker (the webhook's report names it).
- No comment is posted twice, and every delivery is answered 200.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiimpl_gha.plugin
import aiimpl_jira.plugin
import pytest
import requests
from aiimpl_jira.adf import adf_text
from aiimpl_jira.api import WEBHOOK_SECRET_HEADER
from aiimpl_jira.config import TRIGGER_STATUS
from aiimpl_jira.testing.fake_jira import FakeJira

from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker, Job
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.orchestrator import each_released_together
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

from .conftest import TEAMS, github_config, map_teams
from .helpers import connected, gunicorn_serving, poller_cycles, pollers_running, wait_for_whole_cycles

pytest.importorskip("gunicorn")

WORKERS = 3
POLLERS = 2
ROUNDS = 4
COPIES = 6  # deliveries per issue and round: Jira's delivery and its retries
OPS_CAP = 2
SECRET = "jira-drill-webhook-secret"
#: where a dispatched issue goes: no planning is configured, so straight to implementation
WORKING = "Implementing"
#: why a check skips an issue another process dispatched: it saw the claim (before, or after, the
#: transition was sent), or it read the issue after the transition had taken it out of Ready
SEEN_DISPATCHED = {"trigger already dispatched", "listing older than our last stage change", "not triggered"}
WAITING = f"at concurrency cap ({OPS_CAP}/{OPS_CAP}). Waiting for a slot."

APP_MODULE = '''
import os

import aiimpl_gha.plugin
import aiimpl_jira.plugin

from aiimpl_core import create_app

app = create_app(plugins=[aiimpl_jira.plugin, aiimpl_gha.plugin], load_entrypoints=False)


@app.after_request
def _worker(resp):
    resp.headers["X-Race-Worker"] = str(os.getpid())
    return resp
'''


@pytest.fixture
def jira() -> Iterator[FakeJira]:
    """A fake Jira with projects ENG and OPS; fails the drill if any exchange broke Jira's description."""
    with FakeJira() as fake:
        for project in TEAMS:
            fake.add_project(project)
        yield fake
        fake.assert_clean()


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    return [aiimpl_jira.plugin, aiimpl_gha.plugin]


@pytest.fixture
def aiimpl_config(jira: FakeJira, gh: FakeGitHub) -> dict[str, Any]:
    return {**jira.config(AIIMPL_JIRA_WEBHOOK_SECRET=SECRET), **github_config(gh)}


@pytest.fixture
def mapped(app: Any, gh: FakeGitHub) -> None:
    map_teams(app, gh, {"OPS": OPS_CAP}, tracker="jira")


@pytest.fixture
def served(app: Any, jira: FakeJira, gh: FakeGitHub, mapped: None, tmp_path: Path) -> Iterator[str]:
    environ = {
        **jira.config(AIIMPL_JIRA_WEBHOOK_SECRET=SECRET), **github_config(gh),
        "AIIMPL_DATABASE_URL": app.config["AIIMPL_DATABASE_URL"], "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
        "AIIMPL_WORKERS": str(WORKERS), "AIIMPL_THREADS": "4",
        # the drill counts the answers: each says what its check did, however loaded the machine
        "AIIMPL_WEBHOOK_ANSWER_SECONDS": "60",
    }
    with gunicorn_serving(tmp_path, APP_MODULE, environ) as base:
        yield base


@pytest.fixture
def pollers(app: Any, mapped: None, tmp_path: Path) -> Iterator[list[Path]]:
    """Poller processes with the Jira plugin running cycles back to back; yields the files their
    lines go to."""
    with pollers_running(app, tmp_path, POLLERS, tracker="aiimpl_jira") as outputs:
        yield outputs


def _delivery(base: str, jira: FakeJira, key: str) -> Callable[[requests.Session], requests.Response]:
    """Jira's delivery of the issue's move to Ready (``jira:issue_updated`` with the status in its
    fields, as Jira sends it), authenticated with the shared secret, as ``send(session)``."""
    issue = jira.issues[key]
    event = {
        "timestamp": int(time.time() * 1000),
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "issue": {"id": issue.id, "key": key, "fields": {
            "summary": issue.summary, "project": {"key": issue.project},
            "status": {"name": issue.status, "statusCategory": {"key": jira.statuses[issue.status]}},
        }},
        "changelog": {"items": [{"field": "status", "fromString": "To Do", "toString": issue.status}]},
    }
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", WEBHOOK_SECRET_HEADER: SECRET}
    return lambda session: session.post(base + "/api/jira/webhook", data=body, headers=headers, timeout=60)


def _statuses_moved(jira: FakeJira, key: str) -> list[str]:
    """The statuses the plugin moved the issue to, in order, from the transitions it posted (the
    fake's transition to a status has the id ``11 + `` the status's place in its sorted names)."""
    names = {str(11 + n): status for n, status in enumerate(sorted(jira.statuses))}
    return [names[r.json["transition"]["id"]] for r in jira.requests_to("POST", f"/issue/{key}/transitions")]


@pytest.mark.long
def test_deliveries_on_several_workers_and_pollers_dispatch_each_issue_once(
    app, jira, gh, served, pollers
) -> None:
    base = served
    rng = random.Random(int(os.environ.get("AIIMPL_DRILL_SEED", "0")) or None)
    numbers: Counter[str] = Counter()

    def new_issue(project: str, summary: str) -> str:
        numbers[project] += 1
        key = f"{project}-{numbers[project]}"
        jira.add_issue(key, summary=summary, status="To Do")
        return key

    answers: dict[str, list[requests.Response]] = {}
    for n in range(ROUNDS):
        # one issue of ENG, and more of OPS than its cap has slots
        keys = [new_issue("ENG", f"Export {n}"),
                *(new_issue("OPS", f"Rotate {n}.{m}") for m in range(OPS_CAP + 1))]
        # a person moves them to Ready: from here a poller's search lists them
        for key in keys:
            jira.set_status(key, TRIGGER_STATUS)
        deliveries = [_delivery(base, jira, key) for key in keys]  # of this change
        # they arrive at once, a little after the change: a poller may list the issues first
        time.sleep(rng.uniform(0, 0.3))
        sent = each_released_together(lambda: connected(base), deliveries * COPIES)
        for m, key in enumerate(keys):
            answers[key] = sent[m::len(keys)]
    wait_for_whole_cycles(pollers)
    # every delivery answered 200 with a check of its issue that ran to its end, by several workers
    for key, sent in answers.items():
        assert {a.status_code for a in sent} == {200}, [a.text for a in sent]
        for body in (a.json() for a in sent):
            assert (body.get("accepted"), body.get("issueKey")) == (True, key), body
            assert (body["result"]["errors"], body["result"]["providersSkipped"]) == ([], {}), body
    workers = {a.headers["X-Race-Worker"] for sent in answers.values() for a in sent}
    assert len(workers) > 1, "every delivery went to one worker: nothing raced between processes"

    db.session.expire_all()
    jobs = list(db.session.scalars(db.select(Job)))
    per_issue = Counter(job.issue_key for job in jobs)
    eng_keys = [key for key in answers if key.startswith("ENG-")]
    ops_keys = [key for key in answers if key.startswith("OPS-")]
    # every ENG issue once; OPS up to its cap, the others waiting for a slot
    assert {key: per_issue[key] for key in eng_keys} == dict.fromkeys(eng_keys, 1), per_issue
    dispatched_ops = [key for key in ops_keys if per_issue[key]]
    assert len(dispatched_ops) == OPS_CAP and {per_issue[key] for key in dispatched_ops} == {1}, per_issue
    waiting = {row.issue_key: (row.reason, row.message) for row in db.session.scalars(db.select(Blocker))}
    assert waiting == {key: ("concurrency", WAITING) for key in ops_keys if key not in dispatched_ops}

    # who dispatched: exactly one check of one process per dispatched issue, and none for the rest
    by_webhook = Counter(key for key, sent in answers.items() for a in sent if a.json()["dispatched"])
    by_pollers = Counter(key for cycle in poller_cycles(pollers) for key in cycle)
    assert by_webhook + by_pollers == Counter(per_issue), (by_webhook, by_pollers, per_issue)
    # what each other check saw: the cap, for a waiting issue; else the issue dispatched (never
    # "dedup": that would be a check that saw another's job before its claim consumed the trigger)
    for key, sent in answers.items():
        for result in (a.json()["result"] for a in sent if not a.json()["dispatched"]):
            assert result["dispatched"] == [], result
            if key in waiting:
                assert result["blocked"] == {key: {"reason": "concurrency", "message": WAITING}}, result
                assert result["skipped"] == {}, result
            else:
                assert result["blocked"] == {} and list(result["skipped"]) == [key], result
                assert result["skipped"][key] in SEEN_DISPATCHED, result
        for result in (a.json()["result"] for a in sent if a.json()["dispatched"]):
            job = next(job for job in jobs if job.issue_key == key)
            got = [(d["issueKey"], d["jobId"], d["status"]) for d in result["dispatched"]]
            assert got == [(key, job.id, "dispatched")], result

    # GitHub: one workflow run per job, and none for a job that does not exist
    runs = [run for project in TEAMS for run in gh.runs_of("acme", project.lower())]
    assert Counter(str(run.inputs.get("job_id")) for run in runs) == Counter(str(job.id) for job in jobs)
    # Jira: each dispatched issue moved to Implementing by one transition, the waiting ones stayed in
    # Ready (no transition), and no comment was posted twice
    for key in answers:
        expected = [WORKING] if per_issue[key] else []
        assert _statuses_moved(jira, key) == expected, (key, _statuses_moved(jira, key))
        assert jira.issues[key].status == (WORKING if per_issue[key] else TRIGGER_STATUS), key
        comments = [adf_text(doc) for doc in jira.comment_docs(key)]
        assert len(comments) == len(set(comments)), (key, comments)
    assert len(jira.requests_to("POST", "/transitions")) == len(jobs)
