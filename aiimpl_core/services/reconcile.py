"""The reconciler: keeps every in-flight job's status true to what its runner backend reports.

Once per cycle it groups the non-terminal jobs by backend and asks each backend about all of them
in one ``poll_runs`` call (never one call per job). It links runs (``running``, run id and URL),
and ends jobs whose run failed, timed out, finished without a result, disappeared, or was never
linked:

======================================  ==============================================
what is known                            how the job ends
======================================  ==============================================
``RUNNING``                              ``running`` (run id and URL linked)
``NOT_FOUND`` / no run id after the      ``timed_out`` / ``run_not_found``
``run_not_found`` window
``NOT_FOUND`` for a run that was         ``failed`` / ``session_failed``: the run
linked, after the window                 disappeared (its session was destroyed or
                                         removed) before it reported a result; once its
                                         lifetime has passed, ``timed_out`` /
                                         ``machine_timeout`` (``container_timeout`` for
                                         local containers)
left out of the backend's answer, or     left as it is (the backend could not look);
no answer at all (its poll failed, or    10 minutes past its lifetime, a run never
it is backing off after failures)        linked is ended ``timed_out`` /
                                         ``run_not_found``, a linked one is cancelled
                                         (not while the backend backs off) and ended as
                                         an overrun (below)
``TIMED_OUT``                            ``timed_out`` with the backend's reason
``FAILED``                               ``failed`` with the log excerpt and its label
``SUCCEEDED`` and no ``/runner/result``  after a grace period, ``failed``: ``pr_not_found``
                                         (implementation) or ``session_failed``
still ``unknown`` (crash between the     ``timed_out`` / ``run_not_found``
claim and the backend call)
shadow job (no runner was started)       ``timed_out`` / ``run_not_found``; at once
                                         outside shadow mode (:mod:`.shadow`)
mapping deleted or backend no longer     never linked: ``timed_out`` / ``run_not_found``;
installed (nobody to ask)                linked or running: left to report its result,
                                         then, 10 minutes past its lifetime,
                                         ``timed_out`` / ``machine_timeout``
                                         (``container_timeout`` for local containers)
still in flight 10 minutes past its      cancelled; ``timed_out`` / ``machine_timeout``
lifetime (the backend did not stop it)   (``container_timeout`` for local containers)
======================================  ==============================================

An answer the reconciler cannot take (:func:`_run_states`, :func:`_matched_states`: a field of the
wrong type, a run id a job cannot keep, a ``job_id`` that is no ``int``, two different states for one
job) is the backend's failed poll; states for jobs it was not asked about are ignored, and named in
the report and, now and then, in a warning.

``run_not_found`` is kept for what the reference says it means, "a run was never linked": a
linked run that is no longer found did exist, so it ends ``failed`` with that said, or as the
lifetime timeout once its lifetime has passed (the reference has no timeout reason of its own
for a run that vanished).

Every ending goes through :func:`~aiimpl_core.services.outcomes.end_job` (compare-and-set): a job
that ``/runner/result`` ended first is left as it is. Log excerpts and failure details a backend
reports are masked with every secret the orchestrator could have handed to the job's session
(:mod:`~aiimpl_core.services.redaction`) before they are stored or posted: a backend's own
masking is not trusted alone, as the runners' reports are not.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, select

from ..database import chunks, one_of, serialized
from ..errors import AiimplError, PluginContractError
from ..extensions import db
from ..orm import Job, Setting, utcnow
from ..orm import Mapping as MappingRow
from ..types import (
    ACTIVE_STATUSES,
    InFlightRun,
    JobStatus,
    LogLabel,
    Phase,
    RunPhase,
    RunState,
    TimeoutReason,
)
from . import poller, redaction, settings, shadow
from .jobs import discard_events_after, queued_events, transition
from .outcomes import Outcome, end_job

log = logging.getLogger(__name__)

#: how long a run may be over (``SUCCEEDED``) before its missing ``/runner/result`` counts as lost
RESULT_GRACE = timedelta(minutes=5)
#: how long past its lifetime a run the backend still reports in flight is stopped by the reconciler
OVERRUN_GRACE = timedelta(minutes=10)


@dataclass
class ReconcileReport:
    """What one reconcile pass did."""

    polled: dict[str, int] = field(default_factory=dict)  # backend -> runs asked about
    linked: int = 0
    ended: int = 0
    endings: dict[int, str] = field(default_factory=dict)  # job id -> status/reason
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why it was not asked
    #: backend -> the job ids of states it answered for jobs it was not asked about (ignored)
    ignored: dict[str, list[int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "polled": dict(self.polled),
            "linked": self.linked,
            "ended": self.ended,
            "endings": {str(k): v for k, v in self.endings.items()},
            "skipped": dict(self.skipped),
            "ignored": {k: list(v) for k, v in self.ignored.items()},
        }


def run_not_found_window() -> timedelta:
    """How long a dispatched job may go without a linked run (``AIIMPL_RUN_NOT_FOUND_SECONDS``)."""
    return timedelta(seconds=int(current_app.config.get("AIIMPL_RUN_NOT_FOUND_SECONDS") or 600))


def session_lifetime_seconds() -> int:
    """How long a session may run before its machine or container is stopped
    (``AIIMPL_SESSION_LIFETIME_SECONDS``)."""
    return int(current_app.config.get("AIIMPL_SESSION_LIFETIME_SECONDS") or 3600)


def job_lifetime_seconds(job: Job, setting: int | None = None) -> int:
    """The lifetime the job's session was started with (recorded as the job was created); the
    setting (``setting``, else read now) for a job created before lifetimes were recorded."""
    return job.lifetime_seconds or setting or session_lifetime_seconds()


@dataclass(frozen=True)
class _Limits:
    """The time limits one backend's jobs are judged by in a cycle."""

    window: timedelta  # how long a dispatch may go without a linked run (``run_not_found``)
    setting: int  # the session lifetime setting, for a job that has none of its own
    lifetime_reason: TimeoutReason  # how a run past its lifetime ends on this backend

    def lifetime(self, job: Job) -> timedelta:
        """The session lifetime ``job`` is judged by."""
        return timedelta(seconds=job_lifetime_seconds(job, self.setting))


