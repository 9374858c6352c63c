"""Creating a job and handing it to a runner backend.

:func:`create_job` adds the job row inside the caller's transaction (the dispatcher's claim, which
checks caps and blockers under a lock); :func:`launch` runs after that commit: it builds the
session's environment with fresh credentials and calls the backend. The claim may build them
itself with :func:`prepare` (one transaction fewer per dispatch). A crash between the claim and
the backend call leaves a job in ``unknown`` that the reconciler ends (``run_not_found``); it is
never launched twice. A dispatch the backend rate-limited leaves its job ``unknown`` too, with the
time from which the dispatcher tries it again (``launch_after``, taken by one poller only).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm.attributes import set_committed_value

from ..auth import tokens
from ..database import serialized
from ..errors import (
    DispatchDeferred,
    DispatchError,
    DispatchUnanswered,
    PluginContractError,
    ProviderError,
    ProviderNotConfigured,
    describe_plugin_error,
)
from ..extensions import db
from ..orm import Job, iso_z, utcnow
from ..orm import Mapping as MappingRow
from ..session import env as session_env
from ..types import DispatchRequest, DispatchResult, InFlightRun, JobStatus, LogLabel, Phase, TimeoutReason
from . import redaction, settings
from . import secrets as secrets_service
from .jobs import record_created, record_note, transition
from .outcomes import Outcome, end_job
from .poller import MAX_RETRY_AFTER, retry_after_wait
from .reconcile import (
    OVERRUN_GRACE,
    in_flight_run,
    job_lifetime_seconds,
    run_not_found_window,
    run_ref_problem,
    session_lifetime_seconds,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs a mapping's jobs under the current runner mode."""

    backend_id: str | None
    runner_mode: str
    shadow: bool


def choose_backend(mapping: MappingRow, runner_mode: str | None = None) -> BackendChoice:
    """``default`` uses the mapping's ``executionMode``; ``gha``/``fly``/``local`` force the
    backend registered for that mode; ``shadow`` records what would run and starts nothing."""
    facade = current_app.extensions["aiimpl"]
    mode = runner_mode or settings.effective_runner_mode()
    if mode in ("default", "shadow"):
        backend_id = mapping.execution_mode if mapping.execution_mode in facade.ids("runner") else None
        return BackendChoice(backend_id if mode == "default" else (backend_id or mapping.execution_mode),
                             mode, mode == "shadow")
    backend = facade.runner_for_mode(mode)
    return BackendChoice(backend.id if backend else None, mode, False)


def create_job(
    mapping: MappingRow,
    issue_key: str,
    *,
    phase: Phase,
    provider: str,
    choice: BackendChoice,
    pr_number: int | None = None,
    plan: str | None = None,
    forced: bool = False,
    base_branch: str | None = None,
) -> Job:
    """Add a job in ``unknown`` (flushed, not committed). The caller commits, then calls :func:`launch`.

    The job is created with the hash of a fresh nonce, which :func:`issue_credentials` hands to its
    session: one ``INSERT``, no ``UPDATE`` after it.
    """
    nonce, digest = tokens.new_nonce()
    job = Job(
        issue_key=issue_key,
        team_key=mapping.team_key,
        mapping_id=mapping.id,
        provider=provider,
        phase=phase.value,
        status=JobStatus.UNKNOWN.value,
        backend=choice.backend_id,
        runner_mode=choice.runner_mode,
        shadow=choice.shadow,
        owner=mapping.owner,
        repo=mapping.repo,
        base_branch=base_branch or mapping.default_branch,
        branch=f"{mapping.branch_prefix or ''}{issue_key}",
        pr_number=pr_number,
        plan=plan,
        forced=forced,
        nonce_hash=digest,
        # the lifetime its session is started with and judged by, whatever the setting says later
        lifetime_seconds=session_lifetime_seconds(),
        # set explicitly, so they are loaded on the new object: a transition reads the one it
        # fills, and a job its claim keeps loaded is then not read again by its launch
        dispatched_at=None,
        running_at=None,
    )
    job.unsent_nonce = nonce
    db.session.add(job)
    db.session.flush()
    record_created(job)
    return job


