"""The race: 4 pollers over 200 eligible issues in 5 teams with caps, at the same moment.

Asserts exact counts: no issue dispatched twice, every team exactly at its cap (never above), the
global cap exact. Threads with their own app contexts run on SQLite and PostgreSQL; separate
processes run on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker, Job, OutboxItem
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing import orchestrator
from aiimpl_core.testing.fakes import FakeTracker

from .race_worker import ISSUES_PER_TEAM, TEAMS, build_tracker

POLLERS = 4


@pytest.fixture
def tracker() -> FakeTracker:
    return build_tracker()


def _mappings(add_mapping: Any) -> None:
    for team, cap in TEAMS.items():
        add_mapping(team, max_in_progress=cap)


def _race_threads(app: Any) -> list[Any]:
    return orchestrator.at_once(app, lambda _client: run_cycle(reconcile=False), POLLERS, timeout=240)


def _jobs() -> list[Job]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(Job)).all())


def _assert_exact(jobs: list[Job], expected_per_team: dict[str, int]) -> None:
    per_issue = Counter(j.issue_key for j in jobs)
    assert max(per_issue.values()) == 1, [k for k, n in per_issue.items() if n > 1]
    per_team = Counter(j.team_key for j in jobs)
    assert dict(per_team) == {t: n for t, n in expected_per_team.items() if n}


@pytest.mark.long
@pytest.mark.parametrize("round_", range(3))
def test_race_threads_respect_team_caps_and_never_double_dispatch(app, tracker, runner, add_mapping, round_):
    _mappings(add_mapping)
    reports = _race_threads(app)

    jobs = _jobs()
    _assert_exact(jobs, TEAMS)
    assert len(jobs) == sum(TEAMS.values())
    assert sum(len(r.dispatched) for r in reports) == len(jobs)
    assert len(runner.runs) == len(jobs)  # each job launched exactly once
    assert all(j.status == "dispatched" for j in jobs)
    assert not any(r.errors for r in reports)
    # each job's stage change was delivered once
    set_stage_calls = Counter(arg[0] for op, arg in tracker.calls if op == "set_stage")
    assert set(set_stage_calls.values()) == {1} and len(set_stage_calls) == len(jobs)
    # every other issue waits at its team's cap, with the reference's message
    blockers = {b.issue_key: b for b in db.session.scalars(db.select(Blocker)).all()}
    assert len(blockers) == len(TEAMS) * ISSUES_PER_TEAM - len(jobs)
    for b in blockers.values():
        cap = TEAMS[b.team_key]
        assert (b.reason, b.message) == (
            "concurrency",
            f"at concurrency cap ({cap}/{cap}). Waiting for a slot.",
        )

    # a second round of cycles changes nothing
    _race_threads(app)
    assert len(_jobs()) == len(jobs)


class TestGlobalCap:
    @pytest.fixture
    def aiimpl_config(self) -> dict[str, object]:
        return {"AIIMPL_GLOBAL_CAP": 15}

    def test_race_threads_respect_the_global_cap(self, app, tracker, runner, add_mapping):
        _mappings(add_mapping)
        _race_threads(app)
        jobs = _jobs()
        assert len(jobs) == 15
        per_issue = Counter(j.issue_key for j in jobs)
        assert max(per_issue.values()) == 1
        per_team = Counter(j.team_key for j in jobs)
        assert all(per_team[t] <= cap for t, cap in TEAMS.items())
        reasons = Counter(b.reason for b in db.session.scalars(db.select(Blocker)).all())
        assert reasons["global-cap"] > 0 and sum(reasons.values()) == len(TEAMS) * ISSUES_PER_TEAM - 15


class TestBackendCap:
    @pytest.fixture
    def aiimpl_config(self) -> dict[str, object]:
        return {"AIIMPL_BACKEND_CAPS": {"github-actions": 12}}

    def test_race_threads_respect_a_backend_cap(self, app, tracker, runner, add_mapping):
        _mappings(add_mapping)
        _race_threads(app)
        jobs = _jobs()
        assert len(jobs) == 12 and len(runner.runs) == 12
        assert max(Counter(j.issue_key for j in jobs).values()) == 1
        per_team = Counter(j.team_key for j in jobs)
        assert all(per_team[t] <= cap for t, cap in TEAMS.items())
        reasons = Counter(b.reason for b in db.session.scalars(db.select(Blocker)).all())
        assert reasons["backend-cap"] > 0 and sum(reasons.values()) == len(TEAMS) * ISSUES_PER_TEAM - 12


@pytest.mark.long
@pytest.mark.parametrize("round_", range(3))
def test_race_processes_on_postgresql(app, add_mapping, round_):
    url = app.config["AIIMPL_DATABASE_URL"]
    if not url.startswith("postgresql"):
        pytest.skip("separate processes race on PostgreSQL (SQLite is for one host)")
    _mappings(add_mapping)
    db.session.remove()
    worker = os.path.join(os.path.dirname(__file__), "race_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [
        subprocess.Popen(
            [sys.executable, worker, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(POLLERS)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            assert line == "ready", (line, p.stderr.read() if p.poll() is not None and p.stderr else "")
        for p in procs:  # all start at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

    jobs = _jobs()
    _assert_exact(jobs, TEAMS)
    assert len(jobs) == sum(TEAMS.values())
    assert sum(len(r["dispatched"]) for r in results) == len(jobs)
    assert sum(r["launched"] for r in results) == len(jobs)
    assert not any(r["errors"] for r in results)
    stage_items = db.session.scalars(db.select(OutboxItem).where(OutboxItem.op == "stage")).all()
    assert len(stage_items) == len(jobs)