def lifetime_reason(backend: Any) -> TimeoutReason:
    """The reference's reason for a session past its lifetime: a local container's, or a machine's."""
    if backend.runner_mode == "local":
        return TimeoutReason.CONTAINER_TIMEOUT
    return TimeoutReason.MACHINE_TIMEOUT


def _masked(job: Job, text: str | None) -> str | None:
    """A backend's text (log excerpt, failure detail) with every secret the job's session could
    know masked in all its forms (plain, URL-encoded, base64, split across lines)."""
    return redaction.redactor_for(job).text(text) if text else text


def _grace_key(job_id: int) -> str:
    return f"run-ended:{job_id}"


def forget_run_ended(job_id: int) -> None:
    """Forget when the reconciler first saw the job's run over without its result (in the caller's
    transaction): the job has ended, and nothing reads the row any more."""
    db.session.execute(delete(Setting).where(Setting.key == _grace_key(job_id)))


def _end(job: Job, outcome: Outcome, report: ReconcileReport) -> None:
    if end_job(job, outcome):
        report.ended += 1
        report.endings[job.id] = f"{outcome.status.value}" + (
            f"/{outcome.timeout_reason}" if outcome.timeout_reason else ""
        )
    forget_run_ended(job.id)


def _run_not_found(job: Job, report: ReconcileReport) -> None:
    _end(job, Outcome(JobStatus.TIMED_OUT, timeout_reason=TimeoutReason.RUN_NOT_FOUND.value), report)


def _since_dispatch(job: Job) -> datetime:
    return job.dispatched_at or job.created_at


def in_flight_run(job: Job, mapping: MappingRow | None, setting: int | None = None) -> InFlightRun | None:
    """The job's run as its backend is asked about it (``None`` once its mapping is gone), with the
    lifetime its session was started with (``setting``: the lifetime setting, read once by a
    caller that builds many, for jobs created before lifetimes were recorded)."""
    if mapping is None:
        return None
    return InFlightRun(
        job_id=job.id,
        phase=Phase(job.phase),
        issue_key=job.issue_key,
        mapping=mapping.view(),
        run_id=job.run_id,
        run_name=job.run_name,
        dispatched_at=_since_dispatch(job),
        started_at=job.running_at,
        lifetime_seconds=job_lifetime_seconds(job, setting),
    )


