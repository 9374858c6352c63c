"""A session says how it ended (``POST /api/status``) while the reconciler ends its job: one
"⚠️ Session …" comment on the ticket, never both the session's and the reconciler's."""

from __future__ import annotations

from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.services import comments, outbox
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing import orchestrator
from aiimpl_core.types import RunPhase

from .conftest import jobs_of, later, post_status


@pytest.mark.postgres
def test_a_session_ending_said_while_the_reconciler_ends_the_job_waits_for_it(
    app, tracker, runner, add_mapping, monkeypatch
):
    """The reconciler's ending has read which of the session's endings were said, and queues its
    own; the session's ``session_failed`` comes in then. It read the job without a lock, found it
    active, queued its comment and committed first: both were posted. It now waits for the ending,
    and is refused as the job has ended."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes the two writers whole")
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle(reconcile=False)
    [job] = jobs_of("ENG-1")
    assert post_status(app.test_client(), runner, job.id, "session_created").status_code == 200
    runner.set_state(job.id, RunPhase.RUNNING)
    run_cycle()
    runner.set_state(job.id, RunPhase.NOT_FOUND)  # the machine gone, past its lifetime
    job_id = job.id
    progress = comments.progress
    sessions: list[orchestrator.Worker] = []

    def in_the_ending(event: str, *args: Any, **kwargs: Any) -> str:
        if event == "session_timed_out" and not sessions:  # the reconciler's, in its transaction
            sessions.append(orchestrator.Worker(app, "session", lambda: post_status(
                app.test_client(), runner, job_id, "session_failed", reason="clone failed").status_code))
            orchestrator.wait_until_blocked(app, sessions[0])
        return progress(event, *args, **kwargs)

    monkeypatch.setattr(comments, "progress", in_the_ending)
    report = orchestrator.reconcile(now=later(minutes=62))
    assert report.endings == {job_id: "timed_out/machine_timeout"}
    assert sessions[0].join() == 403  # Invalid or expired nonce: the job has ended
    outbox.deliver()
    said = [c.split("\n", 1)[0] for c in tracker.comments["ENG-1"] if c.startswith("⚠️ Session")]
    assert said == ["⚠️ Session timed out: the session machine exceeded its lifetime (machine_timeout). "
                    "Machine will be cleaned up."]
