"""Drill: Linear's deliveries of newly labelled issues sent many at once to gunicorn's worker
processes while poller processes run their cycles, all on one PostgreSQL database.

As on a deployment of several workers and hosts: a person adds ``AI-Implement`` to an issue, and
Linear's delivery (with its retries) reaches several workers at about the moment two pollers, on
"other hosts", list the team. gunicorn runs the production configuration with the real Linear
and GitHub Actions plugins, pointed at this test's fake Linear and fake GitHub; the pollers are
``poll_worker.py`` processes. The answers say which check dispatched each issue: exactly one did,
across every process.

- Each issue of team ENG (no cap) gets one job, one workflow run on GitHub and one stage change.
- Team OPS has a cap of two in flight, and three issues labelled at once: two of them are
  dispatched, whichever process checks them, and the others (and all labelled later) wait with
  the cap's blocker (the webhook's answer names it).
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

import pytest
import requests
from aiimpl_linear.testing import FakeLinear

from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker, Job
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.orchestrator import each_released_together
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

from .conftest import github_config, map_teams
from .helpers import connected, gunicorn_serving, poller_cycles, pollers_running, wait_for_whole_cycles

pytest.importorskip("gunicorn")

WORKERS = 3
POLLERS = 2
ROUNDS = 4
COPIES = 6  # deliveries per issue and round: Linear's delivery and its retries
OPS_CAP = 2
#: why a check skips an issue another process dispatched: it saw the claim (before, or after, the
#: stage change was sent), or it read the issue after the stage change had taken the trigger off
SEEN_DISPATCHED = {"trigger already dispatched", "listing older than our last stage change", "not triggered"}
WAITING = f"at concurrency cap ({OPS_CAP}/{OPS_CAP}). Waiting for a slot."

APP_MODULE = '''
import os

import aiimpl_gha.plugin
import aiimpl_linear.plugin

from aiimpl_core import create_app

app = create_app(plugins=[aiimpl_linear.plugin, aiimpl_gha.plugin], load_entrypoints=False)


@app.after_request
def _worker(resp):
    resp.headers["X-Race-Worker"] = str(os.getpid())
    return resp
'''


@pytest.fixture
def aiimpl_plugins(linear_gha_plugins: list[object]) -> list[object]:
    """The real Linear and GitHub Actions plugins."""
    return linear_gha_plugins


@pytest.fixture
def aiimpl_config(linear_gha_config: dict[str, Any]) -> dict[str, Any]:
    """Linear and GitHub Actions pointed at the fakes."""
    return linear_gha_config


@pytest.fixture
def mapped(app: Any, gh: FakeGitHub) -> None:
    map_teams(app, gh, {"OPS": OPS_CAP})


@pytest.fixture
def served(app: Any, linear: FakeLinear, gh: FakeGitHub, mapped: None, tmp_path: Path) -> Iterator[str]:
    environ = {
        **linear.config(), **github_config(gh),
        "AIIMPL_DATABASE_URL": app.config["AIIMPL_DATABASE_URL"], "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
        "AIIMPL_WORKERS": str(WORKERS), "AIIMPL_THREADS": "4",
        # the drill counts the answers: each says what its check did, however loaded the machine
        "AIIMPL_WEBHOOK_ANSWER_SECONDS": "60",
    }
    with gunicorn_serving(tmp_path, APP_MODULE, environ) as base:
        yield base


@pytest.fixture
def pollers(app: Any, mapped: None, tmp_path: Path) -> Iterator[list[Path]]:
    """Poller processes running cycles back to back; yields the files their lines go to."""
    with pollers_running(app, tmp_path, POLLERS) as outputs:
        yield outputs


def _delivery(base: str, linear: FakeLinear, key: str) -> Callable[[requests.Session], requests.Response]:
    """Linear's signed delivery of the issue as it is now (its label change), as ``send(session)``."""
    body = json.dumps(linear.issue_webhook_payload(key)).encode()
    headers = {"Content-Type": "application/json", "Linear-Event": "Issue",
               "Linear-Signature": linear.sign(body)}
    return lambda session: session.post(base + "/api/linear/webhook", data=body, headers=headers, timeout=60)


def test_deliveries_on_several_workers_and_pollers_dispatch_each_issue_once(
    app, linear, gh, served, pollers
) -> None:
    base = served
    rng = random.Random(int(os.environ.get("AIIMPL_DRILL_SEED", "0")) or None)
    answers: dict[str, list[requests.Response]] = {}
    for n in range(ROUNDS):
        # labelled AI-Implement: one issue of ENG, and more of OPS than its cap has slots
        keys = [linear.add_issue("ENG", f"Export {n}")["identifier"],
                *(linear.add_issue("OPS", f"Rotate {n}.{m}")["identifier"] for m in range(OPS_CAP + 1))]
        deliveries = [_delivery(base, linear, key) for key in keys]  # of this change
        # they arrive at once, a little after the change: a poller may list the issues first
        time.sleep(rng.uniform(0, 0.3))
        sent = each_released_together(lambda: connected(base), deliveries * COPIES)
        for m, key in enumerate(keys):
            answers[key] = sent[m::len(keys)]
    wait_for_whole_cycles(pollers)
    # every delivery answered 200, by several workers
    for key, sent in answers.items():
        assert {(a.status_code, a.json().get("issue")) for a in sent} == {(200, key)}, [a.text for a in sent]
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
        for body in (a.json() for a in sent if not a.json()["dispatched"]):
            if key in waiting:
                assert set(body) == {"ok", "issue", "dispatched", "blocker", "reason"}, body
                assert (body["blocker"], body["reason"]) == ("concurrency", WAITING), body
            else:
                assert set(body) == {"ok", "issue", "dispatched", "reason"}, body
                assert body["reason"] in SEEN_DISPATCHED, body
        for body in (a.json() for a in sent if a.json()["dispatched"]):
            job = next(job for job in jobs if job.issue_key == key)
            assert (body["jobId"], body["status"]) == (job.id, "dispatched"), body

    # GitHub: one workflow run per job, and none for a job that does not exist
    runs = [run for team in ("eng", "ops") for run in gh.runs_of("acme", team)]
    assert Counter(str(run.inputs.get("job_id")) for run in runs) == Counter(str(job.id) for job in jobs)
    # Linear: each dispatched issue moved to AI-Working once, the waiting ones kept the trigger, and
    # no comment was posted twice
    for key in answers:
        expected = ["AI-Working"] if per_issue[key] else ["AI-Implement"]
        assert linear.labels_of(key) == expected, (key, linear.labels_of(key))
        comments = linear.comments_of(key)
        assert len(comments) == len(set(comments)), (key, comments)
    assert linear.operations().count("UpdateIssueLabels") == len(jobs)