def mapping_env(mapping: MappingRow, *, keeps_secrets: bool) -> tuple[dict[str, str], set[str]]:
    """A session's environment as its mapping makes it, before the core's own variables: the
    mapping's ``extraEnv``, then (on a backend that keeps secrets) the team's and global secrets,
    then the model provider's variables; and which of them are secrets."""
    facade = current_app.extensions["aiimpl"]
    view = mapping.view()
    env: dict[str, str] = dict(view.extra_env)
    secret_names: set[str] = set()
    if keeps_secrets:
        team_secrets = secrets_service.values_for_team(mapping.team_key)
        env.update(team_secrets)
        secret_names.update(team_secrets)
    if mapping.provider in facade.ids("model"):
        model = facade.model(mapping.provider)
        env.update(model.session_env(view))
        secret_names.update(model.secret_env_names(view))
    return env, secret_names


def build_request(job: Job, mapping: MappingRow, nonce: str, run_tokens: dict[str, str]) -> DispatchRequest:
    """The session's environment: job identity, credentials, model provider, ``extraEnv``, secrets."""
    facade = current_app.extensions["aiimpl"]
    view = mapping.view()
    backend = facade.runner(job.backend) if job.backend in facade.ids("runner") else None
    lifetime = job_lifetime_seconds(job)
    env, secret_names = mapping_env(mapping, keeps_secrets=backend is not None and backend.supports_secrets)

    core = {
        session_env.URL.name: str(current_app.config["AIIMPL_PUBLIC_URL"]).rstrip("/"),
        session_env.JOB_ID.name: str(job.id),
        session_env.PHASE.name: job.phase,
        session_env.ISSUE_KEY.name: job.issue_key,
        session_env.REPOSITORY.name: f"{job.owner}/{job.repo}",
        session_env.BASE_BRANCH.name: job.base_branch or view.default_branch,
        session_env.BRANCH.name: job.branch or "",
        session_env.SESSION_MODE.name: view.session_mode,
        session_env.LIFETIME.name: str(lifetime),
        session_env.NONCE.name: nonce,
        session_env.RESULT_TOKEN.name: run_tokens[tokens.AUD_RESULT],
        session_env.PROGRESS_TOKEN.name: run_tokens[tokens.AUD_PROGRESS],
        session_env.CONTEXT_TOKEN.name: run_tokens[tokens.AUD_PLANNING_CONTEXT],
        # the session opens the pull request on the same GitHub the orchestrator talks to
        session_env.GITHUB_API_URL.name: str(current_app.config.get("AIIMPL_GITHUB_API_URL")
                                             or session_env.GITHUB_API_URL.default),
    }
    if job.pr_number:
        core[session_env.PR_NUMBER.name] = str(job.pr_number)
    env.update(core)  # the core's own variables cannot be overridden by extraEnv or secrets
    secret_names.update(v.name for v in session_env.ALL if v.secret)
    env[session_env.SECRET_NAMES.name] = ",".join(sorted(n for n in secret_names if n in env))
    return DispatchRequest(
        job_id=job.id,
        phase=Phase(job.phase),
        issue_key=job.issue_key,
        mapping=view,
        branch=job.branch or "",
        base_branch=job.base_branch or view.default_branch,
        run_name=job.run_name,
        env=env,
        secret_names=frozenset(n for n in secret_names if n in env),
        pr_number=job.pr_number,
        lifetime_seconds=lifetime,
    )