def reconcile(
    now: datetime | None = None, *, lease_seconds: float | None = None, holder: str | None = None
) -> ReconcileReport:
    """One reconcile pass over every non-terminal job.

    :param lease_seconds: with several pollers, ask each backend at most once per interval: the
        poller holding the ``reconcile:<backend>`` lease does it (the poll loop passes its interval).
    """
    now = now or utcnow()
    report = ReconcileReport()
    facade = current_app.extensions["aiimpl"]
    installed = set(facade.ids("runner"))
    window = run_not_found_window()
    lifetime = session_lifetime_seconds()

    jobs = db.session.scalars(
        select(Job).where(Job.status.in_([s.value for s in ACTIVE_STATUSES])).order_by(Job.id)
    ).all()
    if any(job.shadow for job in jobs) and settings.effective_runner_mode() != shadow.SHADOW:
        # shadow jobs in flight outside shadow mode: claimed by a poller that read the mode just
        # before it changed, or left by a mode change no poll loop start has seen
        for job_id in shadow.leave(now).ended:
            report.ended += 1
            report.endings[job_id] = f"{JobStatus.TIMED_OUT.value}/{TimeoutReason.RUN_NOT_FOUND.value}"
        jobs = [job for job in jobs if not job.shadow]
    by_backend: dict[str, list[Job]] = defaultdict(list)
    # (a backend no longer installed: the reason a result reporting a timeout gets, a machine's)
    unasked = _Limits(window, lifetime, TimeoutReason.MACHINE_TIMEOUT)
    for job in jobs:
        if (
            job.status == JobStatus.UNKNOWN.value
            or job.shadow
            or not job.backend
            or job.backend not in installed
        ):
            # nothing to ask a backend: a job never handed over (a crash between the claim and the
            # backend call), a shadow job (no runner started), or a backend no longer installed
            _end_unasked(job, now=now, limits=unasked, report=report)
            continue
        by_backend[job.backend].append(job)
    ids = [job.id for job in jobs]
    ids_by_backend = {backend_id: [job.id for job in js] for backend_id, js in by_backend.items()}
    db.session.commit()
    _reload(ids)

    for backend_id, backend_jobs in sorted(by_backend.items()):
        if poller.stop_asked():  # the poll loop is stopping: the next cycle asks the others
            return report
        backoff = poller.backoff_of("runner", backend_id, now)
        if backoff is not None:
            # not asked: its runs are judged as left out of an answer (below), so that a backend
            # that keeps failing does not hold its jobs, and their teams' slots, for good
            report.skipped[backend_id] = f"backing off until {backoff.until.isoformat()}: {backoff.error}"
        elif lease_seconds is not None and not poller.acquire_lease(
            f"reconcile:{backend_id}", max(1.0, lease_seconds * 0.9), holder=holder, now=now
        ):
            report.skipped[backend_id] = "another poller reconciled it this interval"
            continue
        mappings = {
            m.id: m
            for m in db.session.scalars(
                select(MappingRow).where(
                    MappingRow.id.in_({j.mapping_id for j in backend_jobs if j.mapping_id})
                )
            ).all()
        }
        runs: list[InFlightRun] = []
        # (the class says them: no instance, whose set-up may fail)
        reason = lifetime_reason(facade.classes["runner"][backend_id])
        limits = _Limits(window, lifetime, reason)
        for job in backend_jobs:
            run = in_flight_run(job, mappings.get(job.mapping_id or -1), lifetime)
            if run is None:  # the mapping was deleted: the backend cannot be asked about the run
                _end_unasked(job, now=now, limits=limits, report=report)
                continue
            runs.append(run)
        if not runs:
            continue
        # no answer (backing off, or the poll failed): every run is left out of it, and judged so
        by_job: dict[int, RunState] = {}
        backend = None
        if backoff is None:
            try:
                backend = facade.runner(backend_id)
                asked_at = utcnow()
                by_job = _matched_states(_run_states(backend.poll_runs(runs), backend_id), backend_id)
            except Exception as exc:  # noqa: BLE001 - one backend's failure must not stop the others
                db.session.rollback()
                if not isinstance(exc, AiimplError):  # a plugin's bug: where it is
                    log.exception("polling the runs of %s failed", backend_id)
                poller.record_failure("runner", backend_id, exc, now)
                report.skipped[backend_id] = (
                    f"poll failed: {exc if isinstance(exc, AiimplError) else type(exc).__name__}"
                )
            else:
                poller.record_success("runner", backend_id, since=asked_at)
                report.polled[backend_id] = len(runs)
                asked = {run.job_id for run in runs}
                unknown = sorted(job_id for job_id in by_job if job_id not in asked)
                if unknown:
                    report.ignored[backend_id] = unknown
                    _warn_ignored(backend_id, unknown, now)
                by_job = {job_id: state for job_id, state in by_job.items() if job_id in asked}
        _reload(ids_by_backend[backend_id])
        by_run = {r.job_id: r for r in runs}
        changed = [j.id for j in backend_jobs if not _unchanged(j, by_job.get(j.id), now=now, limits=limits)]
        for batch in chunks(changed, APPLY_BATCH):
            _apply_batch(list(batch), by_job, now=now, limits=limits, report=report)
        _reload(ids_by_backend[backend_id])
        for job in backend_jobs:
            run = by_run.get(job.id)
            try:
                state = by_job.get(job.id)
                if run is not None and _overran(job, state, now, limits):
                    _stop_overrun(job, run, backend, report, limits.lifetime_reason, state=state, now=now)
            except Exception:  # noqa: BLE001 - one job's trouble must not stop the pass
                db.session.rollback()
                log.exception("stopping the overrunning run of job %s failed", job.id)
    _sweep_idle(facade, installed - {job.backend for job in jobs if job.backend}, now=now,
                lifetime=lifetime, holder=holder)
    return report


