"""A failure whose error is only white space is ended as one without a reason: the reference's
{reason} is a message, and "⚠️ Implementation failed: " with nothing after it, and an empty log
excerpt, were posted."""
from __future__ import annotations

import pytest

from aiimpl_core.testing import orchestrator

from .conftest import jobs_of, post_result


@pytest.mark.parametrize("error", ["   ", "\n", " \n\t ", "Implementation failed: \n"])
def test_a_blank_error_reads_as_a_failure_with_a_reason(app, client, tracker, runner, add_mapping, error):
    add_mapping("ENG")
    tracker.add("ENG-1")
    orchestrator.poll_once(reconcile=False)
    [job] = jobs_of("ENG-1")
    resp = post_result(client, runner, job.id, outcome="failure", error=error)
    assert resp.get_json()["status"] == "failed"
    assert tracker.comments["ENG-1"] == [
        "⚠️ Implementation failed: the run failed",
        "Log excerpt (`session_failed`):\n\n```\nthe run failed\n```",
    ]
