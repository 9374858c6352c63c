"""A change of a team's mapping (a pause, a lower cap) and a dispatch claim of the team exclude
each other: a claim that read the mapping before the change commits first, and the change is
answered only then. At READ COMMITTED they did not (the change took the ``mapping:`` lock, the
claim the ``team:`` one): the operator was told the project was paused, and a run started."""

from __future__ import annotations

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.services import dispatch as dispatch_mod
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.orchestrator import Pause, Worker, first_holds_second_waits

from .conftest import jobs_of


@pytest.mark.parametrize(("change", "stored"), [
    ({"paused": True}, ("paused", True)),
    ({"maxInProgressAiIssues": 1}, ("maxInProgressAiIssues", 1)),
], ids=["pause", "lower-cap"])
def test_a_mapping_change_waits_for_the_claim_that_read_the_mapping_before_it(
    app, tracker, runner, add_mapping, admin_headers, monkeypatch, change, stored
):
    add_mapping("ENG", max_in_progress=3)
    tracker.add("ENG-1")
    pause = Pause(monkeypatch, dispatch_mod, "_read_for_claim", "claim")
    db.session.commit()

    claim = Worker(app, "claim", lambda: run_cycle(reconcile=False))
    changing = lambda: Worker(app, "change", lambda: app.test_client().patch(  # noqa: E731
        "/api/mappings/ENG", json=change, headers=admin_headers))
    _, answer = first_holds_second_waits(app, pause, claim, changing)

    assert answer.status_code == 200 and answer.get_json()[stored[0]] == stored[1]
    # the claim committed before the change: its job is one the operator's change came after
    [job] = jobs_of("ENG-1")
    assert job.id in runner.runs