#: how often a backend with nothing in flight is asked to sweep (:meth:`RunnerBackend.sweep`)
SWEEP_EVERY = timedelta(minutes=10)


def _sweep_idle(facade: Any, idle: set[str], *, now: datetime, lifetime: int, holder: str | None) -> None:
    """Ask each backend none of whose jobs is in flight to remove what ended sessions left behind
    (:meth:`~aiimpl_core.providers.base.RunnerBackend.sweep`): its ``poll_runs`` does that only
    while a run is in flight. Once per :data:`SWEEP_EVERY` for all pollers together (a lease),
    tried once per that time by each process (no statement in the cycles between)."""
    tried: dict[str, datetime] = current_app.extensions.setdefault("aiimpl.sweeps", {})
    for backend_id in sorted(idle):
        last = tried.get(backend_id)
        if last is not None and last <= now < last + SWEEP_EVERY:
            continue
        tried[backend_id] = now
        try:
            if not poller.acquire_lease(f"sweep:{backend_id}", SWEEP_EVERY.total_seconds(), holder=holder,
                                        now=now, renew=False):
                continue
            backend = facade.runner(backend_id)
            if backend.is_configured():
                backend.sweep(lifetime)
        except Exception as exc:  # noqa: BLE001 - a sweep is best effort; polling goes on
            db.session.rollback()
            if isinstance(exc, AiimplError):
                log.warning("sweeping %s failed: %s", backend_id, exc.message)
            else:  # a plugin's bug: where it is
                log.warning("sweeping %s failed: %s", backend_id, type(exc).__name__, exc_info=True)


def _end_unasked(job: Job, *, now: datetime, limits: _Limits, report: ReconcileReport) -> None:
    """End a job no backend is asked about, once nothing more can be expected of it.

    A run never linked ends ``run_not_found`` after the window. A run that was linked, or whose
    session has reported, may still be at work after its mapping was deleted or its backend's
    plugin removed: its session reports its result all the same (neither is needed for that).
    Such a job is left to it until its lifetime has passed, with the grace an overrunning run gets,
    and then ends as the lifetime timeout.
    """
    if _unasked_due(job, now, limits) is None:
        return
    with serialized():
        db.session.refresh(job)
        due = None if JobStatus(job.status).terminal else _unasked_due(job, now, limits)
        if due is TimeoutReason.RUN_NOT_FOUND:
            _run_not_found(job, report)
        elif due is not None:
            _end(job, Outcome(JobStatus.TIMED_OUT, timeout_reason=due.value), report)


def _unasked_due(job: Job, now: datetime, limits: _Limits) -> TimeoutReason | None:
    """How :func:`_end_unasked` ends the job now, or ``None`` while it waits."""
    if job.run_id or job.status == JobStatus.RUNNING.value:
        return limits.lifetime_reason if _overrun_due(job, now, limits.lifetime(job)) else None
    return TimeoutReason.RUN_NOT_FOUND if _since_dispatch(job) + limits.window <= now else None


def _run_states(answer: Any, backend_id: str) -> list[RunState]:
    """``poll_runs``'s answer as :class:`RunState` s with a :class:`RunPhase` each (a phase given as
    its string value is taken); any other answer is refused whole, as that backend's failure."""
    if answer is None or isinstance(answer, (str, bytes, dict)):
        raise PluginContractError(
            f"poll_runs of {backend_id!r} answered {type(answer).__name__}, not a list of RunState"
        )
    states: list[RunState] = []
    for state in answer:
        if not isinstance(state, RunState):
            raise PluginContractError(
                f"poll_runs of {backend_id!r} answered a {type(state).__name__}, not a RunState"
            )
        states.append(_checked_state(state, backend_id))
    return states


