"""An operator stops a job in flight (``POST /api/jobs/<jobId>/cancel``, ``aiimpl jobs cancel``).

The job is ended ``failed`` first, with the reason ``cancelled by an operator`` — so the issue gets
the reference's failure comment and stage, and a session that reports afterwards finds its job
ended (its result is recorded as late, its nonce refused) — then its run is stopped through its
backend's ``cancel`` (best effort: a backend that cannot stop it leaves it to its lifetime).
"""

from __future__ import annotations

import logging

from flask import current_app

from ..database import serialized
from ..errors import Conflict, NotFound
from ..extensions import db
from ..orm import Job
from ..orm import Mapping as MappingRow
from ..types import JobStatus
from . import outbox
from .outcomes import Outcome, end_job
from .reconcile import forget_run_ended, in_flight_run

log = logging.getLogger(__name__)

JOB_NOT_FOUND = "job not found"
ALREADY_ENDED = "job already ended"
CANCELLED = "cancelled by an operator"


def cancel_job(job_id: int) -> Job:
    """End an active job ``failed`` (:data:`CANCELLED`) and stop its run.

    :raises NotFound: ``job not found``.
    :raises Conflict: ``job already ended`` (it had, or it ended meanwhile: a result came first).
    """
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound(JOB_NOT_FOUND)
    if JobStatus(job.status).terminal:
        db.session.commit()
        raise Conflict(ALREADY_ENDED)
    mapping = db.session.get(MappingRow, job.mapping_id) if job.mapping_id is not None else None
    facade = current_app.extensions["aiimpl"]
    backend = None
    if job.backend in facade.ids("runner"):
        try:
            backend = facade.runner(job.backend)
        except Exception:  # noqa: BLE001 - a backend that cannot be set up must not keep the job in flight
            log.warning("the runner backend %r of job %s could not be set up: the job is cancelled, its "
                        "run is left to its lifetime", job.backend, job.id, exc_info=True)
    with serialized(keep=[job]):
        # compare-and-set on the status: a result or a second cancel wins once. Read under the row
        # lock the ending takes (PostgreSQL: FOR NO KEY UPDATE), so a move to another active status
        # in flight (the first progress step, the reconciler linking the run) is waited for and
        # read, not compared against and lost as "already ended"
        db.session.refresh(job, with_for_update={"key_share": True})
        # the run as it stands now (linked meanwhile, perhaps); a job in unknown has none to stop yet
        run = in_flight_run(job, mapping)
        launched = job.status != JobStatus.UNKNOWN.value
        if not end_job(job, Outcome(JobStatus.FAILED, reason=CANCELLED, session_comment=False)):
            raise Conflict(ALREADY_ENDED)
        forget_run_ended(job.id)
    log.info("job %s (%s) cancelled by an operator", job.id, job.issue_key)
    if backend is not None and run is not None and launched and not job.shadow:
        try:
            backend.cancel(run)
        except Exception:  # noqa: BLE001 - best effort: the job has ended; the run meets its lifetime
            log.warning("stopping the run of cancelled job %s failed", job.id, exc_info=True)
    try:
        outbox.deliver(issue_keys=[job.issue_key])
    except Exception:  # noqa: BLE001 - the comments stay queued for the next poll cycle
        db.session.rollback()
        log.warning("delivering the comments of cancelled job %s failed", job.id, exc_info=True)
    return job