def issue_credentials(job: Job) -> tuple[str, dict[str, str]]:
    """The job's nonce and its three run tokens: the nonce it was created with when this process
    created it and it is still the job's, else a fresh one (stored hashed on the job)."""
    nonce = job.unsent_nonce
    job.unsent_nonce = None
    if nonce is None or job.nonce_hash != tokens.hash_nonce(nonce):
        nonce, job.nonce_hash = tokens.new_nonce()
    run_tokens = tokens.issue_run_tokens(
        str(current_app.config["AIIMPL_SECRET_KEY"]), job.id, job.phase,
        run_token_seconds(job_lifetime_seconds(job)),
    )
    return nonce, run_tokens


def run_token_seconds(lifetime: int | None = None) -> int:
    """How long a job's run tokens last: ``AIIMPL_RUN_TOKEN_SECONDS``, and never less than its
    session may still report in: it may wait to start for the run-not-found window, then run its
    lifetime (``lifetime``, the setting by default), and is judged overrun 10 minutes after that.
    (A shorter setting would have the orchestrator refuse a long session's progress and result as
    expired, and end its job failed.)"""
    reports_for = run_not_found_window() + timedelta(seconds=lifetime or session_lifetime_seconds())
    return max(int(current_app.config["AIIMPL_RUN_TOKEN_SECONDS"]),
               int((reports_for + OVERRUN_GRACE).total_seconds()))


@dataclass(frozen=True)
class Prepared:
    """A job's session request, built in the transaction that created the job."""

    backend_id: str
    request: DispatchRequest


def prepare(job: Job, mapping: MappingRow) -> Prepared | None:
    """Issue the job's credentials and build its session's request inside the caller's
    transaction, which must commit before :func:`launch` (the nonce hash is stored before the
    session can use it). ``None`` for a shadow job or one whose backend is not installed: those are
    left to :func:`launch`, which ends them."""
    facade = current_app.extensions["aiimpl"]
    if job.shadow or not job.backend or job.backend not in facade.ids("runner"):
        return None
    nonce, run_tokens = issue_credentials(job)
    return Prepared(job.backend, build_request(job, mapping, nonce, run_tokens))


