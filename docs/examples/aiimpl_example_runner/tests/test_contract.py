"""The example runner passes the core's runner contract."""
from __future__ import annotations

import json

import pytest
from aiimpl_core.errors import ProviderNotConfigured
from aiimpl_core.testing.contract import (
    RunnerBackendContract,
    make_context,
    sample_dispatch_request,
    sample_in_flight_run,
)
from aiimpl_core.types import RunPhase

from aiimpl_example_runner.backend import SpoolBackend


class TestSpoolBackendContract(RunnerBackendContract):
    @pytest.fixture
    def runner_backend(self, tmp_path):
        return SpoolBackend(make_context({"AIIMPL_EXAMPLE_SPOOL_DIR": str(tmp_path)}))

    @pytest.fixture
    def dispatch_request(self):
        return sample_dispatch_request(job_id=7)

    @pytest.fixture
    def contract_session_env(self, tmp_path):
        return lambda run: json.loads((tmp_path / f"{run.job_id}.json").read_text())["env"]

    @pytest.fixture
    def contract_run_metadata(self, tmp_path):
        """What the system that picks the spool up may show of a run: the spool's file names and
        the payload's fields but the session's environment."""
        def shown(run):
            payload = json.loads((tmp_path / f"{run.job_id}.json").read_text())
            return {"files": sorted(p.name for p in tmp_path.iterdir()),
                    **{key: value for key, value in payload.items() if key != "env"}}
        return shown


def test_spool_reports_state_written_by_the_consumer(tmp_path):
    backend = SpoolBackend(make_context({"AIIMPL_EXAMPLE_SPOOL_DIR": str(tmp_path)}))
    req = sample_dispatch_request(job_id=3)
    run = sample_in_flight_run(req, backend.dispatch(req))
    assert backend.poll_runs([run])[0].phase is RunPhase.PENDING
    (tmp_path / "3.state").write_text("failed")
    assert backend.poll_runs([run])[0].phase is RunPhase.FAILED


def test_an_unconfigured_spool_polls_nothing_and_cancels_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "3.json").write_text("{}")
    backend = SpoolBackend(make_context({}))
    run = sample_in_flight_run(sample_dispatch_request(job_id=3), run_id="spool-3")
    with pytest.raises(ProviderNotConfigured):
        backend.poll_runs([run])
    backend.cancel(run)
    assert (tmp_path / "3.json").exists()
