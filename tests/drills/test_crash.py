"""Drill: the orchestrator killed with SIGKILL at random points of its cycles, then restarted.

A separate process runs poll cycles back to back (the real Linear and GitHub Actions plugins, the
fake Linear and fake GitHub of this test, PostgreSQL). It is killed at a random moment, restarted,
killed again, several times; then one more cycle runs with the clock moved past every lease and
window. Afterwards every triggered issue has exactly one job, no job reached GitHub twice, no job
is left in ``unknown`` (the reconciler ended what a crash left), and no comment was posted twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, utcnow
from aiimpl_core.services.dispatch import run_cycle

from .conftest import TEAMS, map_teams
from .helpers import start_poller


@pytest.fixture
def aiimpl_plugins(linear_gha_plugins: list[object]) -> list[object]:
    """The real Linear and GitHub Actions plugins."""
    return linear_gha_plugins

ISSUES_PER_TEAM = 10
KILLS = 4


@pytest.fixture
def aiimpl_config(linear_gha_config: dict[str, Any]) -> dict[str, Any]:
    # small pages: a cycle is many remote calls long, so kills land inside cycles
    return {**linear_gha_config, "AIIMPL_LINEAR_PAGE_SIZE": "3"}


@pytest.mark.long
def test_drill_sigkill_mid_cycle_dispatches_each_issue_once_and_leaves_no_job_stuck(app, linear, gh):
    map_teams(app, gh)
    keys = [linear.add_issue(team, f"Issue {n} of {team}")["identifier"]
            for n in range(ISSUES_PER_TEAM) for team in TEAMS]

    rng = random.Random(int(os.environ.get("AIIMPL_DRILL_SEED", "0")) or None)
    outputs = []
    for _ in range(KILLS):
        proc = start_poller(app)
        try:
            # a random point: before, inside or between cycles (a cycle here is ~1-3 s)
            try:
                proc.wait(timeout=rng.uniform(0.05, 2.5))
            except subprocess.TimeoutExpired:
                pass
            assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else ""
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            out, _err = proc.communicate(timeout=30)
            outputs.append(out)
    # a last process runs to the end of at least one whole cycle
    proc = start_poller(app)
    try:
        assert proc.stdout is not None
        for _ in range(2):
            line = proc.stdout.readline()
            assert line.startswith("cycle"), proc.stderr.read()[-3000:] if proc.stderr else line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)

    # the restart after everything: leases and the claim windows of killed processes expired,
    # the run-not-found window passed for a job a crash left before its launch
    later = utcnow() + timedelta(minutes=15)
    report = run_cycle(now=later)
    assert not report.errors, report.as_dict()
    run_cycle(now=later + timedelta(minutes=1))

    db.session.expire_all()
    jobs = list(db.session.scalars(db.select(Job)).all())
    per_issue = Counter(j.issue_key for j in jobs)
    assert set(per_issue) == set(keys), sorted(set(keys) - set(per_issue))
    assert max(per_issue.values()) == 1, {k: n for k, n in per_issue.items() if n > 1}
    # nothing stuck: each job either reached GitHub (its run linked) or was ended by the reconciler
    assert not [j.id for j in jobs if j.status == "unknown"]
    for job in jobs:
        if job.status == "timed_out":
            assert job.timeout_reason == "run_not_found"
        else:
            assert job.status == "dispatched" and job.run_id, (job.id, job.status, job.run_id)
    # no job and no issue reached GitHub twice
    runs = [r for team in TEAMS for r in gh.runs_of("acme", team.lower())]
    runs_per_job = Counter(str(r.inputs.get("job_id")) for r in runs)
    assert not runs_per_job or max(runs_per_job.values()) == 1, runs_per_job
    assert {str(j.id) for j in jobs if j.status == "dispatched"} <= set(runs_per_job)
    # each issue's tracker state moved once, and no comment was posted twice
    for key in keys:
        assert "AI-Implement" not in linear.labels_of(key), (key, linear.labels_of(key))
        comments = linear.comments_of(key)
        assert len(comments) == len(set(comments)), (key, comments)
    ended = [j for j in jobs if j.status == "timed_out"]
    for job in ended:
        assert len(linear.comments_of(job.issue_key)) == 1, linear.comments_of(job.issue_key)