def _checked_state(state: RunState, backend_id: str) -> RunState:
    """``state`` with its enumerated fields as their enums (a member's string value is taken, as for
    the phase); a field of another type is the backend's broken contract. Checked here, before a
    job is touched: a value that only failed when the job ends would fail that job on every cycle,
    and hold it for good."""
    def refuse(name: str, value: Any, expected: str) -> PluginContractError:
        shown = repr(value)[:60]
        return PluginContractError(f"poll_runs of {backend_id!r} answered the {name} {shown}, not {expected}")

    changes: dict[str, Any] = {}
    for name, enum in (("phase", RunPhase), ("timeout_reason", TimeoutReason), ("log_label", LogLabel)):
        value = getattr(state, name)
        if isinstance(value, enum) or (value is None and name != "phase"):
            continue
        try:
            changes[name] = enum(value)
        except (TypeError, ValueError):
            raise refuse(name, value, f"a {enum.__name__}") from None
    if isinstance(state.run_id, int) and not isinstance(state.run_id, bool):
        changes["run_id"] = str(state.run_id)  # a numeric id, as GitHub's run ids are
    for name in ("run_id", "run_url", "log_excerpt", "detail"):
        value = changes.get(name, getattr(state, name))
        if value is not None and not isinstance(value, str):
            raise refuse(name, value, "a string")
        if value is not None and "\x00" in value:
            if name in ("run_id", "run_url"):  # an identity: nothing to take of it
                raise refuse(name, value, "a string without a NUL character")
            # a log may hold any byte; PostgreSQL's text takes no NUL, and the ending would fail
            changes[name] = value.replace("\x00", "\ufffd")
    exit_code = state.exit_code
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise refuse("exit_code", exit_code, "an integer")
    return replace(state, **changes) if changes else state


#: the longest run id a job keeps (the length of its column)
RUN_ID_LENGTH: int = Job.__table__.c.run_id.type.length


def run_ref_problem(name: str, value: Any) -> str | None:
    """What keeps a job from storing ``value`` as its run's ``name`` (``run_id`` or ``run_url``) as a
    backend answered it, said to follow "a run_id that …"; ``None`` when it can (``None`` included).

    Checked before anything is written: a value the database refuses (PostgreSQL takes no NUL
    character and no run id longer than its column; neither takes a dict) would otherwise fail the
    write itself, after the session started or on every cycle.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a string"
    if "\x00" in value:
        return "holds a NUL character"
    if name == "run_id" and len(value) > RUN_ID_LENGTH:
        return f"is {len(value)} characters long, more than the {RUN_ID_LENGTH} a job keeps"
    return None


def _matched_states(states: list[RunState], backend_id: str) -> dict[int, RunState]:
    """``poll_runs``'s checked states by job id, each job's run id one its row can keep.

    A ``job_id`` that is no ``int`` (``"7"`` for ``7``) would never be matched to its job, which
    then waited, unreconciled, until its overrun; two different states for one job cannot both be
    true. Either is the backend's broken contract, and refuses its whole answer, as a field of the
    wrong type does (:func:`_checked_state`); the same state twice (a listing that overlapped
    itself) is taken once. States for jobs it was not asked about are the caller's to report.
    """
    by_job: dict[int, RunState] = {}
    for state in states:
        job_id = state.job_id
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise PluginContractError(
                f"poll_runs of {backend_id!r} answered the job_id {job_id!r:.40} ({type(job_id).__name__}), "
                "not an int (the InFlightRun's job_id)"
            )
        problem = run_ref_problem("run_id", state.run_id)
        if problem is not None:
            raise PluginContractError(
                f"poll_runs of {backend_id!r} answered a run_id for job {job_id} that {problem}"
            )
        seen = by_job.setdefault(job_id, state)
        if seen != state:
            raise PluginContractError(
                f"poll_runs of {backend_id!r} answered 2 different states for job {job_id} "
                f"({seen.phase.value}, {state.phase.value}): answer one per run"
            )
    return by_job


#: how often each process warns about a backend answering states for jobs it was not asked about
IGNORED_WARN_EVERY = timedelta(minutes=10)


def _warn_ignored(backend_id: str, job_ids: list[int], now: datetime) -> None:
    """Warn that a backend answers states for jobs it was not asked about (they are ignored): once
    per :data:`IGNORED_WARN_EVERY` per backend and process, as it would repeat on every cycle; each
    cycle's report names them."""
    warned: dict[str, datetime] = current_app.extensions.setdefault("aiimpl.ignored-states", {})
    last = warned.get(backend_id)
    if last is not None and last <= now < last + IGNORED_WARN_EVERY:
        return
    warned[backend_id] = now
    shown = ", ".join(str(job_id) for job_id in job_ids[:20]) + (" …" if len(job_ids) > 20 else "")
    log.warning(
        "poll_runs of %r answered states for jobs it was not asked about: %s (a RunState's job_id is "
        "its InFlightRun's); they are ignored", backend_id, shown,
    )


