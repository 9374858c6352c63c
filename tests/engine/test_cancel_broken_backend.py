"""An operator cancels a job whose runner backend cannot be set up (its settings broke since the
dispatch): the job still ends, with its failure comment, and the run is left to its lifetime."""

from __future__ import annotations

from typing import Any

from aiimpl_core.services.cancel import CANCELLED
from aiimpl_core.services.dispatch import run_cycle

from .conftest import jobs_of


def test_a_job_whose_backend_cannot_be_set_up_is_cancelled_all_the_same(
    app, client, admin_headers, tracker, runner, add_mapping
):
    add_mapping("ENG")
    tracker.add("ENG-1")
    run_cycle()
    [job] = jobs_of("ENG-1")
    assert job.status == "dispatched"

    def broken(self: Any, context: Any) -> None:
        raise RuntimeError("the backend's settings are broken")

    app.extensions["aiimpl"]._instances.clear()  # set up afresh, as a restarted process would
    runner.backend_class.__init__ = broken

    resp = client.post(f"/api/jobs/{job.id}/cancel", headers=admin_headers)
    assert resp.status_code == 200, resp.get_json()
    [job] = jobs_of("ENG-1")
    assert (job.status, job.error) == ("failed", CANCELLED)
    assert tracker.comments["ENG-1"][-1] == f"⚠️ Implementation failed: {CANCELLED}"
    assert runner.destroyed == []