def launch(job: Job, *, gap_fill: bool = False, prepared: Prepared | None = None) -> DispatchResult | None:
    """Start the job's session; commit. Shadow jobs and jobs with no backend start nothing.

    Each database step is its own serialized transaction (``BEGIN IMMEDIATE`` on SQLite): several
    pollers launch at once, and a SQLite transaction that read before another process wrote
    cannot write any more. The backend is called outside any transaction.

    :param prepared: what :func:`prepare` built in the committed transaction that created the job
        (the dispatcher's claim); without it, the first step reads the job and its mapping again and
        builds it.
    :raises DispatchError: after ending the job ``failed``, when the backend refused.
    :raises DispatchDeferred: when the backend rate-limited the dispatch, after leaving the job
        ``unknown`` for the dispatcher to try again (:func:`defer_launch`; a gap fill's ends
        ``failed``, as its caller is answered at once).
    :raises DispatchUnanswered: when the dispatch's answer was lost (the backend raised it), after
        moving the job to ``dispatched`` without a run (a gap fill's ends ``failed`` instead).
    """
    facade = current_app.extensions["aiimpl"]
    if prepared is None:
        unprepared = ""
        with serialized(keep=(job,)):
            db.session.refresh(job)
            if JobStatus(job.status).terminal:
                # ended before its launch (a rate-limited job cancelled, or ended run_not_found,
                # after the poller took its try): nothing is started for it
                return None
            mapping = db.session.get(MappingRow, job.mapping_id) if job.mapping_id else None
            if mapping is None:
                deleted = "the project mapping was deleted before dispatch"
                end_job(job, Outcome(JobStatus.FAILED, reason=deleted))
                return None
            if job.shadow:
                issue_credentials(job)
                transition(job, JobStatus.DISPATCHED, reason="shadow mode: no runner started")
                return None
            try:
                prepared = prepare(job, mapping)
            except SQLAlchemyError:
                raise
            except Exception as exc:  # noqa: BLE001 - a plugin's error (model, backend) ends the job
                unprepared = f"preparing the session failed: {_plugin_failure(exc, job, job.backend)}"
                failure: BaseException = exc
                end_job(job, Outcome(JobStatus.FAILED, reason=unprepared, log_label=LogLabel.SESSION_FAILED))
            else:
                if prepared is None:  # no backend of that id is installed
                    unprepared = (f"no runner backend {job.backend!r} is installed" if job.backend else
                                  f"runner mode {job.runner_mode!r} selects no installed runner backend")
                    failure = ProviderNotConfigured(unprepared)
                    end_job(job, Outcome(JobStatus.FAILED, reason=unprepared,
                                         log_label=LogLabel.SESSION_FAILED))
            # committed here: the nonce hash is stored before the session can use it
        if prepared is None:
            # (from its cause: the dispatcher backs an outage off longer than a plugin's bug)
            raise DispatchError(unprepared, status=None) from failure
    request = prepared.request
    name = prepared.backend_id
    backend: Any = None
    answered: Any = _NO_ANSWER
    try:
        backend = facade.runner(prepared.backend_id)
        name = getattr(backend, "display_name", None) or name
        answered = backend.dispatch_gap_fill(request) if gap_fill else backend.dispatch(request)
        result = _checked_result(answered)
    except Exception as exc:  # noqa: BLE001 - whatever a plugin raised ends the job, never leaves it waiting
        message = _plugin_failure(exc, job, prepared.backend_id)
        status = exc.status if isinstance(exc, ProviderError) else None
        # the remote's answer, as redacted as the message (the gap-fill trigger shows it)
        detail = redaction.redactor_for(job).data(exc.detail) if isinstance(exc, ProviderError) else None
        # kept so that the dispatcher's back-off honours the remote's Retry-After
        retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
        provider = exc.provider if isinstance(exc, DispatchError) and exc.provider else prepared.backend_id
        if isinstance(exc, DispatchUnanswered) and not gap_fill:
            # the run may have been made: the job waits for the backend to find it by its name
            # (or ends run_not_found), and the dispatcher backs off all the same
            with serialized(keep=(job,)):
                moved = transition(job, JobStatus.DISPATCHED,
                                   reason=f"dispatch to {name} without an answer: {message}; its run is "
                                          "looked for by its name")
            if not moved:
                # ended meanwhile (a cancel saw nothing launched to stop): the run it may have is
                # found by its name and stopped, as when the answer came; the reconciler never
                # looks for the run of an ended job
                _stop_if_ended(backend, job)
            raise DispatchUnanswered(
                message, provider=provider, status=status, detail=detail, retry_after=retry_after
            ) from exc
        until = None if gap_fill or answered is not _NO_ANSWER else _deferred_until(job, exc)
        if until is not None:
            with serialized(keep=(job,)):
                deferred = defer_launch(job, until, f"dispatch to {name} rate-limited: {message}")
            if deferred:
                raise DispatchDeferred(message, until=until, provider=provider, status=status,
                                       detail=detail, retry_after=retry_after) from exc
            # ended meanwhile (an operator's cancel): nothing was started, nothing to try again
        with serialized(keep=(job,)):
            db.session.refresh(job)
            end_job(job, Outcome(JobStatus.FAILED, reason=f"dispatch to {name} failed: {message}"))
        if answered is not _NO_ANSWER or isinstance(exc, DispatchUnanswered):
            # a run the refused answer names, or (a gap fill's dispatch without an answer) one
            # that may have been made all the same: its job has ended, so it is stopped
            _stop_refused_run(backend, job, request, None if answered is _NO_ANSWER else answered)
        raise DispatchError(
            message, provider=provider, status=status, detail=detail, retry_after=retry_after
        ) from exc
    # The job as the claim committed it (kept loaded) or as it is read now: the transition is a
    # compare-and-set, so a session that reported in the meantime is noticed, not overwritten.
    with serialized(keep=(job,)):
        moved = transition(job, JobStatus.DISPATCHED, run_id=result.run_id, run_url=result.run_url)
        if not moved:
            # a session that reported first keeps its run; so does a job that ended meanwhile
            # (cancelled, or run_not_found), whose run is then stopped below (none was linked to stop)
            _link_run(job, result)
    if not moved and not job.shadow:
        _stop_if_ended(backend, job)
    return result