#: jobs whose state changed are updated this many to a transaction (each job in a savepoint)
APPLY_BATCH = 100


def _apply_batch(
    job_ids: list[int],
    states: dict[int, RunState],
    *,
    now: datetime,
    limits: _Limits,
    report: ReconcileReport,
) -> None:
    """Apply what the backend reported to these jobs in one serialized transaction.

    The rows are read again inside it (another process may have ended a job meanwhile); each job is
    applied in a savepoint, so one job's trouble is logged and does not undo the others. Jobs whose
    only change is their run's id or URL (the common case after dispatch) share one savepoint, and
    so one batched ``UPDATE``; should it fail, each is applied in its own.
    """
    batch_before = (report.linked, report.ended, dict(report.endings))
    try:
        with serialized():
            jobs = db.session.scalars(
                select(Job).where(one_of(Job.id, job_ids)).execution_options(populate_existing=True)
            ).all()
            linked = _link_together([job for job in jobs if _only_links(job, states.get(job.id))], states)
            report.linked += len(linked)
            for job in jobs:
                if job.id in linked:
                    continue
                before = (report.linked, report.ended, dict(report.endings))
                mark = queued_events()
                try:
                    with db.session.begin_nested():
                        _apply(job, states.get(job.id), now=now, limits=limits, report=report)
                except Exception:  # noqa: BLE001 - one job's trouble must not stop the pass
                    report.linked, report.ended, report.endings = before
                    discard_events_after(mark)  # what they announce was undone
                    log.exception("reconciling job %s failed", job.id)
    except Exception:  # noqa: BLE001 - the next pass looks again
        report.linked, report.ended, report.endings = batch_before
        log.exception("reconciling jobs %s failed", job_ids)


def _only_links(job: Job, state: RunState | None) -> bool:
    """Whether :func:`_apply` would only record the run's id or URL (no status change)."""
    if state is None or JobStatus(job.status).terminal or not _needs_link(job, state):
        return False
    if state.phase is RunPhase.PENDING:
        return True
    return state.phase is RunPhase.RUNNING and job.status == JobStatus.RUNNING.value


def _link_together(jobs: list[Job], states: dict[int, RunState]) -> set[int]:
    """Link these jobs' runs in one savepoint; the ids linked (none when it failed)."""
    if not jobs:
        return set()
    try:
        with db.session.begin_nested():
            for job in jobs:
                _link(job, states[job.id])
    except Exception:  # noqa: BLE001 - each job is then applied in a savepoint of its own
        log.warning("linking %s runs together failed; linking them one by one", len(jobs), exc_info=True)
        return set()
    return {job.id for job in jobs}


def _overran(job: Job, state: RunState | None, now: datetime, limits: _Limits) -> bool:
    """Still in flight well past its lifetime: the backend did not stop it (a safety net). So is a
    linked run the backend keeps leaving out of its answers (it cannot look at it: a repository it
    may no longer read), which would otherwise hold its job, and its slot, for good."""
    if JobStatus(job.status).terminal:
        return False
    if state is None:
        if not _linked(job):
            return False  # never linked: ended run_not_found by _omitted_too_long
    elif state.phase not in (RunPhase.RUNNING, RunPhase.PENDING):
        return False
    return _overrun_due(job, now, limits.lifetime(job))


def _linked(job: Job) -> bool:
    """Whether the job has had a run: one the backend named, or a session that reported (a run
    the backend never named, GitHub's found by its name later, ran all the same: never
    ``run_not_found``, which is a run never linked)."""
    return bool(job.run_id) or job.status == JobStatus.RUNNING.value


def _session_start(job: Job) -> datetime:
    """When the job's session began: its first report, else the dispatch."""
    return job.running_at or _since_dispatch(job)


def _overrun_due(job: Job, now: datetime, lifetime: timedelta) -> bool:
    """Whether the session is :data:`OVERRUN_GRACE` past its lifetime at ``now``."""
    return _session_start(job) + lifetime + OVERRUN_GRACE <= now


