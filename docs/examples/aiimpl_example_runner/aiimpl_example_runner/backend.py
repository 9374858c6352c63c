"""Runner backend ``example-spool``."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

from aiimpl_core.errors import DispatchError
from aiimpl_core.providers import ConfigVar, RunnerBackend
from aiimpl_core.types import DispatchRequest, DispatchResult, InFlightRun, RunPhase, RunState

_STATES = {"running": RunPhase.RUNNING, "succeeded": RunPhase.SUCCEEDED, "failed": RunPhase.FAILED}


class SpoolBackend(RunnerBackend):
    """Hands each session to a spool directory; a mapping runs on it with ``executionMode:
    example-spool`` (under the runner mode ``default``).

    Everything a later ``poll_runs`` or ``cancel`` needs is in the spool, never on the instance:
    the poller that dispatched is not the one that polls next, nor the server that cancels.
    """

    id = "example-spool"
    display_name = "Example spool directory"
    config_vars = (ConfigVar("AIIMPL_EXAMPLE_SPOOL_DIR", "Directory that receives dispatched sessions"),)

    @property
    def spool(self) -> str:
        return self.context.setting("AIIMPL_EXAMPLE_SPOOL_DIR") or ""

    def is_configured(self) -> bool:
        return bool(self.spool)

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        if not self.is_configured():
            raise DispatchError("AIIMPL_EXAMPLE_SPOOL_DIR is not set", provider=self.id)
        os.makedirs(self.spool, exist_ok=True)
        run_id = f"spool-{request.job_id}"
        path = os.path.join(self.spool, f"{request.job_id}.json")
        # the spool is private to the operator's machine, so secrets may travel in the env here
        payload = {"runId": run_id, "jobId": request.job_id, "phase": request.phase.value,
                   "issueKey": request.issue_key, "env": dict(request.env)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
        return DispatchResult(run_id=run_id, linked=True)

    def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        if not runs:
            return []
        # no spool to look in: raising skips this cycle's poll (each run answered NOT_FOUND would end its job)
        self.require_configured()
        present = set(os.listdir(self.spool)) if os.path.isdir(self.spool) else set()
        states = []
        for run in runs:
            state_file = f"{run.job_id}.state"
            if state_file in present:
                with open(os.path.join(self.spool, state_file)) as fh:
                    phase = _STATES.get(fh.read().strip(), RunPhase.RUNNING)
            elif f"{run.job_id}.json" in present:
                phase = RunPhase.PENDING
            else:
                phase = RunPhase.NOT_FOUND
            states.append(RunState(job_id=run.job_id, phase=phase, run_id=run.run_id))
        return states

    def cancel(self, run: InFlightRun) -> None:
        if not self.is_configured():
            return
        for suffix in (".json", ".state"):
            try:
                os.remove(os.path.join(self.spool, f"{run.job_id}{suffix}"))
            except FileNotFoundError:
                pass