#: the wait of a rate limit that names none (a bare ``429``)
DEFAULT_RATE_LIMIT_WAIT = timedelta(seconds=30)


def _deferred_until(job: Job, exc: BaseException) -> datetime | None:
    """When the job's dispatch may be tried again, if the backend rate-limited it; else ``None``.

    A rate limit is a refusal (not a lost answer: :class:`DispatchUnanswered`) with status 429 or
    a ``Retry-After`` (GitHub's rate limits answer 403 with one): the backend started nothing and
    said to come back. The try is deferred only while it still falls within the run-not-found
    window from the job's creation: a later one would come after the reconciler ended the job
    ``run_not_found`` (an unlinked job's limit), so such a wait ends the job ``failed`` at once,
    with the backend's answer as the reason.
    """
    if not isinstance(exc, ProviderError) or isinstance(exc, DispatchUnanswered):
        return None
    if exc.retry_after is None and exc.status != 429:
        return None
    now = utcnow()
    if exc.retry_after is None:
        wait = DEFAULT_RATE_LIMIT_WAIT
    else:
        try:
            wait = retry_after_wait(exc.retry_after, MAX_RETRY_AFTER)
        except (TypeError, ValueError, OverflowError):
            return None  # a plugin's wait that is no number of seconds: refused as before
    until = now + wait
    created = job.created_at or now
    return until if until < created + run_not_found_window() else None


def defer_launch(job: Job, until: datetime, reason: str) -> bool:
    """Leave the ``unknown`` job for the dispatcher to try again from ``until``; the caller commits.

    A compare-and-set on the status: a job an operator cancelled while its dispatch was refused is
    left ended. The refusal is kept in the job's history (a transition that keeps its status).
    """
    moved = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.UNKNOWN.value)
        .values(launch_after=until, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    ).rowcount
    if not moved:
        db.session.refresh(job)
        return False
    set_committed_value(job, "launch_after", until)
    record_note(job, f"{reason}; tried again from {iso_z(until)}")
    log.info("dispatch of %s (job %s) rate-limited: tried again from %s", job.issue_key, job.id, iso_z(until))
    return True


def _stop_if_ended(backend: Any, job: Job) -> None:
    """Stop the run of a job that ended (cancelled, or ``run_not_found``) while its dispatch was
    under way."""
    if _cancelled(job):
        _stop_run_of_ended_job(backend, job, "was cancelled while its run was started")
    elif _ended_run_not_found(job):
        _stop_run_of_ended_job(backend, job, "was ended run_not_found while its run was started")


#: what ``answered`` holds until the backend's dispatch returned
_NO_ANSWER = object()


def _checked_result(answer: Any) -> DispatchResult:
    """``dispatch``'s answer as the job stores it: a :class:`DispatchResult` whose run id and URL are
    strings or ``None`` (a numeric run id is taken as its digits, as ``poll_runs``'s is), the id no
    longer than a job keeps. Anything else is the backend's broken contract, refused before the job
    is written: the database would refuse it at that write, after the session had started, and
    leave the job in ``unknown`` with no run linked."""
    if not isinstance(answer, DispatchResult):
        raise PluginContractError(f"the backend answered {type(answer).__name__}, not a DispatchResult")
    if isinstance(answer.run_id, int) and not isinstance(answer.run_id, bool):
        answer = replace(answer, run_id=str(answer.run_id))
    for field in ("run_id", "run_url"):
        problem = run_ref_problem(field, getattr(answer, field))
        if problem is not None:
            raise PluginContractError(f"the backend answered a {field} that {problem}")
    return answer