def _stop_overrun(
    job: Job, run: InFlightRun, backend: Any, report: ReconcileReport, reason: TimeoutReason,
    *, state: RunState | None = None, now: datetime | None = None,
) -> None:
    """Cancel an overrunning run (when its backend could be asked this cycle: ``backend`` is
    ``None`` while it backs off) and end its job as the lifetime timeout.

    A run the backend still reports pending never started: its excerpt says so (no runner picked
    it up, a machine never booted), where the lifetime's words alone had a person look for a
    session that overran."""
    if backend is not None:
        try:
            backend.cancel(run)
        except Exception:  # noqa: BLE001 - best effort; the job ends either way
            log.warning("cancelling the overrunning run of job %s failed", job.id, exc_info=True)
    excerpt = None
    if state is not None and state.phase is RunPhase.PENDING:
        minutes = int(((now or utcnow()) - _since_dispatch(job)).total_seconds() // 60)
        excerpt = (f"The run never started: it was still waiting to start {minutes} min after its "
                   "dispatch (no runner took it up: for GitHub Actions, none matching the workflow's "
                   "runs-on labels was free), and was stopped.")
        if state.run_url:
            excerpt += f" Run: {state.run_url}"
    with serialized():
        db.session.refresh(job)
        _end(job, Outcome(JobStatus.TIMED_OUT, timeout_reason=reason.value, log_excerpt=excerpt), report)


def _reload(ids: list[int]) -> None:
    """Load expired job rows in one query (a commit expires them all; touching each one would
    otherwise cost a query per job)."""
    if ids:
        db.session.scalars(select(Job).where(one_of(Job.id, ids))).all()


def _needs_link(job: Job, state: RunState) -> bool:
    new_id = bool(state.run_id) and state.run_id != job.run_id
    return new_id or (bool(state.run_url) and state.run_url != job.run_url)


def _omitted_too_long(job: Job, now: datetime, limits: _Limits) -> bool:
    """A run never linked that the backend has left out of its answers until 10 minutes past the
    session's lifetime: whatever run it had, the reconciler would have stopped it by now."""
    return _since_dispatch(job) + limits.lifetime(job) + OVERRUN_GRACE <= now


def _unchanged(job: Job, state: RunState | None, *, now: datetime, limits: _Limits) -> bool:
    """Whether :func:`_apply` would change nothing, judged on the job as loaded this cycle.

    Most in-flight runs report the same state cycle after cycle; skipping them saves a serialized
    transaction (and the expiry of every loaded row its commit causes) per job per cycle. A job that
    another process changed meanwhile is at most one cycle late: the next cycle looks again.
    """
    if JobStatus(job.status).terminal:
        return True
    overdue = _since_dispatch(job) + limits.window <= now
    if state is None:
        return _linked(job) or not _omitted_too_long(job, now, limits)
    if state.phase is RunPhase.NOT_FOUND:
        if not job.run_id and _linked(job):
            return not _overrun_due(job, now, limits.lifetime(job))
        return not overdue
    if state.phase is RunPhase.PENDING:
        return not _needs_link(job, state) and (_linked(job) or not overdue)
    if state.phase is RunPhase.RUNNING:
        return job.status == JobStatus.RUNNING.value and not _needs_link(job, state)
    return False


def _link(job: Job, state: RunState) -> bool:
    changed = False
    if state.run_id and job.run_id != state.run_id:
        job.run_id = state.run_id
        changed = True
    if state.run_url and job.run_url != state.run_url:
        job.run_url = state.run_url
        changed = True
    return changed


def _apply(
    job: Job, state: RunState | None, *, now: datetime, limits: _Limits, report: ReconcileReport
) -> None:
    """Bring one job (read inside the caller's serialized transaction) in line with ``state``.

    ``state`` is ``None`` when the backend left the run out of its answer: it could not look this
    cycle (a listing that failed), so the job is left as it is; only a run never linked is ended
    once it is far past its lifetime (:func:`_omitted_too_long`).
    """
    if JobStatus(job.status).terminal:
        return
    overdue = _since_dispatch(job) + limits.window <= now
    if state is None:
        if not _linked(job) and _omitted_too_long(job, now, limits):
            _run_not_found(job, report)
        return
    phase = state.phase
    if phase is RunPhase.NOT_FOUND:
        if not overdue:
            return
        if job.run_id:
            _run_gone(job, now=now, limits=limits, report=report)
        elif _linked(job):
            # its session reported, but the backend cannot name its run (GitHub's, found by its
            # name, listed past the pages read): not gone for that, and ended as the lifetime's
            # timeout once past it, as a run left out of the answers is
            if _overrun_due(job, now, limits.lifetime(job)):
                _end(job, Outcome(JobStatus.TIMED_OUT, timeout_reason=limits.lifetime_reason.value), report)
        else:
            _run_not_found(job, report)
        return
    if phase is RunPhase.PENDING:
        if _link(job, state):
            report.linked += 1
        elif not _linked(job) and overdue:
            _run_not_found(job, report)
        return
    if phase is RunPhase.RUNNING:
        fields: dict[str, Any] = {}
        if state.run_id:
            fields["run_id"] = state.run_id
        if state.run_url:
            fields["run_url"] = state.run_url
        if job.status != JobStatus.RUNNING.value:
            if transition(job, JobStatus.RUNNING, reason="run linked", now=now, **fields):
                report.linked += 1
        elif _link(job, state):
            report.linked += 1
        return
    _link(job, state)
    if phase is RunPhase.TIMED_OUT:
        reason = state.timeout_reason.value if state.timeout_reason else TimeoutReason.TIMED_OUT.value
        _end(
            job,
            Outcome(
                JobStatus.TIMED_OUT,
                timeout_reason=reason,
                log_label=state.log_label,
                log_excerpt=_masked(job, state.log_excerpt),
            ),
            report,
        )
        return
    if phase is RunPhase.FAILED:
        if state.detail:
            reason = _masked(job, state.detail) or state.detail
        elif state.exit_code is not None:
            reason = f"the run exited with code {state.exit_code}"
        else:
            reason = "the run failed"
        _end(
            job,
            Outcome(
                JobStatus.FAILED,
                reason=reason,
                log_label=state.log_label or LogLabel.SESSION_FAILED,
                log_excerpt=_masked(job, state.log_excerpt),
            ),
            report,
        )
        return
    if phase is RunPhase.SUCCEEDED:
        _after_success_without_result(job, state, now=now, report=report)


def _run_gone(job: Job, *, now: datetime, limits: _Limits, report: ReconcileReport) -> None:
    """End a job whose run was linked and is no longer found (after the ``run_not_found`` window).

    Not ``run_not_found``: the reference keeps that for a run that was never linked. The run
    existed and vanished without reporting a result: its session was destroyed or removed (an
    admin's ``DELETE /api/sessions/{id}``, ``docker rm``, a run deleted on GitHub), so the job
    ends ``failed`` and says so. Once the session's lifetime has passed, it ends as the backend's
    lifetime timeout instead (``machine_timeout``, ``container_timeout`` for local containers):
    the session exceeded its lifetime whatever removed it, and a backend that enforces lifetimes
    removes such sessions itself.
    """
    lifetime = limits.lifetime(job)
    if _session_start(job) + lifetime <= now:
        seconds = int(lifetime.total_seconds())
        note = f"run {job.run_id} is no longer found; its session's lifetime of {seconds} s has passed"
        outcome = Outcome(
            JobStatus.TIMED_OUT,
            timeout_reason=limits.lifetime_reason.value,
            log_label=LogLabel(limits.lifetime_reason.value),
            log_excerpt=note,
        )
    else:
        outcome = Outcome(
            JobStatus.FAILED,
            reason=f"the run {job.run_id} disappeared before it reported a result "
            "(its session was destroyed or removed)",
            log_label=LogLabel.SESSION_FAILED,
        )
    _end(job, outcome, report)


def _after_success_without_result(
    job: Job, state: RunState, *, now: datetime, report: ReconcileReport
) -> None:
    """The run is over but ``/runner/result`` has not ended the job: wait a grace period for it.

    The time the reconciler first saw the run over is kept in a ``settings`` row, so every poller
    counts the grace from the same moment.
    """
    key = _grace_key(job.id)
    row = db.session.get(Setting, key, populate_existing=True)
    if row is None:
        # the job held first (PostgreSQL; SQLite's writer lock holds it already): a result that
        # ended it since it was read found no row to take with it, and is seen here; one that
        # comes later waits for this row's commit, then takes it
        db.session.refresh(job, with_for_update={"key_share": True})
        if JobStatus(job.status).terminal:
            return
        if db.session.get(Setting, key, populate_existing=True) is not None:
            # another pass (an operator's `poll --once` beside a loop) held the job first and
            # began the grace: its row stands (added again, the insert failed this job's pass
            # with a traceback in the log)
            return
        db.session.add(Setting(key=key, value={"seen": now.isoformat()}))
        return
    try:
        seen = datetime.fromisoformat(str(row.value["seen"]))
    except (KeyError, TypeError, ValueError):
        seen = now
    if seen + RESULT_GRACE > now:
        return
    if Phase(job.phase) is Phase.IMPLEMENTATION:
        outcome = Outcome(
            JobStatus.FAILED,
            reason="the run finished without opening a pull request",
            log_label=LogLabel.PR_NOT_FOUND,
            log_excerpt=_masked(job, state.log_excerpt),
        )
    else:
        outcome = Outcome(
            JobStatus.FAILED,
            reason="the run finished without reporting a result",
            log_label=LogLabel.SESSION_FAILED,
            log_excerpt=_masked(job, state.log_excerpt),
        )
    _end(job, outcome, report)
