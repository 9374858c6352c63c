"""One poller process of the race test (run as a script by ``test_race.py``).

Usage: ``python race_worker.py DATABASE_URL``. It builds the same fake tracker as the test (the
issues are deterministic), prints ``ready``, waits for a line on stdin, runs one poll cycle and
prints the cycle's report as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TEAMS = {"ALPHA": 3, "BRAVO": 5, "CHARLIE": 7, "DELTA": 2, "ECHO": 4}
ISSUES_PER_TEAM = 40


def build_tracker() -> Any:
    from aiimpl_core.testing.fakes import FakeTracker

    tracker = FakeTracker()
    # interleave the teams, as a real listing mixes them
    for n in range(1, ISSUES_PER_TEAM + 1):
        for team in TEAMS:
            tracker.add(f"{team}-{n}")
    return tracker


def main(url: str) -> None:
    from aiimpl_core.app import create_app
    from aiimpl_core.extensions import db
    from aiimpl_core.services.dispatch import run_cycle
    from aiimpl_core.testing.fakes import FakeRunner
    from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

    tracker, runner = build_tracker(), FakeRunner()
    app = create_app(
        {"AIIMPL_DATABASE_URL": url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY, "TESTING": True},
        plugins=[tracker.plugin, runner.plugin],
        load_entrypoints=False,
        environ={},
    )
    with app.app_context():
        db.session.execute(db.text("SELECT 1"))  # connect before the start line
        db.session.commit()
        print("ready", flush=True)
        sys.stdin.readline()
        report = run_cycle(reconcile=False)
        print(
            json.dumps(
                {
                    "dispatched": [d.issue_key for d in report.dispatched],
                    "launched": len(runner.runs),
                    "errors": report.errors,
                }
            ),
            flush=True,
        )
        db.session.remove()
        db.engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