def _stop_refused_run(backend: Any, job: Job, request: DispatchRequest, answered: Any) -> None:
    """Cancel the run a dispatch whose answer was refused may have started (best effort: a run that
    cannot be stopped meets its lifetime; its session's reports are refused, its job having ended).

    The backend is handed the run id it answered when that is a string (it need not fit a job's
    row to name the run to its backend), else none: it then finds the run by its name, as it does
    for a run not linked yet."""
    run_id = getattr(answered, "run_id", None)
    if isinstance(run_id, int) and not isinstance(run_id, bool):
        run_id = str(run_id)
    run = InFlightRun.of_dispatch(request, run_id if isinstance(run_id, str) and run_id else None,
                                  job.dispatched_at or job.created_at)
    try:
        backend.cancel(run)
        log.info("job %s: the run its refused dispatch answer may have started is stopped", job.id)
    except Exception:  # noqa: BLE001 - the job has ended; the run meets its lifetime
        log.warning("cancelling the run of job %s, whose dispatch answer was refused, failed", job.id,
                    exc_info=True)


def _cancelled(job: Job) -> bool:
    from .cancel import CANCELLED

    return JobStatus(job.status).terminal and job.error == CANCELLED


def _ended_run_not_found(job: Job) -> bool:
    """Whether the reconciler ended the job ``run_not_found`` while its dispatch was under way: a
    dispatch that took longer than ``AIIMPL_RUN_NOT_FOUND_SECONDS`` (another host's reconciler, or
    a backend that pulls an image first). Its run started for a job that is over: no session report
    would be taken, so it is stopped rather than left to its lifetime."""
    return job.status == JobStatus.TIMED_OUT.value and job.timeout_reason == TimeoutReason.RUN_NOT_FOUND.value


def _stop_run_of_ended_job(backend: Any, job: Job, why: str) -> None:
    """Stop the run a dispatch started for a job that ended while the dispatch was under way (an
    operator's cancel, or ``run_not_found``; ``why`` says which in the log), best effort, as a
    cancel: a run that cannot be stopped meets its lifetime."""
    mapping = db.session.get(MappingRow, job.mapping_id) if job.mapping_id is not None else None
    run = in_flight_run(job, mapping)
    if run is None:
        return
    try:
        backend.cancel(run)
        log.info("job %s %s: the run is stopped", job.id, why)
    except Exception:  # noqa: BLE001 - the job has ended; the run meets its lifetime
        log.warning("stopping the run of job %s, which %s, failed", job.id, why, exc_info=True)


def _plugin_failure(exc: Exception, job: Job, backend_id: str | None) -> str:
    """What a job's ending says of a plugin's error: our errors' own message, redacted of the
    job's secrets in every encoding the redactor knows (a runtime's refusal may quote the session's
    environment); of anything else the class only (a plugin's message may quote a setting), the
    traceback going to the log."""
    return describe_plugin_error(
        exc,
        mask=lambda message: redaction.redactor_for(job).text(message),
        foreign="unexpected error ({cls}); the orchestrator's log has the details",
        log_foreign=lambda e: log.error("launching job %s on %s failed", job.id, backend_id, exc_info=e),
    )


def _link_run(job: Job, result: DispatchResult) -> None:
    """Record the run a dispatch started on a job its session moved to ``running`` first (a
    runner that starts fast reports before the backend's answer is recorded)."""
    fields = {}
    if result.run_id and not job.run_id:
        fields["run_id"] = func.coalesce(Job.run_id, result.run_id)
    if result.run_url and not job.run_url:
        fields["run_url"] = func.coalesce(Job.run_url, result.run_url)
    if fields:
        # a run the reconciler linked meanwhile is kept
        db.session.execute(
            update(Job).where(Job.id == job.id).values(**fields),
            execution_options={"synchronize_session": False},
        )
        db.session.expire(job, list(fields))
